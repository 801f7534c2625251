"""Poisson sampling into fixed-shape padded batches."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from dpgen_jax.data import sampling


def _gen(seed):
  """A step -> generator factory (the loop derives it from the run's secret root)."""
  return lambda t: np.random.default_rng([seed, t])


def test_inclusion_rate_and_sizes_are_poisson():
  n, q, steps = 2_000, 0.01, 3_000
  sampler = sampling.PoissonSampler(n, q, _gen(0))
  counts = np.zeros(n)
  sizes = []
  for t in range(steps):
    batch = sampler.sample(t)
    members = batch.indices[batch.mask]
    assert len(np.unique(members)) == len(members) == batch.size  # no duplicates
    counts[members] += 1
    sizes.append(batch.size)
  rate = counts.sum() / (n * steps)
  assert abs(rate - q) < 4 * np.sqrt(q * (1 - q) / (n * steps))
  # Per-example inclusion counts are Binomial(steps, q): check their spread.
  assert abs(counts.var() - steps * q * (1 - q)) < 0.15 * steps * q
  assert abs(np.mean(sizes) - n * q) < 4 * np.sqrt(n * q / steps)


def test_padded_rows_are_masked_and_point_at_a_valid_index():
  sampler = sampling.PoissonSampler(1_000, 0.05, _gen(1))
  batch = sampler.sample(3)
  assert batch.indices.shape == batch.mask.shape == (sampler.padded_size,)
  assert batch.mask.sum() == batch.size
  assert not batch.mask[batch.size:].any()
  assert (batch.indices[~batch.mask] == 0).all()


def test_batches_depend_only_on_the_generator_of_the_step():
  a, b = sampling.PoissonSampler(500, 0.1, _gen(4)), sampling.PoissonSampler(500, 0.1, _gen(4))
  for t in (0, 17, 17, 3):
    np.testing.assert_array_equal(a.sample(t).indices, b.sample(t).indices)
  assert not np.array_equal(a.sample(0).indices, a.sample(1).indices)


def test_padded_size_makes_overflow_rare_and_overflow_grows_without_truncation():
  n, q = 60_000, 1 / 469
  size = sampling.padded_batch_size(n, q, overflow_probability=1e-6, multiple=8)
  assert size % 8 == 0
  assert stats.binom.sf(size, n, q) <= 1e-6
  assert stats.binom.sf(size - 8, n, q) > 1e-6 or size == 8
  tiny = sampling.PoissonSampler(1000, 0.5, _gen(0), padded_size=400)
  batch = tiny.sample(0)  # ~500 members > 400
  assert batch.overflowed and batch.indices.shape[0] == 800 and batch.mask.sum() == batch.size


def test_jitted_step_does_not_retrace_across_steps():
  sampler = sampling.PoissonSampler(5_000, 0.01, _gen(0))
  data = jnp.arange(5_000, dtype=jnp.float32)
  traces = []

  @jax.jit
  def masked_sum(idx, mask):
    traces.append(1)
    return jnp.sum(jnp.where(mask, data[idx], 0.0))

  for t in range(20):
    b = sampler.sample(t)
    got = float(masked_sum(b.indices, b.mask))
    assert got == float(b.indices[b.mask].sum())
  assert len(traces) == 1
