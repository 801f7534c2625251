"""The evaluation context: real-side statistics cached on disk with their extractor.

The LeNet it trains and caches is exercised by test_job.py (fid_lenet, is_lenet).
"""

import os
import types

import ml_collections
import numpy as np
import pytest

from dpgen_jax import errors
from dpgen_jax.evaluation import context, frechet


def _context(tmp_path, test_x):
  dataset = types.SimpleNamespace(name="toy", test_x=test_x, num_classes=2)
  return context.EvalContext(dataset, ml_collections.ConfigDict(
      {"cache_dir": str(tmp_path), "seeds": (3, 4)}))


def test_real_statistics_are_computed_once_and_cached_with_their_extractor(tmp_path):
  test_x = np.random.default_rng(0).normal(size=(50, 4))
  calls = []

  def features(x):
    calls.append(len(x))
    return 2.0 * x

  ctx = _context(tmp_path, test_x)
  assert ctx.seeds == [3, 4]
  mu, sigma = ctx.real_statistics("toy", features, "toy-123")
  expected = frechet.feature_statistics(2.0 * test_x)
  np.testing.assert_allclose(mu, expected[0])
  np.testing.assert_allclose(sigma, expected[1])
  assert ctx.real_statistics("toy", features, "toy-123") is not None and calls == [50]
  path = os.path.join(tmp_path, "stats_toy_test_toy-123.npz")
  with np.load(path) as f:
    assert str(f["extractor"]) == "toy-123" and int(f["num_examples"]) == 50
  # A new context (the next eval job) reads the file instead of extracting again.
  mu2, _ = _context(tmp_path, test_x).real_statistics("toy", features, "toy-123")
  np.testing.assert_array_equal(mu2, mu)
  assert calls == [50]


def test_statistics_made_by_another_extractor_are_rejected(tmp_path):
  path = os.path.join(tmp_path, "stats_toy_test_toy-123.npz")
  np.savez(path, mu=np.zeros(4), sigma=np.eye(4), extractor="other-456", num_examples=50)
  ctx = _context(tmp_path, np.zeros((50, 4)))
  with pytest.raises(errors.UserError, match="made by other-456, not toy-123"):
    ctx.real_statistics("toy", lambda x: x, "toy-123")
