"""Downstream accuracy: train a classifier on generated data, test it on real data.

Two paper protocols (see docs/methods/), named for what they compute:
- `accuracy_at_best_selection_epoch`: dpgan-revisit's CNN protocol
  (`dpgan/eval/acc.py`, dpgan.md §5.3): the epoch is chosen on held-out generated data.
- `accuracy_with_early_stopping`: DP-Sinkhorn's logreg / MLP / CNN protocol
  (`src/train_mnist_classifier.py` `torch_evaluate` as called by `finalize_result.py`,
  dp_sinkhorn.md §5.1): the best weights by a held-out generated split, early stopping.
`average_over_seeds` repeats any such protocol over classifier seeds.

Images are NHWC float32 in [0, 1], labels int32; numpy or jax arrays. Training runs
through `classifier_training`.
"""

from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np

from dpgen_jax.evaluation.classifier_training import (accuracy, torch_adam, torch_sgd,
                                                      train_classifier)
from dpgen_jax.models import classifiers

Array = Any


# ----------------------------------------------------------------------------------
# Accuracy at the epoch chosen on held-out generated data (dpgan-revisit).


def select_epoch(selection_accuracies: Sequence[float]) -> int:
  """0-based index of the best selection accuracy, first one on ties (np.argmax)."""
  return int(np.argmax(np.asarray(selection_accuracies)))


def accuracy_at_best_selection_epoch(gen_x: Array, gen_y: Array, test_x: Array,
                                     test_y: Array, num_classes: int, *, seed: int = 0,
                                     epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                                     num_select: int = 5000, eval_batch_size: int = 256,
                                     ) -> dict[str, Any]:
  """Real test accuracy at the epoch that is best on a held-out generated split.

  Implements dpgan-revisit's downstream CNN accuracy (`dpgan/eval/acc.py`,
  dpgan.md §5.3). Trains `DpganCNN` (Adam lr 1e-3, NLL, batch 64, 10 epochs,
  shuffled, no augmentation, inputs in [0, 1] as upstream) on the first
  len(gen) - num_select generated examples. After every epoch it measures accuracy
  on the last num_select generated examples (model selection) and on the real test
  set. The reported number is the real test accuracy at the epoch with the best
  selection accuracy (first such epoch on ties); real data never influences the
  choice.

  Returns:
    {'accuracy': test accuracy at the selected epoch,
     'selected_epoch': that epoch (1-based),
     'selection_accuracy': per-epoch accuracies on the selection split,
     'test_accuracy': per-epoch real test accuracies,
     'train_loss': per-epoch mean training losses}
  """
  n = len(gen_x)
  if not 0 < num_select < n:
    raise ValueError(f"num_select must be in (0, {n}), got {num_select}.")
  gen_x = jnp.asarray(gen_x, jnp.float32)
  gen_y = jnp.asarray(gen_y, jnp.int32)
  test_x, test_y = jnp.asarray(test_x, jnp.float32), jnp.asarray(test_y, jnp.int32)
  sel_x, sel_y = gen_x[n - num_select:], gen_y[n - num_select:]
  model = classifiers.DpganCNN(num_classes)
  sel_acc, test_acc = [], []

  def record(epoch, variables, loss):
    del epoch, loss
    sel_acc.append(accuracy(model, variables, sel_x, sel_y, eval_batch_size))
    test_acc.append(accuracy(model, variables, test_x, test_y, eval_batch_size))

  _, losses = train_classifier(model, gen_x[:n - num_select], gen_y[:n - num_select],
                               epochs=epochs, batch_size=batch_size, optimizer=torch_adam(lr),
                               seed=seed, on_epoch_end=record)
  best = select_epoch(sel_acc)
  return {"accuracy": test_acc[best], "selected_epoch": best + 1,
          "selection_accuracy": sel_acc, "test_accuracy": test_acc, "train_loss": losses}


# ----------------------------------------------------------------------------------
# Accuracy of the best weights under early stopping (DP-Sinkhorn).

# kind -> (model class, optimizer, max epochs, patience), from DP-Sinkhorn's
# finalize_result.py and torch_evaluate.
_SINKHORN_SETUPS = {
    "logreg": (classifiers.LogReg, lambda: torch_adam(1e-4, 1e-6), 300, 10),
    "mlp": (classifiers.MLP, lambda: torch_adam(1e-4, 1e-6), 300, 30),
    "cnn": (classifiers.SinkhornCNN, lambda: torch_sgd(1e-3), 500, 60),
}


