"""Tests of the Inception Score."""

import numpy as np
import pytest

from dpgen_jax.evaluation import inception_score


def test_inception_score_extremes():
  k = 10
  confident = np.eye(k)[np.tile(np.arange(k), 100)]  # every split sees each class 10x
  mean, std = inception_score.inception_score(confident, splits=10)
  assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)
  same = np.tile(np.random.default_rng(0).dirichlet(np.ones(k)), (1000, 1))
  mean, std = inception_score.inception_score(same, splits=10)
  assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_matches_upstream_loop():
  probs = np.random.default_rng(1).dirichlet(np.ones(10) * 0.3, size=1003)
  scores = []
  for i in range(10):  # GS-WGAN's get_inception_score
    part = probs[(i * probs.shape[0] // 10):((i + 1) * probs.shape[0] // 10), :]
    kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
    scores.append(np.exp(np.mean(np.sum(kl, 1))))
  assert inception_score.inception_score(probs) == pytest.approx(
      (np.mean(scores), np.std(scores)), rel=1e-12)
