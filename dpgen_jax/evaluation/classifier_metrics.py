"""Downstream-classifier metrics: train on generated data, test on real data.

Protocols reproduced (see docs/methods/):
- `dpgan_cnn_accuracy`: dpgan-revisit `dpgan/eval/acc.py` (dpgan.md §5.3).
- `sinkhorn_protocol_accuracy`: DP-Sinkhorn `src/train_mnist_classifier.py`
  `torch_evaluate` as called by `finalize_result.py` (dp_sinkhorn.md §5.1).
- `dpcgan_auroc`: the DP-CGAN notebook's scikit-learn OvR classifiers and
  micro-averaged AUROC (dpcgan.md §5.1).
- `inception_score`: GS-WGAN `evaluation/eval_mnist_inception_score.py` (gswgan.md §5.3).

Images are NHWC float32 in [0, 1], labels int32; numpy or jax arrays. The JAX
training loop (`train_classifier`) runs one jit-compiled `lax.scan` per epoch over
the minibatches of an on-device permutation: no host transfer per step.
"""

import functools
import warnings
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special
import sklearn.exceptions
import sklearn.linear_model
import sklearn.metrics
import sklearn.multiclass
import sklearn.neural_network
import threadpoolctl

from dpgen_jax.models import classifiers

Array = Any
Variables = dict[str, Any]


# ----------------------------------------------------------------------------------
# Generic training and batched evaluation.


def _as_variables(params_or_variables: Any) -> Variables:
  """Accepts a params pytree or a full Flax variables dict {'params': ..., ...}."""
  if isinstance(params_or_variables, dict) and "params" in params_or_variables:
    return dict(params_or_variables)
  return {"params": params_or_variables}


def _loss_and_state(model, params, state, x, y, dropout_key):
  """Mean softmax cross-entropy (= log-softmax + NLL) and updated model state."""
  mutable = list(state.keys())
  out = model.apply({"params": params, **state}, x, train=True,
                    rngs={"dropout": dropout_key}, mutable=mutable or False)
  logits, new_state = out if mutable else (out, {})
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss, dict(new_state)


@functools.partial(jax.jit, static_argnames=("model", "optimizer", "batch_size"))
def _train_epoch(model, optimizer, batch_size, carry, x, y, key):
  """One epoch over a fresh permutation: scan over full batches, then the remainder.

  Like a PyTorch DataLoader with shuffle=True, drop_last=False: the last, smaller
  batch is a separate (statically shaped) step, so every example is used once and
  its batch mean is over real examples only (no padding that could touch BatchNorm
  statistics).
  """
  n = x.shape[0]
  perm_key, dropout_key = jax.random.split(key)
  perm = jax.random.permutation(perm_key, n)
  num_full = n // batch_size
  grad_fn = jax.value_and_grad(functools.partial(_loss_and_state, model), has_aux=True)

  def step(carry, inputs):
    params, state, opt_state = carry
    idx, i = inputs
    (loss, state), grads = grad_fn(params, state, jnp.take(x, idx, axis=0),
                                   jnp.take(y, idx, axis=0),
                                   jax.random.fold_in(dropout_key, i))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), state, opt_state), loss

  full = perm[: num_full * batch_size].reshape(num_full, batch_size)
  carry, losses = jax.lax.scan(step, carry, (full, jnp.arange(num_full)))
  if n % batch_size:
    carry, last = step(carry, (perm[num_full * batch_size:], jnp.asarray(num_full)))
    losses = jnp.concatenate([losses, last[None]])
  return carry, losses.mean()


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _predict_logits(model, variables, x, batch_size):
  n = x.shape[0]
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  xb = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
  xb = xb.reshape((num_batches, batch_size) + x.shape[1:])
  logits = jax.lax.map(lambda b: model.apply(variables, b, train=False), xb)
  return logits.reshape((num_batches * batch_size, -1))[:n]


def predict_logits(model: nn.Module, params: Any, x: Array, batch_size: int = 256) -> jax.Array:
  """Logits (N, K) of `model` in eval mode (no dropout), batched under one jit."""
  return _predict_logits(model, _as_variables(params), jnp.asarray(x, jnp.float32), batch_size)


