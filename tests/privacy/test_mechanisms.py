"""Mechanisms: the noise each adds and the event each states, against hand values."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dpgen_jax.privacy import mechanisms


def _std_within_chi2(values: np.ndarray, want: float, p: float = 1e-6) -> bool:
  """The sample std of `values` (mean 0) is within a two-sided chi-square bound of `want`."""
  n = values.size
  ss = float(np.sum(np.square(values.astype(np.float64))))
  lo, hi = stats.chi2.ppf(p / 2, n), stats.chi2.isf(p / 2, n)
  return lo <= ss / want ** 2 <= hi


def test_gaussian_sum_adds_one_draw_of_sigma_c_and_divides():
  mech = mechanisms.GaussianSum(noise_multiplier=2.0, clip_norm=0.5, divisor=4.0)
  total = {"w": jnp.full((100_000,), 5.0), "b": jnp.zeros((3,))}
  out = mech(total, jax.random.key(0))
  values = np.asarray(out["w"])
  assert abs(values.mean() - 5.0 / 4.0) < 0.02
  assert _std_within_chi2(values - 5.0 / 4.0, 2.0 * 0.5 / 4.0)
  assert mech.event() == dp_accounting.GaussianDpEvent(2.0)
  assert mech.poisson_event(0.01) == dp_accounting.PoissonSampledDpEvent(
      0.01, dp_accounting.GaussianDpEvent(2.0))


def test_sensitivity_factor_two_halves_the_accounted_multiplier():
  """A clipped microbatch mean can flip to any vector of norm <= C: sensitivity 2C, so the
  same noise std sigma C is a Gaussian mechanism with multiplier sigma / 2."""
  mech = mechanisms.GaussianSum(noise_multiplier=1.15, clip_norm=1.1, sensitivity_factor=2.0,
                                divisor=10.0)
  assert mech.noise_std == pytest.approx(1.15 * 1.1)
  assert mech.sensitivity == pytest.approx(2.2)
  assert mech.event() == dp_accounting.GaussianDpEvent(pytest.approx(0.575))
  assert mechanisms.GaussianSum(0.0, 1.0).event() == dp_accounting.GaussianDpEvent(0.0)


@pytest.mark.parametrize("clip", ["rows", "block"])
def test_sanitizer_bounds_each_unit_and_adds_two_c_sigma(clip):
  c, sigma = 0.7, 1.3
  r = np.random.default_rng(0)
  grads = jnp.asarray(r.normal(size=(16, 5, 5, 1)) * r.uniform(0.01, 5.0, (16, 1, 1, 1)),
                      jnp.float32)
  san = mechanisms.ImageGradientSanitizer(clip_norm=c, noise_multiplier=sigma, clip=clip)
  clipped, norms = san.clip_only(grads)
  flat = np.asarray(clipped).reshape(16, -1)
  if clip == "rows":
    assert (np.linalg.norm(flat, axis=1) <= c * (1 + 1e-5)).all()
    small = np.asarray(norms) < c
    np.testing.assert_allclose(flat[small], np.asarray(grads).reshape(16, -1)[small], rtol=1e-5)
  else:
    assert np.linalg.norm(flat) <= c * (1 + 1e-5)
    assert float(norms) == pytest.approx(float(jnp.linalg.norm(grads)), rel=1e-5)
  noisy, _ = san(jnp.zeros((2000, 28, 28, 1)), jax.random.key(3))
  assert _std_within_chi2(np.asarray(noisy), 2.0 * c * sigma)
  assert san.sensitivity == pytest.approx(2 * c)
  assert san.event() == dp_accounting.GaussianDpEvent(sigma)
  # k units driven by one record: sensitivity 2 C sqrt(k), multiplier sigma / sqrt(k).
  assert san.event(units_per_record=32) == dp_accounting.GaussianDpEvent(
      pytest.approx(sigma / math.sqrt(32)))


def test_sanitizer_rejects_an_unknown_clipping_unit():
  with pytest.raises(ValueError, match="clip must be"):
    mechanisms.ImageGradientSanitizer(clip_norm=1.0, noise_multiplier=1.0, clip="layer")


def test_discriminator_groupings_state_their_sensitivity():
  """Per row or per pair: one example moves the sum by C (multiplier sigma); a clipped
  microbatch mean can flip, 2C (the same noise is then multiplier sigma / 2)."""
  from dpgen_jax.privacy import discriminator
  for grouping, factor in (("rows", 1.0), ("pairs", 1.0), ("microbatches", 2.0)):
    mech = discriminator.mechanism(1.2, 0.5, 10.0, grouping)
    assert mech.sensitivity == factor * 0.5 and mech.noise_std == 1.2 * 0.5
    assert mech.event() == dp_accounting.GaussianDpEvent(1.2 / factor)
  with pytest.raises(ValueError, match="grouping must be one of"):
    discriminator.mechanism(1.0, 1.0, 1.0, "batch")


def test_bounded_records_scale_the_noise_with_the_relation():
  """Replace-one doubles the sensitivity of a sum of bounded records; the noise doubles
  with it, so the event is Gaussian(sigma) under either relation."""
  for relation, factor in (("add_or_remove_one", 1.0), ("replace_one", 2.0)):
    mech = mechanisms.bounded_records_sum(3.0, 0.25, relation, 100.0)
    assert mech.sensitivity == factor * 0.25 and mech.noise_std == 3.0 * factor * 0.25
    assert mech.event() == dp_accounting.GaussianDpEvent(3.0)
