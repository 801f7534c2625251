"""The metric registry: its names, their validation and the dispatch of `compute`."""

import types

import ml_collections
import numpy as np
import pytest

from dpgen_jax import errors
from dpgen_jax.evaluation import auroc, classifier_accuracy, metrics

# The names configs use (eval.metrics) and the eval job records: they must not change.
CONFIG_NAMES = ("fid_lenet", "fid_inception", "acc_cnn", "acc_logreg", "acc_mlp",
                "acc_cnn_sinkhorn", "is_lenet", "auroc_lr", "auroc_mlp", "auroc_thyroid")
NOT_METRICS = ("fid_resnet", "fid", "acc", "acc_svm", "auroc", "auroc_svm", "is_inception",
               "FID_LENET", "fid_lenet ", "")


def _eval_config(tmp_path, **values):
  weights = tmp_path / "inception.npz"  # validate_metrics only checks that it exists
  weights.write_bytes(b"")
  return ml_collections.ConfigDict({"cache_dir": str(tmp_path), "seeds": (0,),
                                    "inception_weights": str(weights),
                                    "thyroid_grid": "upstream", **values})


def _accepted(names, kind, eval_config):
  accepted = set()
  for name in names:
    try:
      metrics.validate_metrics((name,), kind, eval_config)
    except errors.ConfigError:
      continue
    accepted.add(name)
  return accepted


def test_registry_covers_exactly_the_names_validate_metrics_accepts(tmp_path):
  e = _eval_config(tmp_path)
  assert tuple(metrics.METRICS) == metrics.ALL_METRICS == CONFIG_NAMES
  candidates = CONFIG_NAMES + NOT_METRICS
  assert _accepted(candidates, "image", e) == set(metrics.METRICS)
  assert _accepted(candidates, "tabular", e) == set(metrics.TABULAR_METRICS)
  assert set(metrics.TABULAR_METRICS) <= set(metrics.METRICS)
  assert set(metrics.USES_PRIVATE_MODEL) <= set(metrics.METRICS)
  assert all(callable(fn) for fn in metrics.METRICS.values())


def test_validate_metrics_errors_are_clear(tmp_path):
  e = _eval_config(tmp_path)
  with pytest.raises(errors.ConfigError, match="Unknown metric 'fid_resnet' in eval.metrics; "
                     "known: fid_lenet, fid_inception, acc_cnn"):
    metrics.validate_metrics(("fid_lenet", "fid_resnet"), "image", e)
  with pytest.raises(errors.ConfigError, match="Metric 'fid_lenet' needs images"):
    metrics.validate_metrics(("auroc_lr", "fid_lenet"), "tabular", e)
  with pytest.raises(errors.ConfigError, match="eval.thyroid_grid must be one of"):
    metrics.validate_metrics(("auroc_thyroid",), "tabular", _eval_config(
        tmp_path, thyroid_grid="huge"))
  with pytest.raises(errors.ConfigError, match="fid_inception needs eval.inception_weights"):
    metrics.validate_metrics(("fid_inception",), "image", _eval_config(
        tmp_path, inception_weights=""))


def _context(tmp_path, digits, **values):
  dataset = types.SimpleNamespace(name="digits", test_x=digits[2], test_y=digits[3],
                                  num_classes=10)
  return metrics.EvalContext(dataset, _eval_config(tmp_path, **values))


def test_compute_dispatches_through_the_registry(tmp_path, digits, monkeypatch):
  ctx = _context(tmp_path, digits)
  calls = []
  monkeypatch.setitem(metrics.METRICS, "fid_lenet",
                      lambda *args: calls.append(args) or {"fid_lenet": 1.5})
  assert metrics.compute("fid_lenet", ctx, digits[0], digits[1]) == {"fid_lenet": 1.5}
  assert len(calls) == 1 and calls[0][0] is ctx and calls[0][1] is digits[0]
  with pytest.raises(errors.ConfigError, match="'fid_resnet' is not available for digits"):
    metrics.compute("fid_resnet", ctx, digits[0], digits[1])


def test_auroc_metric_averages_the_protocol_over_seeds(tmp_path, digits):
  ctx = _context(tmp_path, digits, seeds=(2, 3))
  gen_x, gen_y = digits[0][:300], digits[1][:300]
  out = metrics.compute("auroc_lr", ctx, gen_x, gen_y)
  runs = [auroc.micro_auroc_of_classifiers(gen_x, gen_y, digits[2], digits[3], 10, seed=s,
                                           classifiers=("lr",))["auroc_lr"] for s in (2, 3)]
  assert out == {"auroc_lr": float(np.mean(runs)), "auroc_lr_std": float(np.std(runs))}


def test_acc_cnn_metric_is_the_best_selection_epoch_protocol(tmp_path, digits):
  ctx = _context(tmp_path, digits, cnn_epochs=1)
  gen_x, gen_y = digits[0][:600], digits[1][:600]
  out = metrics.compute("acc_cnn", ctx, gen_x, gen_y)
  direct = classifier_accuracy.accuracy_at_best_selection_epoch(
      gen_x, gen_y, digits[2], digits[3], 10, seed=0, epochs=1, num_select=600 // 12)
  assert out == {"acc_cnn": direct["accuracy"]}  # one seed: no _std companion
