"""The membership-inference attack's statistics (cslgan.md §5.3) on known score sets."""

import numpy as np
import pytest

from dpgen_jax import errors
from dpgen_jax.evaluation import membership


def test_random_scores_are_near_chance():
  r = np.random.default_rng(0)
  out = membership.top_k_precision(r.normal(size=2000), r.normal(size=9000), draws=2000)
  assert out["chance"] == 0.1
  assert out["top_k_precision"] == pytest.approx(0.1, abs=0.01)
  assert membership.roc_auc(r.normal(size=2000), r.normal(size=9000)) == pytest.approx(
      0.5, abs=0.03)


def test_separated_scores_are_found_and_ties_are_broken_at_random():
  r = np.random.default_rng(1)
  members, others = r.normal(size=500) + 100.0, r.normal(size=5000)
  assert membership.top_k_precision(members, others, draws=200)["top_k_precision"] == 1.0
  assert membership.roc_auc(members, others) == 1.0
  # All scores equal (e.g. a saturated softmax): no information -> chance, not 0 or 1.
  tied = membership.top_k_precision(np.ones(500), np.ones(5000), draws=1000)
  assert tied["top_k_precision"] == pytest.approx(0.1, abs=0.01)


def test_partial_signal_hand_checked():
  # 100 members all above the 900 non-members except 50 members tied below everyone:
  # members = 50 at 10 and 50 at -10; non-members at 0 -> exactly 50 of the top 100.
  members = np.concatenate([np.full(50, 10.0), np.full(50, -10.0)])
  out = membership.top_k_precision(members, np.zeros(900), draws=50)
  assert out["top_k_precision"] == pytest.approx(0.5)


def test_too_few_records_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="at least 100 members"):
    membership.top_k_precision(np.zeros(50), np.zeros(900), draws=1)
