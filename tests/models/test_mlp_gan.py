"""DP-CGAN's conditional MLPs (dpcgan.md §1): parameter counts, shapes, init, tabular head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.data import tabular
from dpgen_jax.models import mlp_gan


def _init(output_shape, num_classes, head=None, batch=4):
  g, d = mlp_gan.make_mlp_gan(output_shape, num_classes, head=head)
  z = jnp.zeros((batch, 100))
  y = jnp.arange(batch) % num_classes
  key = jax.random.key(0)
  g_params = g.init({"params": key, "gumbel": key}, z, y)["params"]
  d_params = d.init(key, jnp.zeros((batch,) + output_shape), y)["params"]
  return g, d, g_params, d_params


@pytest.mark.parametrize("shape,classes,g_count,d_count", [
    ((28, 28, 1), 10, 115_344, 101_889),  # MNIST (upstream's Keras summary)
    ((21,), 3, 16_021, 3_329),  # Thyroid
])
def test_parameter_counts_and_shapes(shape, classes, g_count, d_count):
  g, d, g_params, d_params = _init(shape, classes)
  assert mlp_gan.count_params(g_params) == g_count
  assert mlp_gan.count_params(d_params) == d_count
  z = jax.random.normal(jax.random.key(1), (5, 100))
  y = jnp.arange(5) % classes
  x = g.apply({"params": g_params}, z, y)
  assert x.shape == (5,) + shape
  assert float(jnp.max(jnp.abs(x))) < 1.0  # tanh
  logits = d.apply({"params": d_params}, x, y)
  assert logits.shape == (5,)


def test_keras_default_initialisation():
  _, _, g_params, d_params = _init((28, 28, 1), 10)
  for params, fan_in, fan_out in ((g_params, 110, 128), (d_params, 794, 128)):
    kernel = np.asarray(params["hidden"]["kernel"])
    assert kernel.shape == (fan_in, fan_out)
    limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.9 * limit
    assert np.all(np.asarray(params["hidden"]["bias"]) == 0)


def test_labels_condition_both_networks():
  g, d, g_params, d_params = _init((21,), 3)
  z = jax.random.normal(jax.random.key(2), (1, 100))
  outs = [g.apply({"params": g_params}, z, jnp.array([k])) for k in range(3)]
  assert not np.allclose(outs[0], outs[1])
  x = outs[0]
  logits = [float(d.apply({"params": d_params}, x, jnp.array([k]))[0]) for k in range(3)]
  assert len(set(logits)) == 3


@pytest.mark.parametrize("mode", mlp_gan.BINARY_MODES)
def test_tabular_head_binary_columns_are_hard_when_released(mode):
  head = mlp_gan.TabularHead(tabular.THYROID.kinds, binary_mode=mode)
  g, _, g_params, _ = _init((21,), 3, head=head)
  z = jax.random.normal(jax.random.key(3), (64, 100))
  y = jnp.arange(64) % 3
  x = np.asarray(g.apply({"params": g_params}, z, y, train=False,
                         rngs={"gumbel": jax.random.key(4)}))
  binary = np.array([k == tabular.BINARY for k in tabular.THYROID.kinds])
  assert set(np.unique(x[:, binary])) <= {-1.0, 1.0}
  assert np.all(np.abs(x[:, ~binary]) < 1.0)
  # Training outputs: hard for straight-through / Gumbel, soft for 'sigmoid'.
  xt = np.asarray(g.apply({"params": g_params}, z, y, train=True,
                          rngs={"gumbel": jax.random.key(4)}))
  hard = set(np.unique(xt[:, binary])) <= {-1.0, 1.0}
  assert hard == (mode != "sigmoid")


@pytest.mark.parametrize("mode", mlp_gan.BINARY_MODES)
def test_tabular_head_passes_gradients_through_binary_columns(mode):
  head = mlp_gan.TabularHead((tabular.BINARY,) * 3, binary_mode=mode)
  logits = jnp.array([[0.3, -1.2, 2.0]])
  grad = jax.grad(lambda l: jnp.sum(head(l, train=True, rng=jax.random.key(5))))(logits)
  assert np.all(np.asarray(grad) > 0)  # straight-through / relaxed: d(output)/d(logit) > 0


def test_gumbel_head_samples_bernoulli_of_sigmoid():
  head = mlp_gan.TabularHead((tabular.BINARY,), binary_mode="gumbel", temperature=0.3)
  logits = jnp.full((20_000, 1), 0.8)
  bits = (np.asarray(head(logits, train=False, rng=jax.random.key(6))) + 1) / 2
  p = 1 / (1 + np.exp(-0.8))
  assert abs(bits.mean() - p) < 4 * np.sqrt(p * (1 - p) / bits.size)


def test_tabular_head_rejects_bad_settings():
  with pytest.raises(ValueError, match="binary_mode"):
    mlp_gan.TabularHead((tabular.BINARY,), binary_mode="round")
  with pytest.raises(ValueError, match="temperature"):
    mlp_gan.TabularHead((tabular.BINARY,), binary_mode="gumbel", temperature=0.0)
