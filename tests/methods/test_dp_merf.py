"""methods/dp_merf.py: random Fourier features of a Gaussian kernel."""

import jax.numpy as jnp
import numpy as np

from dpgen_jax.methods import dp_merf


def test_random_fourier_features_approximate_the_gaussian_kernel():
  features = dp_merf.RandomFourierFeatures(784, 20_000, 105.0, seed=0)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 784)), jnp.float32)
  phi = np.asarray(features(x))
  gram = phi @ phi.T
  sq = np.sum((np.asarray(x)[:, None] - np.asarray(x)[None]) ** 2, -1)
  np.testing.assert_allclose(gram, np.exp(-sq / (2 * 105.0)), atol=0.03)
  np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-5)
