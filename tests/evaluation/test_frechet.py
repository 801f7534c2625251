"""Tests of the Fréchet distance and feature statistics."""

import numpy as np
import pytest
import scipy.linalg

from dpgen_jax.evaluation import frechet


def _naive_fid(mu1, sigma1, mu2, sigma2):
  """The textbook formula with scipy's sqrtm (what pytorch-fid computes)."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean))


def _random_stats(rng, d, n):
  """Mean and covariance of n correlated Gaussian samples in d dimensions."""
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + rng.normal(size=d)
  return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d", [16, 64])
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_matches_naive_formula(d, method):
  rng = np.random.default_rng(d)
  mu1, s1 = _random_stats(rng, d, 4 * d)
  mu2, s2 = _random_stats(rng, d, 4 * d)
  got = frechet.frechet_distance(mu1, s1, mu2, s2, method=method)
  np.testing.assert_allclose(got, _naive_fid(mu1, s1, mu2, s2), rtol=1e-6)


def test_commuting_covariances_closed_form():
  # Diagonal covariances commute: FID = |dmu|^2 + sum (sqrt a - sqrt b)^2 exactly.
  rng = np.random.default_rng(0)
  a, b = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
  mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_identical_statistics_give_zero():
  mu, sigma = _random_stats(np.random.default_rng(1), 64, 256)
  for method in ("eigh", "sqrtm"):
    assert abs(frechet.frechet_distance(mu, sigma, mu, sigma, method=method)) < 1e-8


def test_only_means_differ_gives_squared_mean_distance():
  rng = np.random.default_rng(2)
  mu1, sigma = _random_stats(rng, 32, 128)
  mu2 = mu1 + rng.normal(size=32)
  got = frechet.frechet_distance(mu1, sigma, mu2, sigma)
  np.testing.assert_allclose(got, np.sum((mu1 - mu2) ** 2), rtol=1e-10, atol=1e-10)


def test_rank_deficient_covariances():
  # Fewer samples than dimensions: both covariances are singular.
  rng = np.random.default_rng(3)
  mu1, s1 = _random_stats(rng, 64, 20)
  mu2, s2 = _random_stats(rng, 64, 30)
  assert np.linalg.matrix_rank(s1) < 64
  got = frechet.frechet_distance(mu1, s1, mu2, s2)
  assert np.isfinite(got) and got > 0
  np.testing.assert_allclose(got, frechet.frechet_distance(mu1, s1, mu2, s2, method="sqrtm"),
                             rtol=1e-6)
  # Identical singular statistics: no bias from the square roots of rounding noise.
  assert abs(frechet.frechet_distance(mu1, s1, mu1, s1)) < 1e-9
  assert abs(frechet.frechet_distance(mu1, s1, mu2, s1) - np.sum((mu1 - mu2) ** 2)) < 1e-9


def test_shape_mismatch_raises():
  mu, sigma = np.zeros(4), np.eye(4)
  with pytest.raises(ValueError):
    frechet.frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
  with pytest.raises(ValueError):
    frechet.frechet_distance(mu, sigma, mu, np.eye(3))
  with pytest.raises(ValueError):
    frechet.frechet_distance(mu, np.eye(4)[:3], mu, sigma)


def test_invalid_inputs_raise():
  mu, sigma = np.zeros(3), np.eye(3)
  with pytest.raises(ValueError, match="non-finite"):
    frechet.frechet_distance(mu, sigma, np.array([0.0, np.nan, 0.0]), sigma)
  with pytest.raises(ValueError, match="positive semi-definite"):
    frechet.frechet_distance(mu, sigma, mu, np.diag([1.0, -1.0, 1.0]))
  with pytest.raises(ValueError):
    frechet.frechet_distance(mu, sigma, mu, sigma, method="bogus")


def test_feature_statistics_equals_numpy():
  rng = np.random.default_rng(4)
  feats = rng.normal(size=(500, 12)).astype(np.float32) * 3 + 100  # a large offset
  mu, sigma = frechet.feature_statistics(feats)
  assert mu.dtype == np.float64 and sigma.dtype == np.float64
  np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False),
                             rtol=1e-10, atol=1e-12)


def test_chunked_and_streaming_statistics_match_one_shot(monkeypatch):
  rng = np.random.default_rng(5)
  feats = rng.normal(size=(1001, 7)) + 50
  expected_mu, expected_sigma = feats.mean(0), np.cov(feats, rowvar=False)
  monkeypatch.setattr(frechet, "_CHUNK_ROWS", 64)
  mu, sigma = frechet.feature_statistics(feats)
  np.testing.assert_allclose(mu, expected_mu, rtol=1e-12)
  np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-10, atol=1e-12)
  stats = frechet.StreamingStatistics()
  for lo, hi in [(0, 1), (1, 300), (300, 300), (300, 1001)]:  # uneven and empty batches
    stats.update(feats[lo:hi])
  mu, sigma = stats.result()
  assert stats.count == 1001
  np.testing.assert_allclose(mu, expected_mu, rtol=1e-12)
  np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-10, atol=1e-12)


def test_streaming_statistics_validation():
  stats = frechet.StreamingStatistics(3)
  with pytest.raises(ValueError):
    stats.update(np.zeros((2, 4)))
  stats.update(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="at least 2"):
    stats.result()
