"""Tests of the downstream accuracy protocols (train on generated, test on real)."""

import numpy as np
import pytest

from dpgen_jax.evaluation import classifier_accuracy as ca
from tests.evaluation.classifier_helpers import to_28


def test_accuracy_at_best_selection_epoch_real_vs_noise(digits):
  train_x, train_y, test_x, test_y = digits
  real = ca.accuracy_at_best_selection_epoch(train_x, train_y, test_x, test_y, 10, epochs=4,
                                             num_select=300)
  assert real["accuracy"] > 0.9
  assert len(real["selection_accuracy"]) == len(real["test_accuracy"]) == 4
  best = ca.select_epoch(real["selection_accuracy"])
  assert real["selected_epoch"] == best + 1
  assert real["accuracy"] == real["test_accuracy"][best]
  rng = np.random.default_rng(0)
  noise_x = rng.uniform(size=train_x.shape).astype(np.float32)
  noise_y = rng.integers(0, 10, size=len(train_x))
  noise = ca.accuracy_at_best_selection_epoch(noise_x, noise_y, test_x, test_y, 10, epochs=4,
                                              num_select=300)
  assert noise["accuracy"] < 0.2


def test_select_epoch_first_best_on_ties():
  assert ca.select_epoch([0.80, 0.91, 0.95, 0.95, 0.93]) == 2
  assert ca.select_epoch([0.5]) == 0


def test_early_stopping_rule():
  stopper = ca.EarlyStopping(patience=2)
  curve = [0.5, 0.6, 0.6, 0.7, 0.65, 0.7, 0.9]
  stops = [stopper.update(e, a, f"w{e}") for e, a in enumerate(curve, start=1)]
  # 0.6 at epoch 3 and 0.7 at epoch 6 do not beat the best strictly.
  assert stops == [False, False, False, False, False, True, False]
  assert stopper.best_epoch == 7 and stopper.best_variables == "w7"
  first = ca.EarlyStopping(patience=1)
  assert first.update(1, 0.0) is False and first.best_epoch == 1  # epoch 1 always counts
  assert first.update(2, 0.0) is True and first.best_epoch == 1


def test_accuracy_with_early_stopping_logreg_and_mlp(digits):
  # 28x28 inputs: with 784 features Adam at lr 1e-4 converges in tens of epochs.
  train_x, train_y, test_x, test_y = to_28(digits[0]), digits[1], to_28(digits[2]), digits[3]
  for kind in ("logreg", "mlp"):
    result = ca.accuracy_with_early_stopping(kind, train_x, train_y, test_x, test_y, 10,
                                             max_epochs=60)
    assert result["accuracy"] > 0.85, (kind, result["accuracy"])
    assert result["epochs_run"] == len(result["val_accuracy"]) <= 60
    assert result["best_val_accuracy"] == max(result["val_accuracy"])
  with pytest.raises(ValueError):
    ca.accuracy_with_early_stopping("svm", train_x, train_y, test_x, test_y, 10)


def test_accuracy_with_early_stopping_cnn_runs(digits):
  train_x, train_y, test_x, test_y = digits
  result = ca.accuracy_with_early_stopping("cnn", to_28(train_x[:300]), train_y[:300],
                                           to_28(test_x[:100]), test_y[:100], 10,
                                           max_epochs=2, patience=1)
  assert 1 <= result["epochs_run"] <= 2 and 0.0 <= result["accuracy"] <= 1.0


def test_average_over_seeds():
  def metric(scale, *, seed):
    return {"accuracy": scale * seed, "curve": [seed], "name": "x", "flag": True}

  out = ca.average_over_seeds(metric, [1, 2, 3], 0.1)
  assert out["mean"] == {"accuracy": pytest.approx(0.2)}
  assert out["std"]["accuracy"] == pytest.approx(np.std([0.1, 0.2, 0.3]))
  assert out["seeds"] == [1, 2, 3] and len(out["runs"]) == 3
