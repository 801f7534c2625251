"""The generator's ScatterConvTranspose equals Flax's nn.ConvTranspose (values, gradients).

The reference is `init.torch_conv_transpose` (an `nn.ConvTranspose`), itself checked
against PyTorch's ConvTranspose2d definition in test_dcgan.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.models import dcgan, init

# (input size, k, s, p): the layers of the 28x28 and 32x32 tables, plus k % s != 0.
CASES = [(1, 4, 1, 0), (1, 4, 2, 1), (4, 3, 2, 1), (7, 4, 2, 1), (16, 4, 2, 1), (5, 3, 3, 2)]


@pytest.mark.parametrize("size,k,s,p", CASES)
def test_matches_flax_conv_transpose_values_and_gradients(size, k, s, p):
  rng = np.random.default_rng(size * 10 + k)
  x = jnp.asarray(rng.standard_normal((3, size, size, 4)), jnp.float32)
  ref = init.torch_conv_transpose(5, k, s, p, name="d")
  ours = dcgan._deconv(5, k, s, p, name="d")
  params = ref.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == \
      jax.tree.map(jnp.shape, params)
  # Same initialisation (same parameter names, same initialisers).
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ours.init(jax.random.key(0), x))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  y_ref, y = ref.apply(params, x), ours.apply(params, x)
  size_out = init.conv_transpose_output_size(size, k, s, p)
  assert y.shape == y_ref.shape == (3, size_out, size_out, 5)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)

  probe = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  grad = lambda m: jax.grad(lambda pr, x: jnp.sum(m.apply(pr, x) * probe), argnums=(0, 1))
  for a, b in zip(jax.tree.leaves(grad(ours)(params, x)), jax.tree.leaves(grad(ref)(params, x))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                               atol=1e-4 * float(jnp.max(jnp.abs(b))))


def test_generator_uses_it_and_keeps_upstream_parameter_names():
  g, _ = dcgan.make_dcgan(28, 1, 10, g_width=4, d_width=4, latent_dim=6)
  z, labels = jnp.ones((2, 6)), jnp.array([0, 3])
  params = g.init(jax.random.key(0), z, labels)["params"]
  assert set(params) == {"deconv1_1", "deconv1_2", "deconv2", "deconv3", "deconv4"}
  assert params["deconv2"]["kernel"].shape == (3, 3, 16, 8)
  _, inter = g.apply({"params": params}, z, labels, capture_intermediates=True,
                     mutable=["intermediates"])
  assert inter["intermediates"]["deconv4"]["__call__"][0].shape == (2, 28, 28, 1)


def test_rejects_string_padding():
  m = dcgan.ScatterConvTranspose(features=2, kernel_size=(3, 3), strides=(2, 2), padding="SAME")
  with pytest.raises(ValueError, match="explicit padding"):
    m.init(jax.random.key(0), jnp.zeros((1, 3, 3, 1)))
