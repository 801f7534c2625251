"""Named evaluation metrics, each computed from generated (x, y) and the real data.

Every metric's name says what produced it (docs/architecture.md):

  fid_lenet        Frechet distance of LeNet-5 features (offline default; the LeNet is
                   trained once on the real training split and cached)
  fid_inception    Frechet distance of pytorch-fid's Inception-v3 pool3 features
                   (needs eval.inception_weights, an .npz from
                   experiments/convert_pytorch_fid_weights.py)
  acc_cnn          dpgan-revisit's CNN protocol (train on generated, select the epoch on
                   held-out generated, report real test accuracy)
  acc_logreg, acc_mlp, acc_cnn_sinkhorn
                   DP-Sinkhorn's / GS-WGAN's classifiers (early stopping on generated)
  is_lenet         Inception Score with the cached LeNet as domain classifier
  auroc_lr, auroc_mlp
                   DP-CGAN's scikit-learn classifiers, micro-AUROC on real test data
  auroc_thyroid    DP-CGAN's Thyroid protocol (grid-searched MLP, micro-AUROC of hard
                   predictions; evaluation/tabular.py), with _proba, _acc, _cv

Each is a function (EvalContext, gen_x, gen_y) -> {name: value, companions...} in
METRICS. The real data, the cached LeNet and the real-side statistics they share are
in `context.EvalContext` (also reachable as `metrics.EvalContext`).
Real data is used here only to *measure* a released generator (not part of training);
these numbers are not privatised and are not part of any DP release.
"""

import os
from typing import Callable

import numpy as np

from dpgen_jax import errors
from dpgen_jax.evaluation import auroc, classifier_accuracy, frechet, inception_score
from dpgen_jax.evaluation.context import EvalContext

# Registered metrics (METRICS, below) that also run on tabular rows (scikit-learn classifiers)
TABULAR_METRICS = ("auroc_lr", "auroc_mlp", "auroc_thyroid")
# Metrics computed with a model trained on the PRIVATE training split (the LeNet feature
# extractor): the numbers are not a function of released outputs and public data only,
# so they are not covered by epsilon; eval rows say so ('not_covered_by_epsilon').
USES_PRIVATE_MODEL = ("fid_lenet", "is_lenet")


def _fid(ctx: EvalContext, extractor: str, gen_x) -> float:
  if extractor == "lenet":
    _, fingerprint = ctx.lenet()
    features_fn = ctx.lenet_features
  else:
    features_fn, fingerprint = ctx.inception()
  mu_r, sigma_r = ctx.real_statistics(extractor, features_fn, fingerprint)
  mu_g, sigma_g = frechet.feature_statistics(features_fn(gen_x))
  return frechet.frechet_distance(mu_g, sigma_g, mu_r, sigma_r)


def _seed_average(ctx, name, fn, key) -> dict[str, float]:
  runs = [fn(seed) for seed in ctx.seeds]
  values = np.array([float(r[key]) for r in runs])
  out = {name: float(values.mean())}
  if len(values) > 1:
    out[name + "_std"] = float(values.std())
  return out


# ----------------------------------------------------------------------------------
# The metrics: name -> function(ctx, gen_x, gen_y) -> {name: value, companions...}.

MetricFn = Callable[[EvalContext, np.ndarray, np.ndarray], dict[str, float]]


