"""Training and evaluating a Flax classifier: the engine of the downstream protocols.

`train_classifier` runs one jit-compiled `lax.scan` per epoch over the minibatches of
an on-device permutation (no host transfer per step); `predict_logits`,
`predict_proba` and `accuracy` evaluate in batches under one jit. `torch_adam` and
`torch_sgd` build the optax equivalents of the PyTorch optimisers the upstream
protocols use. The protocols themselves are in `classifier_accuracy`.

Images are NHWC float32, labels int32; numpy or jax arrays.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = Any
Variables = dict[str, Any]


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