def predict_proba(model: nn.Module, params: Any, x: Array, batch_size: int = 256) -> np.ndarray:
  """Softmax class probabilities (N, K) as a float64 numpy array."""
  logits = predict_logits(model, params, x, batch_size)
  return np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), np.float64)


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _count_correct(model, variables, x, y, batch_size):
  logits = _predict_logits(model, variables, x, batch_size)
  return jnp.sum(jnp.argmax(logits, axis=-1) == y)


def accuracy(model: nn.Module, params: Any, x: Array, y: Array, batch_size: int = 256) -> float:
  """Fraction of argmax predictions equal to y, computed on device."""
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
  return float(_count_correct(model, _as_variables(params), x, y, batch_size)) / x.shape[0]


@functools.lru_cache(maxsize=None)
def _jitted_init(model: nn.Module) -> Callable[..., Variables]:
  # Eager `model.init` compiles every small op separately (seconds on CPU).
  return jax.jit(functools.partial(model.init, train=False))


def train_classifier(model: nn.Module, train_x: Array, train_y: Array, *, epochs: int,
                     batch_size: int, optimizer: optax.GradientTransformation, seed: int,
                     init_variables: Variables | None = None,
                     on_epoch_end: Callable[[int, Variables, float], bool | None] | None = None,
                     ) -> tuple[Variables, list[float]]:
  """Trains `model` with softmax cross-entropy on (train_x, train_y).

  Each epoch is one call of a jitted `lax.scan` over a fresh random permutation
  (minibatches gathered on device; the last partial batch is kept, as PyTorch's
  default DataLoader does). Dropout keys are folded from the seed, the epoch and the
  step. Non-'params' collections (e.g. batch_stats) are treated as mutable state.
  `optimizer` should be built once and reused (e.g. via a cached factory) so that
  repeated calls hit the compilation cache.

  Args:
    model: a Flax module called as `model(x, train=...)` returning logits.
    train_x, train_y: (N, ...) float inputs and (N,) int labels.
    epochs: maximum number of epochs.
    batch_size: minibatch size.
    optimizer: an optax transformation.
    seed: seeds initialisation, shuffling and dropout.
    init_variables: start from these instead of `model.init`.
    on_epoch_end: called as `on_epoch_end(epoch, variables, mean_train_loss)` after
      every epoch (epoch counts from 1); returning True stops training.

  Returns:
    (variables after the last epoch run, mean training loss of every epoch run).
  """
  x = jnp.asarray(train_x, jnp.float32)
  y = jnp.asarray(train_y, jnp.int32)
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = init_variables
  if variables is None:
    variables = _jitted_init(model)(init_key, x[:1])
  variables = dict(variables)
  params = variables.pop("params")
  carry = (params, variables, optimizer.init(params))
  losses = []
  for epoch in range(1, epochs + 1):
    carry, loss = _train_epoch(model, optimizer, batch_size, carry, x, y,
                               jax.random.fold_in(train_key, epoch))
    losses.append(float(loss))
    if on_epoch_end is not None and on_epoch_end(epoch, {"params": carry[0], **carry[1]},
                                                 losses[-1]):
      break
  return {"params": carry[0], **carry[1]}, losses


