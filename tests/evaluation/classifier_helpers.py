"""Data and helpers shared by the classifier tests of evaluation/.

Data: scikit-learn's bundled 8x8 digits (used at 8x8 where the model allows it, which
keeps the CPU cost low; upsampled x3 and padded to 28x28 for the LeNet).
"""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits


def digits_split():
  """(train_x, train_y, test_x, test_y): 1400 / 397 shuffled 8x8x1 digits in [0, 1]."""
  d = load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(x))
  x, y = x[perm], y[perm]
  return x[:1400], y[:1400], x[1400:], y[1400:]


def to_28(x):
  """8x8 -> 24x24 (nearest) -> 28x28 (zero border), like an MNIST digit."""
  big = np.kron(x[..., 0], np.ones((3, 3), np.float32))
  return np.pad(big, ((0, 0), (2, 2), (2, 2)))[..., None]


def init_variables(model, shape, seed=0):
  # jit: an eager init compiles every small op separately (seconds on CPU).
  return jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros(shape))
