"""DP-CGAN's Thyroid utility protocol (evaluation/tabular.py)."""

import numpy as np
import pytest

from dpgen_jax.evaluation import tabular as tabular_eval


def _toy(n, seed):
  """3 separable classes in 21 columns (a few informative), imbalanced like Thyroid."""
  r = np.random.default_rng(seed)
  y = r.choice(3, size=n, p=[0.1, 0.2, 0.7])
  x = r.uniform(0, 0.3, size=(n, 21))
  x[:, 16] += 0.6 * (y == 0)
  x[:, 18] += 0.6 * (y == 1)
  return x.astype(np.float32), y


def test_thyroid_protocol_scores_signal_high_and_noise_at_chance():
  gx, gy = _toy(300, 0)
  tx, ty = _toy(400, 1)
  good = tabular_eval.thyroid_mlp_protocol(gx, gy, tx, ty, 3, grid="small")
  assert set(good) == {"auroc_thyroid", "auroc_thyroid_proba", "auroc_thyroid_acc",
                       "auroc_thyroid_cv"}
  assert good["auroc_thyroid"] > 0.95 and good["auroc_thyroid_proba"] > 0.95
  assert good["auroc_thyroid_acc"] > 0.9
  noise_y = np.random.default_rng(2).integers(0, 3, len(gy))
  bad = tabular_eval.thyroid_mlp_protocol(gx, noise_y, tx, ty, 3, grid="small")
  assert bad["auroc_thyroid_proba"] < 0.75
  runs = tabular_eval.average_runs([good, bad])
  assert runs["auroc_thyroid"] == pytest.approx((good["auroc_thyroid"] + bad["auroc_thyroid"]) / 2)
  assert "auroc_thyroid_std" in runs


def test_upstream_grid_is_the_notebooks():
  grid = tabular_eval.THYROID_GRIDS["upstream"]
  assert grid["solver"] == ["lbfgs", "adam"] and grid["max_iter"] == [300]
  assert grid["hidden_layer_sizes"] == [15, 16, 17, 18, 19]
  np.testing.assert_allclose(grid["alpha"], 10.0 ** -np.arange(1, 10))