# The factories are cached: the optimizer is a static jit argument of the epoch,
# so returning the same object lets repeated protocol calls reuse compiled code.
@functools.lru_cache(maxsize=None)
def torch_adam(lr: float, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """torch.optim.Adam(lr, weight_decay=wd): L2 term wd * w added to the gradient
  before the Adam moments (not decoupled AdamW); betas (0.9, 0.999), eps 1e-8."""
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
  return optax.adam(lr)


@functools.lru_cache(maxsize=None)
def torch_sgd(lr: float) -> optax.GradientTransformation:
  """torch.optim.SGD(lr) without momentum or weight decay."""
  return optax.sgd(lr)


# ----------------------------------------------------------------------------------
# dpgan-revisit (dpgan.md §5.3).


def select_epoch(selection_accuracies: Sequence[float]) -> int:
  """0-based index of the best selection accuracy, first one on ties (np.argmax)."""
  return int(np.argmax(np.asarray(selection_accuracies)))


def dpgan_cnn_accuracy(gen_x: Array, gen_y: Array, test_x: Array, test_y: Array,
                       num_classes: int, *, seed: int = 0, epochs: int = 10,
                       batch_size: int = 64, lr: float = 1e-3, num_select: int = 5000,
                       eval_batch_size: int = 256) -> dict[str, Any]:
  """dpgan-revisit's downstream accuracy (`dpgan/eval/acc.py`, dpgan.md §5.3).

  Trains `DpganCNN` (Adam lr 1e-3, NLL, batch 64, 10 epochs, shuffled, no
  augmentation, inputs in [0, 1] as upstream) on the first len(gen) - num_select
  generated examples. After every epoch it measures accuracy on the last
  num_select generated examples (model selection) and on the real test set. The
  reported number is the real test accuracy at the epoch with the best selection
  accuracy (first such epoch on ties); real data never influences the choice.

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
# DP-Sinkhorn (dp_sinkhorn.md §5.1).

# kind -> (model class, optimizer, max epochs, patience), from finalize_result.py
# and torch_evaluate.
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


def threshold_background(images: Array) -> Array:
  """DP-Sinkhorn's post-processing: pixels below mid-grey become black.

  Upstream sets every negative pixel of the [-1, 1] generated images to -1 before
  all metrics (classifiers and FID); in [0, 1] that is x < 0.5 -> 0. Apply it to
  the generated images once, before every metric, when reproducing DP-Sinkhorn.
  """
  return jnp.where(jnp.asarray(images) < 0.5, 0.0, jnp.asarray(images))


def sinkhorn_protocol_accuracy(kind: str, gen_x: Array, gen_y: Array, test_x: Array,
                               test_y: Array, num_classes: int, *, seed: int = 0,
                               max_epochs: int | None = None, patience: int | None = None,
                               batch_size: int = 512, eval_batch_size: int = 512,
                               ) -> dict[str, Any]:
  """DP-Sinkhorn's classifier accuracy (`torch_evaluate`, dp_sinkhorn.md §5.1).

  Inputs are mapped to [-1, 1] (2x - 1) for generated and real images. The first
  int(0.9 N) generated examples train (shuffled, batch 512), the remaining 10%
  validate. After every epoch the validation accuracy is measured; an epoch
  improves if it beats the best so far strictly (the first epoch always does); the
  best weights are kept, and training stops once `patience` epochs in a row have
  not improved. The restored best model is tested on the real test set.
  - 'logreg': Linear(D -> K); Adam lr 1e-4, weight decay 1e-6 (L2 in the gradient,
    as torch.optim.Adam), <= 300 epochs, patience 10.
  - 'mlp': Linear(D -> 100) -> ReLU -> Linear(100 -> K); same optimiser, patience 30.
  - 'cnn': `SinkhornCNN`; SGD lr 1e-3 without momentum, <= 500 epochs, patience 60.
  `max_epochs` / `patience` override the upstream values (for quick runs). The
  background thresholding upstream applies first is `threshold_background`.

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


# ----------------------------------------------------------------------------------
# AUROC (DP-CGAN, dpcgan.md §5.1).


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


def dpcgan_auroc(gen_x: Array, gen_y: Array, test_x: Array, test_y: Array,
                 num_classes: int = 10, *, seed: int = 2, n_jobs: int | None = None,
                 blas_threads: int | None = 1,
                 classifiers: Sequence[str] = ("lr", "mlp")) -> dict[str, Any]:
  """DP-CGAN's utility metric: scikit-learn OvR classifiers, micro-AUROC on real data.

  Runs the upstream protocol itself (scikit-learn, as the DP-CGAN notebook does,
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


# ----------------------------------------------------------------------------------
# Inception Score (GS-WGAN, gswgan.md §5.3).


def inception_score(probs: Array, splits: int = 10) -> tuple[float, float]:
  """Inception Score from (N, K) class probabilities of a domain classifier.

  As GS-WGAN's `get_inception_score`: the rows are cut into `splits` consecutive
  parts [i N // splits, (i + 1) N // splits); per part IS = exp(mean_x KL(p(y|x) ||
  p_part(y))) with p_part the part's mean prediction; returns (mean, std) over the
  parts (std with ddof=0). Float64; 0 log 0 is taken as 0 (upstream would give NaN).
  Upstream's classifier is a VGG11-BN trained on real MNIST, fed 60k generated
  samples in a random order; any classifier's softmax can be passed here, but the
  score is only comparable across runs that used the same classifier.
  """
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or p.shape[0] < splits:
    raise ValueError(f"probs must be (N >= splits, K), got shape {p.shape}.")
  n = p.shape[0]
  scores = []
  for i in range(splits):
    part = p[i * n // splits:(i + 1) * n // splits]
    kl = scipy.special.rel_entr(part, part.mean(axis=0, keepdims=True)).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
