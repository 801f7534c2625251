"""Poisson sampling materialised as fixed-shape padded batches with a mask.

The privacy analysis (PoissonSampledDpEvent) assumes every example joins a step
independently with probability q. Such batches have a random size, which jit would
recompile for; so each batch is padded to a static size M with a boolean mask
(`True` = real example). Padded rows point at example 0 and must contribute exactly
zero (the clipping code multiplies by the mask).

Which records join a step must stay secret (amplification by subsampling assumes it):
the sampler draws from a generator the caller derives from the run's secret root
(`privacy.randomness.SecretRoot.numpy_generator('poisson', step)`), never from a
public seed. Nothing is ever truncated or resampled: both would change the sampling
scheme the accountant assumes. M is chosen so that a realised size above it is rare; when it
happens the batch grows to the next multiple of M (one extra compilation for that
shape), and the run records it.
"""

import dataclasses
from typing import Callable

import numpy as np
from scipy import stats


def padded_batch_size(num_examples: int, sampling_rate: float, *,
                      overflow_probability: float = 1e-6, multiple: int = 1) -> int:
  """Smallest M, a multiple of `multiple`, with P(Binomial(N, q) > M) <= overflow_probability."""
  if not 0.0 < sampling_rate <= 1.0:
    raise ValueError(f"sampling rate must be in (0, 1], got {sampling_rate}")
  m = int(stats.binom.isf(overflow_probability, num_examples, sampling_rate)) + 1
  m = max(1, min(m, num_examples))
  return int(-(-m // multiple) * multiple)


@dataclasses.dataclass(frozen=True)
class PaddedIndices:
  """Indices of one Poisson batch, padded. `size` is the realised batch size."""
  indices: np.ndarray  # int32 (M,), padding rows hold 0
  mask: np.ndarray  # bool (M,)
  size: int
  overflowed: bool  # the realised size exceeded the planned padded size


class PoissonSampler:
  """Poisson batches: the batch of step t is a function of `generator_for_step(t)`.

  With the generator derived from the run's secret root and the step, the batch of
  step t depends only on (root, t): a resumed run (the root is in the checkpoint) draws
  exactly the batches an uninterrupted run would, with no sampler state to save. The
  realised size is Binomial(N, q) and the members a uniform subset of that size: the
  same distribution as one Bernoulli(q) draw per example, at a fraction of the cost for
  small q.
  """

  def __init__(self, num_examples: int, sampling_rate: float,
               generator_for_step: Callable[[int], np.random.Generator], *,
               padded_size: int | None = None, overflow_probability: float = 1e-6,
               multiple: int = 1):
    self.num_examples = int(num_examples)
    self.sampling_rate = float(sampling_rate)
    self.generator_for_step = generator_for_step
    self.multiple = int(multiple)
    self.overflow_probability = overflow_probability
    self.padded_size = int(padded_size) if padded_size else padded_batch_size(
        num_examples, sampling_rate, overflow_probability=overflow_probability,
        multiple=multiple)

  def sample(self, step: int) -> PaddedIndices:
    rng = self.generator_for_step(int(step))
    size = int(rng.binomial(self.num_examples, self.sampling_rate))
    members = rng.choice(self.num_examples, size=size, replace=False)
    physical = max(self.padded_size, -(-size // self.padded_size) * self.padded_size)
    indices = np.zeros((physical,), np.int32)
    indices[:size] = members
    mask = np.zeros((physical,), bool)
    mask[:size] = True
    return PaddedIndices(indices=indices, mask=mask, size=size,
                         overflowed=size > self.padded_size)

  def describe(self) -> dict:
    """What the run records about its sampling (in the ledger and privacy.json)."""
    return dict(scheme="poisson", num_examples=self.num_examples,
                sampling_rate=self.sampling_rate, padded_batch_size=self.padded_size,
                expected_batch_size=self.num_examples * self.sampling_rate,
                overflow_probability_per_step=float(stats.binom.sf(
                    self.padded_size, self.num_examples, self.sampling_rate)),
                overflow_policy="grow to the next multiple of the padded size (no truncation)")
