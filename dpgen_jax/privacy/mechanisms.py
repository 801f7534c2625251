"""Privatising mechanisms: each adds its noise AND states the DpEvent the ledger charges.

A method never computes a noise scale or a sensitivity factor itself: it builds one of
these from its config and uses the same object to noise its statistic in the step and
to produce the event the accountant composes, so the two cannot drift apart
(tests/privacy/test_mechanisms.py, and per method tests/privacy/test_noise_matches_event.py,
measure the noise a real step adds against the charged event).

  GaussianSum            a sum of bounded records + N(0, std^2 I), divided by a constant
                         (DP-SGD's clipped gradient sums: DP-GAN, DP-CGAN, CSL-GAN);
  ImageGradientSanitizer per-example (GS-WGAN) or whole-block (DP-Sinkhorn) clipping of
                         the gradient with respect to generated images + Gaussian noise.

The Gaussian mechanism's noise multiplier, the one thing the accountant needs, is
noise std / L2 sensitivity of the statistic; the sampling around it (Poisson,
selection without replacement) is added by the caller, who knows how records are
chosen.
"""

import dataclasses
import math
from typing import Any

import dp_accounting
import jax
import jax.numpy as jnp

PyTree = Any
ROWS, BLOCK = "rows", "block"


def gaussian_noise_like(tree: PyTree, key: jax.Array, stddev: float | jax.Array) -> PyTree:
  """Independent N(0, stddev^2) for every coordinate of every leaf of `tree`."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  noise = [stddev * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, noise)


@dataclasses.dataclass(frozen=True)
class GaussianSum:
  """(S + N(0, std^2 I)) / divisor for a sum S of records with bounded contributions.

  Attributes:
    noise_multiplier: sigma, the configured multiplier (privacy.noise_multiplier).
    clip_norm: C, the unit of both the noise and the sensitivity.
    sensitivity_factor: the L2 sensitivity of S in units of C: 1 when adding or removing
      one record adds or removes one clipped vector (per-example clipping), 2 when one
      record can move a clipped vector to any other (a clipped microbatch mean, a
      replaced record).
    noise_factor: the noise std in units of sigma * C (1 for DP-SGD).
    divisor: a data-independent constant (never the realised batch size).

  Guarantee: for neighbouring inputs ||S - S'||_2 <= sensitivity_factor * C, so the
  output is the Gaussian mechanism with multiplier
  noise_factor * sigma / sensitivity_factor (`event`).
  """
  noise_multiplier: float
  clip_norm: float
  sensitivity_factor: float = 1.0
  noise_factor: float = 1.0
  divisor: float = 1.0

  @property
  def sensitivity(self) -> float:
    return self.sensitivity_factor * self.clip_norm

  @property
  def noise_std(self) -> float:
    return self.noise_factor * self.noise_multiplier * self.clip_norm

  @property
  def effective_noise_multiplier(self) -> float:
    return self.noise_std / self.sensitivity

  def event(self) -> dp_accounting.DpEvent:
    """The Gaussian mechanism this is (without sampling). sigma = 0 (a calibration probe)
    gives Gaussian(0), which the RDP accountant treats as infinite epsilon."""
    return dp_accounting.GaussianDpEvent(self.effective_noise_multiplier)

  def poisson_event(self, sampling_rate: float) -> dp_accounting.DpEvent:
    """The event of one step on a Poisson sample of rate q."""
    return dp_accounting.PoissonSampledDpEvent(float(sampling_rate), self.event())

  def __call__(self, total: PyTree, key: jax.Array) -> PyTree:
    """One noise draw for the whole sum, then the division."""
    noise = gaussian_noise_like(total, key, self.noise_std)
    return jax.tree.map(lambda s, n: (s + n) / self.divisor, total, noise)


# L2 sensitivity, in units of the bound, of a sum of records of norm <= bound when one
# record is added or removed (one vector more or less) or replaced (one vector to any
# other).
NEIGHBORING_FACTOR = {"add_or_remove_one": 1.0, "replace_one": 2.0}


def bounded_records_sum(noise_multiplier: float, bound: float, neighboring: str,
                        divisor: float) -> GaussianSum:
  """(S + N(0, (sigma f bound)^2 I)) / divisor for S a sum of records of norm <= bound:
  the noise scales with the relation's sensitivity f * bound, so the event is the
  Gaussian mechanism with multiplier sigma whichever relation is used."""
  f = NEIGHBORING_FACTOR[neighboring]
  return GaussianSum(noise_multiplier=float(noise_multiplier), clip_norm=float(bound),
                     sensitivity_factor=f, noise_factor=f, divisor=float(divisor))


@dataclasses.dataclass(frozen=True)
class ImageGradientSanitizer:
  """Clips the gradient of a loss with respect to generated images and adds noise.

  Attributes:
    clip_norm: C.
    noise_multiplier: sigma; the noise std per entry is 2 C sigma.
    clip: 'rows' (GS-WGAN: each row, one generated example, clipped to C by itself) or
      'block' (DP-Sinkhorn: the whole (B, ...) block clipped to C as one vector).
    norm_eps: in the clip factor min(1, C / (||g|| + norm_eps)) (GS-WGAN's upstream uses
      1e-10, DP-Sinkhorn's 1e-6; the bound holds for any norm_eps >= 0).

  Guarantee: every clipped unit (row or block) has norm <= C whatever the private data,
  so between neighbouring datasets a unit moves by at most 2C: each unit with noise
  std 2 C sigma is the Gaussian mechanism with multiplier sigma (`event`). When one
  private record can influence k units at once (GS-WGAN with one discriminator for all
  B rows), the k units together have sensitivity 2 C sqrt(k): multiplier
  sigma / sqrt(k) (`event(units_per_record=k)`).
  """
  clip_norm: float
  noise_multiplier: float
  clip: str = ROWS
  norm_eps: float = 1e-6

  def __post_init__(self):
    if self.clip not in (ROWS, BLOCK):
      raise ValueError(f"clip must be {ROWS!r} or {BLOCK!r}, got {self.clip!r}")

  @property
  def sensitivity(self) -> float:
    """L2 sensitivity of one clipped unit."""
    return 2.0 * self.clip_norm

  @property
  def noise_std(self) -> float:
    return 2.0 * self.clip_norm * self.noise_multiplier

  def event(self, units_per_record: int = 1) -> dp_accounting.DpEvent:
    return dp_accounting.GaussianDpEvent(self.noise_multiplier / math.sqrt(units_per_record))

  def clip_only(self, grads: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(clipped, norms before clipping): per row (shape (B,)) or of the block (scalar)."""
    if self.clip == BLOCK:
      norm = jnp.sqrt(jnp.sum(jnp.square(grads)))
      return grads * jnp.minimum(1.0, self.clip_norm / (norm + self.norm_eps)), norm
    flat = grads.reshape(grads.shape[0], -1)
    norms = jnp.linalg.norm(flat, axis=1)
    factor = jnp.minimum(1.0, self.clip_norm / (norms + self.norm_eps))
    return (flat * factor[:, None]).reshape(grads.shape), norms

  def __call__(self, grads: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(clipped + N(0, (2 C sigma)^2) per entry, norms before clipping)."""
    clipped, norms = self.clip_only(grads)
    noise = self.noise_std * jax.random.normal(key, clipped.shape, clipped.dtype)
    return clipped + noise, norms
