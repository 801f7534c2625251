"""DP-CGAN's Thyroid utility protocol (dpcgan.md §5.2), fitted on synthetic rows.

`thyroid_mlp_protocol` reproduces the Thyroid notebook's classifier with the fix of
dpcgan.md §7 #4 (upstream fitted its grid search on the *real* training rows; here it
is fitted on the generated ones, which is what measures the generator):

  * targets one-hot (a multilabel-indicator matrix, as upstream: MLPClassifier then
    fits independent sigmoid outputs);
  * `GridSearchCV(MLPClassifier(), grid, cv=5)` with upstream's grid: solver in
    {lbfgs, adam}, max_iter 300, alpha 1e-1 ... 1e-9, hidden 15 ... 19 units,
    random_state = seed (1 upstream); 'small' is a 3-point lbfgs grid for tests;
  * on the real test rows: `auroc_thyroid` = micro-averaged ROC AUC of the *hard*
    (0/1) predictions, the number upstream reports (0.97462); `_proba` the same from
    predicted probabilities (preferred for new reports, §7 #9); `_acc` subset accuracy
    (upstream's `score`, 0.9562); `_cv` the best 5-fold CV score on the synthetic set.

Rows are used as given (the loader's [0, 1] max-abs scaling; test rows scaled with
the training maxima). The real test data only measures the released generator; the
numbers are not privatised.
"""

import warnings
from typing import Any

import numpy as np
import sklearn.exceptions
import sklearn.metrics
import sklearn.model_selection
import sklearn.neural_network
import threadpoolctl

THYROID_GRIDS: dict[str, dict[str, list[Any]]] = {
    "upstream": {"solver": ["lbfgs", "adam"], "max_iter": [300],
                 "alpha": [10.0 ** -k for k in range(1, 10)],
                 "hidden_layer_sizes": [15, 16, 17, 18, 19]},
    "small": {"solver": ["lbfgs"], "max_iter": [300], "alpha": [1e-2, 1e-5, 1e-8],
              "hidden_layer_sizes": [16]},
}


def _one_hot(y, num_classes: int) -> np.ndarray:
  return np.eye(num_classes, dtype=np.int64)[np.asarray(y, np.int64)]


def thyroid_mlp_protocol(gen_x, gen_y, test_x, test_y, num_classes: int = 3, *,
                         seed: int = 1, grid: str = "upstream", n_jobs: int | None = None,
                         blas_threads: int | None = 1) -> dict[str, float]:
  """Grid-searched MLP on synthetic (x, one-hot y); AUROC and accuracy on real test rows.

  Returns {'auroc_thyroid', 'auroc_thyroid_proba', 'auroc_thyroid_acc',
  'auroc_thyroid_cv'} (see the module docstring).
  """
  if grid not in THYROID_GRIDS:
    raise ValueError(f"unknown Thyroid grid {grid!r}; known: {sorted(THYROID_GRIDS)}")
  params = dict(THYROID_GRIDS[grid], random_state=[int(seed)])
  xg = np.asarray(gen_x, np.float64).reshape(len(gen_x), -1)
  xt = np.asarray(test_x, np.float64).reshape(len(test_x), -1)
  yg, yt = _one_hot(gen_y, num_classes), _one_hot(test_y, num_classes)
  search = sklearn.model_selection.GridSearchCV(
      sklearn.neural_network.MLPClassifier(), params, cv=5, n_jobs=n_jobs)
  with warnings.catch_warnings(), threadpoolctl.threadpool_limits(blas_threads, "blas"):
    warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
    search.fit(xg, yg)
    hard = search.predict(xt)
    proba = search.predict_proba(xt)
  return {
      "auroc_thyroid": float(sklearn.metrics.roc_auc_score(yt, hard, average="micro")),
      "auroc_thyroid_proba": float(sklearn.metrics.roc_auc_score(yt, proba, average="micro")),
      "auroc_thyroid_acc": float(sklearn.metrics.accuracy_score(yt, hard)),
      "auroc_thyroid_cv": float(search.best_score_),
  }


def average_runs(runs: list[dict[str, float]]) -> dict[str, float]:
  """Mean of each key over runs (seeds), plus `<name>_std` for the headline metric."""
  out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
  if len(runs) > 1:
    out["auroc_thyroid_std"] = float(np.std([r["auroc_thyroid"] for r in runs]))
  return out
