"""GS-WGAN networks: parameter counts, spectral norm against numpy, layout details."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.models import gswgan_nets as nets
from dpgen_jax.models import spectral_norm as sn

KEY = jax.random.key(0, impl="rbg")  # compiles faster than threefry on CPU
Z = jnp.zeros((2, 10))
Y = jnp.array([3, 7], jnp.int32)
X = jnp.zeros((2, 28, 28, 1))


def _abstract_counts(module, *args):
  variables = jax.eval_shape(module.init, KEY, *args)  # shapes only: no compilation
  return sn.param_count(variables), sn.spectral_state_size(variables)


@pytest.mark.parametrize("module, args, params, state", [
    (nets.ResNetGenerator(), (Z, Y), 3_826_177, 23_317),
    (nets.DCGANGenerator(), (Z, Y), 1_114_305, 0),
    (nets.ProjectionDiscriminator(), (X, Y), 1_071_105, 13_476),
])
def test_parameter_and_spectral_state_counts_match_the_spec(module, args, params, state):
  assert _abstract_counts(module, *args) == (params, state)


def test_gblock_has_the_spec_parameter_count():
  v = jax.eval_shape(nets.GBlock(256, 256).init, KEY, jnp.zeros((1, 4, 4, 256)))
  assert sn.param_count(v) == 1_245_952


def _numpy_power_iteration(w, u):
  v = w.T @ u
  v = v / (np.linalg.norm(v) + 1e-10)
  u = w @ v
  u = u / (np.linalg.norm(u) + 1e-10)
  return u @ w @ v, u, v


def test_sn_dense_matches_a_numpy_power_iteration_and_threads_its_state():
  layer = sn.SNDense(5, 3)
  x = jax.random.normal(jax.random.key(1), (4, 5))
  variables = jax.jit(layer.init)(KEY, x)
  w = np.asarray(variables["params"]["kernel"], np.float64).T  # PyTorch (out, in)
  u0 = np.asarray(variables[sn.COLLECTION]["u"], np.float64)
  assert np.linalg.norm(u0) == pytest.approx(1.0, abs=1e-6)
  y, updated = layer.apply(variables, x, mutable=[sn.COLLECTION])
  sigma, u1, v1 = _numpy_power_iteration(w, u0)
  expected = np.asarray(x, np.float64) @ (w / sigma).T + np.asarray(variables["params"]["bias"])
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(updated[sn.COLLECTION]["u"]), u1, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(updated[sn.COLLECTION]["v"]), v1, rtol=1e-5)
  # Immutable: the same output, nothing stored.
  y2 = layer.apply(variables, x)
  np.testing.assert_allclose(np.asarray(y2), np.asarray(y), rtol=1e-6)
  # Repeated calls converge to the largest singular value.
  state = variables[sn.COLLECTION]
  step = jax.jit(lambda st: layer.apply({"params": variables["params"], sn.COLLECTION: st}, x,
                                        mutable=[sn.COLLECTION])[1][sn.COLLECTION])
  for _ in range(60):
    state = step(state)
  u, v = np.asarray(state["u"], np.float64), np.asarray(state["v"], np.float64)
  assert u @ w @ v == pytest.approx(np.linalg.svd(w, compute_uv=False)[0], rel=1e-4)


def test_sn_conv_uses_pytorchs_matrix_view_and_explicit_padding():
  layer = sn.SNConv(2, 3, 5, stride=2, padding=2)
  x = jax.random.normal(jax.random.key(2), (1, 28, 28, 2))
  variables = jax.jit(layer.init)(KEY, x)
  kernel = np.asarray(variables["params"]["kernel"], np.float64)  # (k, k, in, out)
  w = kernel.transpose(3, 2, 0, 1).reshape(3, -1)  # weight.view(out, -1)
  u0 = np.asarray(variables[sn.COLLECTION]["u"], np.float64)
  assert variables[sn.COLLECTION]["v"].shape == (2 * 5 * 5,)
  sigma, _, v1 = _numpy_power_iteration(w, u0)
  y, updated = layer.apply(variables, x, mutable=[sn.COLLECTION])
  np.testing.assert_allclose(np.asarray(updated[sn.COLLECTION]["v"]), v1, rtol=1e-5)
  assert y.shape == (1, 14, 14, 3)
  ref = jax.lax.conv_general_dilated(x, jnp.asarray(kernel / sigma, jnp.float32), (2, 2),
                                     ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref + variables["params"]["bias"]),
                             rtol=1e-4, atol=1e-5)


def test_resnet_generator_crops_the_last_two_rows_and_columns():
  g = nets.ResNetGenerator(model_dim=2)
  z = jax.random.bernoulli(jax.random.key(3), 0.5, (2, 10)).astype(jnp.float32)
  variables = jax.jit(g.init)(KEY, z, Y)
  out, inter = jax.jit(lambda v: g.apply(v, z, Y, capture_intermediates=True))(variables)
  conv = inter["intermediates"]["output"]["__call__"][0]
  assert conv.shape == (2, 30, 30, 1) and out.shape == (2, 28, 28, 1)
  np.testing.assert_allclose(np.asarray(out), np.asarray(jax.nn.sigmoid(conv[:, :28, :28])),
                             rtol=1e-6)


def test_discriminator_scores_are_per_example_so_summed_input_grads_are_per_example():
  d = nets.ProjectionDiscriminator(model_dim=2)
  x = jax.random.uniform(jax.random.key(4), (3, 28, 28, 1))
  y = jnp.array([0, 4, 9], jnp.int32)
  variables = jax.jit(d.init)(KEY, x, y)
  batch_grad = jax.jit(jax.grad(lambda xx: jnp.sum(d.apply(variables, xx, y))))(x)
  one = jax.jit(jax.vmap(jax.grad(lambda xi, yi: d.apply(variables, xi[None], yi[None])[0])))(
      x, y)
  np.testing.assert_allclose(np.asarray(batch_grad), np.asarray(one), rtol=1e-5, atol=1e-7)


def test_pixel_norm_normalises_channels():
  x = jax.random.normal(KEY, (2, 3, 3, 8)) * 5.0
  np.testing.assert_allclose(np.asarray(jnp.mean(nets.pixel_norm(x) ** 2, axis=-1)), 1.0,
                             rtol=1e-5)
