"""Noise scale and where noise keys come from."""

import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax import rng
from dpgen_jax.privacy import noise


def test_empirical_std_matches_sigma_times_c():
  sigma, c = 1.3, 0.7
  tree = {"a": jnp.zeros((200, 100)), "b": jnp.zeros((50_000,))}
  draw = noise.gaussian_noise_like(tree, jax.random.key(3), sigma * c)
  values = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(draw)])
  n = values.size
  # The sample std of n normals has sd ~ std/sqrt(2n); allow 6 of those.
  assert abs(values.std() - sigma * c) < 6 * sigma * c / np.sqrt(2 * n)
  assert abs(values.mean()) < 6 * sigma * c / np.sqrt(n)
  # Leaves get independent noise.
  assert abs(np.corrcoef(np.asarray(draw["a"]).ravel()[:20_000],
                         np.asarray(draw["b"])[:20_000])[0, 1]) < 0.05


def test_privatize_sum_adds_one_draw_and_divides_by_fixed_divisor():
  grad_sum = {"w": jnp.full((100_000,), 5.0)}
  out = noise.privatize_sum(grad_sum, jax.random.key(0), noise_multiplier=2.0,
                            sensitivity=0.5, divisor=4.0)
  values = np.asarray(out["w"])
  assert abs(values.mean() - 5.0 / 4.0) < 0.02
  assert abs(values.std() - 2.0 * 0.5 / 4.0) < 0.01


def test_default_noise_keys_come_from_os_entropy_and_differ_between_runs():
  a = noise.noise_base_key(seed=0)
  b = noise.noise_base_key(seed=0)
  assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
  x = jax.random.normal(noise.step_noise_key(a, 7), (8,))
  y = jax.random.normal(noise.step_noise_key(b, 7), (8,))
  assert not np.allclose(np.asarray(x), np.asarray(y))


def test_reproducible_noise_keys_repeat_and_differ_from_the_model_seed_stream():
  a = noise.noise_base_key(seed=5, reproducible=True)
  b = noise.noise_base_key(seed=5, reproducible=True)
  np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
  assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(rng.make_key(5)))
  steps = [np.asarray(jax.random.normal(noise.step_noise_key(a, s), (4,))) for s in (0, 1)]
  assert not np.allclose(steps[0], steps[1])
