"""The generator's PhaseConvTranspose: PyTorch ConvTranspose2d by hand, both forwards,
gradients equal to Flax's nn.ConvTranspose, and the generator uses it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dpgen_jax.models import dcgan, init, phase_conv


def _numpy_conv_transpose(x, w_torch, stride, padding):
  """PyTorch ConvTranspose2d by its definition: input pixel (i, j) adds x_ij W[a, b] at
  (s i - p + a, s j - p + b); outputs outside [0, (n-1)s - 2p + k) are dropped."""
  b, n, _, _ = x.shape
  k, _, _, o = w_torch.shape
  size = (n - 1) * stride - 2 * padding + k
  out = np.zeros((b, size, size, o))
  for i in range(n):
    for j in range(n):
      for a in range(k):
        for c in range(k):
          u, v = stride * i - padding + a, stride * j - padding + c
          if 0 <= u < size and 0 <= v < size:
            out[:, u, v, :] += x[:, i, j, :] @ w_torch[a, c]
  return out


def test_phase_taps_by_hand():
  # k4 s2 p1: output 2m takes taps 1 (input m) and 3 (input m-1); output 2m+1 takes
  # taps 0 (input m+1) and 2 (input m).
  assert phase_conv._phase_taps(4, 2, 1) == [[(1, 0), (3, -1)], [(0, 1), (2, 0)]]
  # k3 s2 p1 (4 -> 7): even outputs tap 1 only; odd outputs taps 0 (m+1) and 2 (m).
  assert phase_conv._phase_taps(3, 2, 1) == [[(1, 0)], [(0, 1), (2, 0)]]
  # stride 1: one phase with every tap, offsets -a + p.
  assert phase_conv._phase_taps(3, 1, 1) == [[(0, 1), (1, 0), (2, -1)]]


# (input size, k, s, p): the 28x28 and 32x32 tables' layers, plus k % s != 0, s = 3.
CASES = [(1, 4, 1, 0), (1, 4, 2, 1), (4, 3, 2, 1), (7, 4, 2, 1), (14, 4, 2, 1),
         (16, 4, 2, 1), (5, 3, 3, 2), (3, 2, 3, 0)]


@pytest.mark.parametrize("features", [3, 9])  # below 8: matmul forward; else convs
@pytest.mark.parametrize("size,k,s,p", CASES)
def test_matches_pytorch_definition_and_flax_gradients(size, k, s, p, features):
  rng = np.random.default_rng(size * 10 + k + s)
  x = rng.standard_normal((2, size, size, 4)).astype(np.float32)
  ours = phase_conv.deconv(features, k, s, p, name="d")
  params = ours.init(jax.random.key(0), x)
  ref = init.torch_conv_transpose(features, k, s, p, name="d")
  # Same parameter shapes and initialisation as the nn.ConvTranspose it replaces.
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref.init(jax.random.key(0), x))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  kernel = np.asarray(params["params"]["kernel"])
  bias = np.asarray(params["params"]["bias"])
  want = _numpy_conv_transpose(x, kernel[::-1, ::-1], s, p) + bias
  y = ours.apply(params, jnp.asarray(x))
  assert y.shape == want.shape
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)

  probe = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  grad = lambda m: jax.grad(lambda pr, x: jnp.sum(m.apply(pr, x) * probe), argnums=(0, 1))
  for a, b in zip(jax.tree.leaves(jax.jit(grad(ours))(params, x)),
                  jax.tree.leaves(grad(ref)(params, x))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                               atol=1e-4 * float(jnp.max(jnp.abs(b))))


def test_generator_is_built_from_it():
  g, _ = dcgan.make_dcgan(28, 1, 10, g_width=4, d_width=4, latent_dim=6)
  z, labels = jnp.ones((2, 6)), jnp.array([0, 3])
  calls = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.ConvTranspose):
      calls.append(type(context.module))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    params = g.init(jax.random.key(0), z, labels)["params"]
  assert calls == [phase_conv.PhaseConvTranspose] * 5
  assert g.apply({"params": params}, z, labels).shape == (2, 28, 28, 1)


def test_rejects_string_padding():
  m = phase_conv.PhaseConvTranspose(features=2, kernel_size=(3, 3), strides=(2, 2),
                                    padding="SAME")
  with pytest.raises(ValueError, match="explicit padding"):
    m.init(jax.random.key(0), jnp.zeros((1, 3, 3, 1)))
