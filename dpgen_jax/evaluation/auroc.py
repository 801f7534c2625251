"""AUROC of class scores, and DP-CGAN's classifier protocol that reports it.

`micro_auroc` and `per_class_auroc` score an (N, K) matrix of class scores against
integer labels; `micro_auroc_of_classifiers` implements DP-CGAN's utility metric:
the notebook's scikit-learn one-vs-rest classifiers fitted on generated data and
their micro-averaged AUROC on real test data (dpcgan.md §5.1).
"""

import warnings
from typing import Any, Sequence

import numpy as np
import sklearn.exceptions
import sklearn.linear_model
import sklearn.metrics
import sklearn.multiclass
import sklearn.neural_network
import threadpoolctl

Array = Any


def _one_hot(y: Array, num_classes: int) -> np.ndarray:
  return np.eye(num_classes, dtype=np.int64)[np.asarray(y, np.int64)]


def micro_auroc(y_true: Array, proba: Array, num_classes: int) -> float:
  """Micro-averaged AUROC: one ROC curve over the raveled one-hot label matrix
  against the raveled (N, K) score matrix (DP-CGAN's `roc_curve(Y.ravel(), S.ravel())`).
  """
  return float(sklearn.metrics.roc_auc_score(_one_hot(y_true, num_classes).ravel(),
                                             np.asarray(proba, np.float64).ravel()))


def per_class_auroc(y_true: Array, proba: Array, num_classes: int) -> list[float]:
  """One-vs-rest AUROC of every class column (NaN for a class absent from y_true)."""
  onehot, proba = _one_hot(y_true, num_classes), np.asarray(proba, np.float64)
  return [float(sklearn.metrics.roc_auc_score(onehot[:, k], proba[:, k]))
          if 0 < onehot[:, k].sum() < len(onehot) else float("nan")
          for k in range(num_classes)]


def micro_auroc_of_classifiers(gen_x: Array, gen_y: Array, test_x: Array, test_y: Array,
                               num_classes: int = 10, *, seed: int = 2,
                               n_jobs: int | None = None, blas_threads: int | None = 1,
                               classifiers: Sequence[str] = ("lr", "mlp")) -> dict[str, Any]:
  """Micro-AUROC on real data of scikit-learn OvR classifiers fitted on generated data.

  Implements DP-CGAN's utility metric (the DP-CGAN notebook, dpcgan.md §5.1). Runs
  the upstream protocol itself (scikit-learn, as the DP-CGAN notebook does,
  not a JAX re-implementation): images flattened and mapped to [-1, 1]; fitted on
  the generated (x, y):
  - `OneVsRestClassifier(LogisticRegression(solver='lbfgs', C=2, random_state=seed))`.
    Upstream passes multi_class='multinomial' (removed from scikit-learn); on each
    binary OvR problem that fits a two-class softmax, whose L2 penalty on both weight
    rows equals a binary logistic regression with C doubled, hence C=2 here.
  - `OneVsRestClassifier(MLPClassifier(alpha=1, random_state=seed))` (100 ReLU
    units, Adam, 200 iterations).
  `predict_proba` on the real test images (OvR normalises rows to sum to 1), then
  micro-averaged and per-class AUROC. Upstream uses random_state=2; the DP-CGAN
  report averages 3 independent GAN trainings. Convergence warnings are silenced.
  `classifiers` selects which of 'lr' and 'mlp' to fit (default both).
  `blas_threads` caps BLAS threads during fitting (None: no cap): on a shared
  2-core machine multi-threaded OpenBLAS made the OvR-MLP ~2x (5000 MNIST images)
  to ~10x (small problems) slower; only summation order can change.

  Returns:
    {'auroc_lr', 'auroc_mlp': micro-AUROCs, 'per_class_lr', 'per_class_mlp': lists}
  """
  def flat(a):
    a = np.asarray(a, np.float64)
    return (a.reshape(a.shape[0], -1) * 2.0 - 1.0)

  xg, xt = flat(gen_x), flat(test_x)
  yg = np.asarray(gen_y, np.int64)
  models = {
      "lr": sklearn.linear_model.LogisticRegression(solver="lbfgs", C=2.0, random_state=seed),
      "mlp": sklearn.neural_network.MLPClassifier(alpha=1.0, random_state=seed),
  }
  result = {}
  for name in classifiers:
    estimator = models[name]
    ovr = sklearn.multiclass.OneVsRestClassifier(estimator, n_jobs=n_jobs)
    with warnings.catch_warnings(), threadpoolctl.threadpool_limits(blas_threads, "blas"):
      warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
      ovr.fit(xg, yg)
      # OvR only knows the classes present in gen_y; place them in their columns.
      proba = np.zeros((xt.shape[0], num_classes))
      proba[:, ovr.classes_] = ovr.predict_proba(xt)
    result[f"auroc_{name}"] = micro_auroc(test_y, proba, num_classes)
    result[f"per_class_{name}"] = per_class_auroc(test_y, proba, num_classes)
  return result
