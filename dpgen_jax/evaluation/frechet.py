"""Fréchet distance between Gaussians fitted to features (FID and friends).

FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), the squared
2-Wasserstein distance between N(mu1, S1) and N(mu2, S2). Statistics are float64,
with the unbiased covariance of `numpy.cov(features, rowvar=False)`, which is what
pytorch-fid (dpgan-revisit) and the TTUR code (GS-WGAN, DP-Sinkhorn) use. Which
network produced the features (Inception pool3, the LeNet of `feature_extractor`)
is the caller's business: the metric is only comparable across runs that used the
same extractor weights.
"""

from typing import Any

import numpy as np
import scipy.linalg

Array = Any

# Rows per float64 chunk when accumulating statistics: 10k x 2048 features is 160 MB.
_CHUNK_ROWS = 10_000


class StreamingStatistics:
  """Accumulates the mean and unbiased covariance of feature rows batch by batch.

  Uses the pairwise update of Chan, Golub and LeVeque (per-batch centred sums of
  outer products, merged with a mean-difference correction), so the result matches
  `numpy.cov` to rounding even when the features have a large common offset, and
  the full feature matrix never has to exist at once (e.g. 60k x 2048 Inception
  features arriving from a jitted extractor in chunks).
  """

  def __init__(self, dim: int | None = None):
    self.count = 0
    self._mean = None if dim is None else np.zeros(dim, np.float64)
    self._m2 = None if dim is None else np.zeros((dim, dim), np.float64)

  def update(self, features: Array) -> "StreamingStatistics":
    """Adds a (B, D) batch of feature rows (numpy or jax arrays); returns self."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
      raise ValueError(f"features must be (num_rows, dim), got shape {x.shape}.")
    if self._mean is None:
      self._mean = np.zeros(x.shape[1], np.float64)
      self._m2 = np.zeros((x.shape[1], x.shape[1]), np.float64)
    if x.shape[1] != self._mean.shape[0]:
      raise ValueError(f"feature dim {x.shape[1]} != {self._mean.shape[0]} seen before.")
    n_b = x.shape[0]
    if n_b == 0:
      return self
    mean_b = x.mean(axis=0)
    centred = x - mean_b
    m2_b = centred.T @ centred
    n = self.count
    delta = mean_b - self._mean
    total = n + n_b
    self._mean = self._mean + delta * (n_b / total)
    self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n * n_b / total)
    self.count = total
    return self

  def result(self) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma): the float64 mean and the unbiased (N - 1) covariance."""
    if self.count < 2:
      raise ValueError(f"need at least 2 feature rows for a covariance, got {self.count}.")
    sigma = self._m2 / (self.count - 1)
    return self._mean.copy(), (sigma + sigma.T) / 2


def feature_statistics(features: Array) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of (N, D) features, as `mean(axis=0)`, `cov(rowvar=False)`.

  Float64 throughout. Large inputs are processed in chunks of 10k rows so the
  float64 copy stays small; the chunked merge is exact up to rounding.
  """
  feats = features if hasattr(features, "shape") else np.asarray(features)
  if len(feats.shape) != 2:
    raise ValueError(f"features must be (num_rows, dim), got shape {feats.shape}.")
  stats = StreamingStatistics(feats.shape[1])
  for start in range(0, feats.shape[0], _CHUNK_ROWS):
    stats.update(feats[start:start + _CHUNK_ROWS])
  return stats.result()


def _check_shapes(mu1, sigma1, mu2, sigma2) -> None:
  if mu1.ndim != 1 or mu1.shape != mu2.shape:
    raise ValueError(f"means must be 1-D of equal length, got {mu1.shape} and {mu2.shape}.")
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}.")
  for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{name} contains non-finite values.")


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr((S1 S2)^(1/2)) through the symmetric matrix S1^(1/2) S2 S1^(1/2).

  S1 S2 is similar to S1^(1/2) S2 S1^(1/2) (when S1 is PSD), so both have the
  same real, non-negative eigenvalues l_i and tr((S1 S2)^(1/2)) = sum_i sqrt(l_i).
  Two symmetric eigendecompositions (backward stable, real arithmetic) replace a
  Schur-based square root of a non-symmetric product, which is where scipy's
  sqrtm picks up spurious imaginary parts and loses accuracy near singularity.
  Eigenvalues that are negative by rounding are clipped to zero; clearly negative
  ones mean an input is not a covariance and raise. Eigenvalues below
  D * float64-eps * max eigenvalue are indistinguishable from zero and are set to
  zero: otherwise the square roots of rounding noise (~1e-8 each) add up to a
  systematic positive bias in the trace for rank-deficient covariances.
  """
  def clipped(w, name):
    top = float(np.max(np.abs(w), initial=0.0))
    if w.min() < -1e-6 * top:
      raise ValueError(f"{name} is not positive semi-definite (eigenvalue {w.min():.3g}).")
    return np.where(w > w.shape[0] * np.finfo(np.float64).eps * top, w, 0.0)

  w1, v1 = np.linalg.eigh(sigma1)
  root1 = (v1 * np.sqrt(clipped(w1, "sigma1"))) @ v1.T
  inner = root1 @ sigma2 @ root1
  lam = np.linalg.eigvalsh((inner + inner.T) / 2)
  return float(np.sum(np.sqrt(clipped(lam, "sigma2"))))


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr(sqrtm(S1 @ S2)) exactly as pytorch-fid / TTUR compute it (real part)."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.all(np.isfinite(covmean)):
    return float("nan")
  if np.iscomplexobj(covmean):
    # The exact root is real; imaginary parts are rounding unless they are large.
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"sqrtm has a large imaginary component "
                       f"({np.max(np.abs(covmean.imag)):.3g}).")
    covmean = covmean.real
  return float(np.trace(covmean))


def frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array,
                     eps: float = 1e-6, method: str = "eigh") -> float:
  """Fréchet distance ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), float64.

  Args:
    mu1, sigma1: mean (D,) and covariance (D, D) of the first feature set.
    mu2, sigma2: the same for the second set.
    eps: if the matrix square root fails (non-finite result), eps * I is added to
      both covariances and it is computed again, as pytorch-fid and TTUR do.
    method: "eigh" (default): through the symmetric form S1^(1/2) S2 S1^(1/2) (see
      `_trace_sqrt_product_eigh`; always real, accurate also for rank-deficient
      covariances, e.g. fewer samples than feature dimensions). "sqrtm": upstream's
      scipy.linalg.sqrtm(S1 @ S2), real part kept, ValueError if the diagonal's
      imaginary part exceeds 1e-3. The two agree to ~1e-9 relative on
      well-conditioned inputs.

  Returns:
    The distance as a Python float (may be a rounding-level negative, e.g. -1e-12,
    for identical statistics; it is not clipped).

  Raises:
    ValueError: on mismatched shapes, non-finite inputs, or covariances that are
      not positive semi-definite.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  _check_shapes(mu1, sigma1, mu2, sigma2)
  if method not in ("eigh", "sqrtm"):
    raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}.")
  trace_sqrt = _trace_sqrt_product_eigh if method == "eigh" else _trace_sqrt_product_sqrtm
  sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
  tr_covmean = trace_sqrt(sigma1, sigma2)
  if not np.isfinite(tr_covmean):
    offset = eps * np.eye(sigma1.shape[0])
    tr_covmean = trace_sqrt(sigma1 + offset, sigma2 + offset)
    if not np.isfinite(tr_covmean):
      raise ValueError("matrix square root is not finite even with the eps offset.")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