def _fid_lenet(ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict[str, float]:
  del gen_y
  return {"fid_lenet": _fid(ctx, "lenet", gen_x)}


def _fid_inception(ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict[str, float]:
  del gen_y
  return {"fid_inception": _fid(ctx, "inception", gen_x)}


def _is_lenet(ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict[str, float]:
  del gen_y
  mean, std = inception_score.inception_score(ctx.lenet_proba(gen_x))
  return {"is_lenet": mean, "is_lenet_split_std": std}


def _acc_cnn(ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict[str, float]:
  d, c = ctx.dataset, ctx.config
  num_select = min(5000, len(gen_x) // 12)  # dpgan-revisit: 55k/5k of 60k
  return _seed_average(ctx, "acc_cnn", lambda s: (
      classifier_accuracy.accuracy_at_best_selection_epoch(
          gen_x, gen_y, d.test_x, d.test_y, d.num_classes, seed=s,
          epochs=int(c.get("cnn_epochs", 10)), num_select=num_select)), "accuracy")


def _accuracy_with_early_stopping(name: str, kind: str) -> MetricFn:
  """Metric `name`: `classifier_accuracy.accuracy_with_early_stopping` of `kind`."""
  def metric(ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict[str, float]:
    d, c = ctx.dataset, ctx.config
    kwargs = {}
    if c.get("max_epochs"):
      kwargs["max_epochs"] = int(c.max_epochs)
    if c.get("patience"):
      kwargs["patience"] = int(c.patience)
    return _seed_average(ctx, name, lambda s: classifier_accuracy.accuracy_with_early_stopping(
        kind, gen_x, gen_y, d.test_x, d.test_y, d.num_classes, seed=s, **kwargs), "accuracy")
  return metric


def _micro_auroc(name: str, classifier: str) -> MetricFn:
  """Metric `name`: `auroc.micro_auroc_of_classifiers` of `classifier` ('lr', 'mlp')."""
  def metric(ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict[str, float]:
    d = ctx.dataset
    return _seed_average(ctx, name, lambda s: auroc.micro_auroc_of_classifiers(
        gen_x, gen_y, d.test_x, d.test_y, d.num_classes, seed=s, classifiers=(classifier,)),
        name)
  return metric


def _auroc_thyroid(ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict[str, float]:
  from dpgen_jax.evaluation import tabular
  d, c = ctx.dataset, ctx.config
  return tabular.average_runs([tabular.thyroid_mlp_protocol(
      gen_x, gen_y, d.test_x, d.test_y, d.num_classes, seed=s,
      grid=c.get("thyroid_grid", "upstream")) for s in ctx.seeds])


METRICS: dict[str, MetricFn] = {
    "fid_lenet": _fid_lenet,
    "fid_inception": _fid_inception,
    "acc_cnn": _acc_cnn,
    "acc_logreg": _accuracy_with_early_stopping("acc_logreg", "logreg"),
    "acc_mlp": _accuracy_with_early_stopping("acc_mlp", "mlp"),
    "acc_cnn_sinkhorn": _accuracy_with_early_stopping("acc_cnn_sinkhorn", "cnn"),
    "is_lenet": _is_lenet,
    "auroc_lr": _micro_auroc("auroc_lr", "lr"),
    "auroc_mlp": _micro_auroc("auroc_mlp", "mlp"),
    "auroc_thyroid": _auroc_thyroid,
}
ALL_METRICS = tuple(METRICS)


def validate_metrics(names, kind: str, eval_config) -> None:
  """Raises ConfigError for names not in METRICS, image metrics on tabular data, or
  a metric's missing setting."""
  for name in names:
    errors.require(name in ALL_METRICS,
                   f"Unknown metric {name!r} in eval.metrics; known: {', '.join(ALL_METRICS)}.")
    if kind == "tabular":
      errors.require(name in TABULAR_METRICS,
                     f"Metric {name!r} needs images; tabular data offers {TABULAR_METRICS}.")
  if "auroc_thyroid" in names:
    from dpgen_jax.evaluation import tabular
    grid = eval_config.get("thyroid_grid", "upstream")
    errors.require(grid in tabular.THYROID_GRIDS,
                   f"eval.thyroid_grid must be one of {sorted(tabular.THYROID_GRIDS)}, got "
                   f"{grid!r}.")
  if "fid_inception" in names:
    path = eval_config.get("inception_weights") or ""
    errors.require(bool(path) and os.path.isfile(path),
                   f"fid_inception needs eval.inception_weights, the .npz written by "
                   f"experiments/convert_pytorch_fid_weights.py from pytorch-fid's "
                   f"pt_inception-2015-12-05-6726825d.pth (got {path!r}). Use fid_lenet for "
                   f"an offline FID.")


def compute(name: str, ctx: EvalContext, gen_x: np.ndarray, gen_y: np.ndarray) -> dict:
  """The metric `name` (and its companions, e.g. `_std`) for generated (x, y)."""
  if name not in METRICS:
    raise errors.ConfigError(f"Metric {name!r} is not available for {ctx.dataset.name}.")
  return METRICS[name](ctx, gen_x, gen_y)