class EarlyStopping:
  """DP-Sinkhorn's rule: keep the best weights; stop after `patience` bad epochs.

  An epoch improves if its value is strictly larger than the best so far (the
  first epoch always does); `update` returns True once `patience` consecutive
  epochs have not improved.
  """

  def __init__(self, patience: int):
    self.patience = patience
    self.best_value, self.best_epoch, self.best_variables = -np.inf, 0, None
    self.epochs_since_best = 0

  def update(self, epoch: int, value: float, variables: Any = None) -> bool:
    if value > self.best_value or self.best_epoch == 0:
      self.best_value, self.best_epoch, self.best_variables = value, epoch, variables
      self.epochs_since_best = 0
    else:
      self.epochs_since_best += 1
    return self.epochs_since_best >= self.patience


def accuracy_with_early_stopping(kind: str, gen_x: Array, gen_y: Array, test_x: Array,
                                 test_y: Array, num_classes: int, *, seed: int = 0,
                                 max_epochs: int | None = None, patience: int | None = None,
                                 batch_size: int = 512, eval_batch_size: int = 512,
                                 ) -> dict[str, Any]:
  """Real test accuracy of the weights that are best on a held-out generated split.

  Implements DP-Sinkhorn's classifier accuracy (`torch_evaluate`, dp_sinkhorn.md
  §5.1). Inputs are mapped to [-1, 1] (2x - 1) for generated and real images. The
  first int(0.9 N) generated examples train (shuffled, batch 512), the remaining
  10% validate. After every epoch the validation accuracy is
  measured; an epoch improves if it beats the best so far strictly (the first epoch
  always does); the best weights are kept, and training stops once `patience`
  epochs in a row have not improved (`EarlyStopping`). The restored best model is
  tested on the real test set.
  - 'logreg': Linear(D -> K); Adam lr 1e-4, weight decay 1e-6 (L2 in the gradient,
    as torch.optim.Adam), <= 300 epochs, patience 10.
  - 'mlp': Linear(D -> 100) -> ReLU -> Linear(100 -> K); same optimiser, patience 30.
  - 'cnn': `SinkhornCNN`; SGD lr 1e-3 without momentum, <= 500 epochs, patience 60.
  `max_epochs` / `patience` override the upstream values (for quick runs). The
  background thresholding upstream applies first is
  `postprocessing.threshold_background`.

  Returns:
    {'accuracy': real test accuracy of the restored model, 'best_epoch' (1-based),
     'best_val_accuracy', 'epochs_run', 'val_accuracy': per-epoch curve,
     'train_loss': per-epoch mean losses}
  """
  if kind not in _SINKHORN_SETUPS:
    raise ValueError(f"kind must be one of {sorted(_SINKHORN_SETUPS)}, got {kind!r}.")
  model_cls, make_optimizer, default_epochs, default_patience = _SINKHORN_SETUPS[kind]
  max_epochs = default_epochs if max_epochs is None else max_epochs
  patience = default_patience if patience is None else patience
  x = jnp.asarray(gen_x, jnp.float32) * 2.0 - 1.0
  y = jnp.asarray(gen_y, jnp.int32)
  n_train = int(x.shape[0] * 0.9)
  val_x, val_y = x[n_train:], y[n_train:]
  model = model_cls(num_classes)
  stopper = EarlyStopping(patience)
  val_curve = []

  def early_stop(epoch, variables, loss):
    del loss
    val_curve.append(accuracy(model, variables, val_x, val_y, eval_batch_size))
    return stopper.update(epoch, val_curve[-1], variables)

  _, losses = train_classifier(model, x[:n_train], y[:n_train], epochs=max_epochs,
                               batch_size=batch_size, optimizer=make_optimizer(), seed=seed,
                               on_epoch_end=early_stop)
  test = jnp.asarray(test_x, jnp.float32) * 2.0 - 1.0
  test_acc = accuracy(model, stopper.best_variables, test, test_y, eval_batch_size)
  return {"accuracy": test_acc, "best_epoch": stopper.best_epoch,
          "best_val_accuracy": stopper.best_value, "epochs_run": len(val_curve),
          "val_accuracy": val_curve, "train_loss": losses}


# ----------------------------------------------------------------------------------
# Averaging over seeds.


def average_over_seeds(metric_fn: Callable[..., dict[str, Any]], seeds: Sequence[int],
                       *args: Any, **kwargs: Any) -> dict[str, Any]:
  """Runs `metric_fn(*args, seed=s, **kwargs)` for every seed; averages scalars.

  Every int/float entry of the returned dicts is averaged. std is the population
  standard deviation (numpy's default, ddof=0) across seeds.

  Returns:
    {'mean': {name: mean}, 'std': {name: std}, 'seeds': list, 'runs': list of dicts}
  """
  runs = [metric_fn(*args, seed=s, **kwargs) for s in seeds]
  names = [k for k, v in runs[0].items()
           if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)]
  values = {k: np.array([float(r[k]) for r in runs]) for k in names}
  return {"mean": {k: float(v.mean()) for k, v in values.items()},
          "std": {k: float(v.std()) for k, v in values.items()},
          "seeds": list(seeds), "runs": runs}
