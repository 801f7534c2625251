"""Gaussian noise for DP-SGD-style mechanisms, and where its randomness comes from.

Keys: by default the noise stream's root key is filled from OS entropy (os.urandom),
drawn once per process start on process 0 and broadcast to every host, then folded
with the step number; it is independent of the reproducible model/data seed. With
`reproducible=True` (config.privacy.reproducible_noise) the stream comes from the
seed instead, for tests and debugging. Sharp edge: JAX's generators (rbg, threefry)
are not cryptographically secure and floating-point Gaussian sampling has known side
channels; like upstream (Opacus secure_mode=False) this is research-grade DP.
"""

from typing import Any

import jax

from dpgen_jax import rng

PyTree = Any
_REPRODUCIBLE_SALT = 0x4E015E


def noise_base_key(seed: int, reproducible: bool = False,
                   impl: str = rng.DEFAULT_IMPL) -> jax.Array:
  """The root key of a run's noise stream (identical on all hosts)."""
  if reproducible:
    return jax.random.fold_in(rng.make_key(seed, impl), _REPRODUCIBLE_SALT)
  return rng.entropy_key(impl)


def step_noise_key(base: jax.Array, step: int) -> jax.Array:
  return jax.random.fold_in(base, step)


def gaussian_noise_like(tree: PyTree, key: jax.Array, stddev: float | jax.Array) -> PyTree:
  """Independent N(0, stddev^2) for every coordinate of every leaf of `tree`."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  noise = [stddev * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, noise)


def privatize_sum(grad_sum: PyTree, key: jax.Array, *, noise_multiplier: float,
                  sensitivity: float, divisor: float) -> PyTree:
  """(S + N(0, (noise_multiplier * sensitivity)^2 I)) / divisor, one noise draw.

  `divisor` must not depend on the data (use the expected batch size, never the
  realised one), else the normalisation itself would leak the batch size.
  """
  noise = gaussian_noise_like(grad_sum, key, noise_multiplier * sensitivity)
  return jax.tree.map(lambda s, n: (s + n) / divisor, grad_sum, noise)
