"""Per-example clipping: bounds, clip factors, and the reference clipped sum ('vmap').

The strategies are dispatched, microbatched and sharded by privacy/sums.py
(`clipped_grad_sum`); ghost.py is the faster exact strategy.

Guarantee. For a batch with mask m (True = real example) a strategy returns

    S = sum_i m_i * clip(g_i),   g_i = grad_params per_example_loss(params, example_i),

where clip scales g_i so that ||clip(g_i)||_2 <= C (flat clipping) or, per layer,
||clip(g_i)_l||_2 <= C_l for every parameter leaf l, hence ||clip(g_i)||_2 <= C_tot =
sqrt(sum_l C_l^2). Adding or removing one example therefore moves S by at most C
(flat) or C_tot (per layer) in L2 norm, whatever the other examples and however the
batch is chunked. Padding rows (m_i = False) contribute exactly zero: their gradient
is multiplied by 0 and an all-padding chunk is not computed at all.

Clip factor: min(1, C / (||g|| + norm_eps)), norm_eps = 1e-6 as Opacus (the bound
holds for any norm_eps >= 0).

Strategies (same result up to float rounding; see sums.STRATEGIES):
  'vmap'   jax.vmap of jax.grad over examples (the reference; any loss).
  'ghost'  ghost.py: per-example norms of nn.Dense / nn.Conv gradients from their
           inputs and output gradients (no per-example gradients), then the clipped
           sum as one reweighted product per layer; other parameterised Flax modules
           get exact per-example gradients of that module only. The loss must reach
           every parameter through Flax module calls (else GhostClippingError).
The microbatched form (sums.clipped_grad_sum's `microbatch_size`) runs the strategy over
physical chunks with lax.scan and accumulates the sum, so memory is bounded by one chunk.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any
# per_example_loss(params, example) -> scalar, or (scalar, aux) with has_aux=True.
# `example` is one example: the batch pytree with its leading axis removed.
PerExampleLoss = Callable[[PyTree, PyTree], Any]


@dataclasses.dataclass(frozen=True)
class ClippingSpec:
  """How per-example gradients are bounded.

  Attributes:
    clip_norm: the flat bound C (used when `per_layer_bounds` is None).
    per_layer_bounds: optional pytree with the structure of the parameters holding
      one bound C_l per leaf; then the sensitivity is sqrt(sum_l C_l^2).
    norm_eps: added to the norm in the clip factor (Opacus uses 1e-6).
  """
  clip_norm: float = 1.0
  per_layer_bounds: PyTree | None = None
  norm_eps: float = 1e-6

  @property
  def sensitivity(self) -> float:
    """L2 bound of one example's clipped gradient (add/remove-one sensitivity of S)."""
    if self.per_layer_bounds is None:
      return float(self.clip_norm)
    leaves = jax.tree.leaves(self.per_layer_bounds)
    return float(sum(float(c) ** 2 for c in leaves) ** 0.5)


def equal_per_layer_bounds(params: PyTree, total: float) -> PyTree:
  """Per-leaf bounds total/sqrt(P) for P leaves, so their L2 norm is `total`."""
  leaves = jax.tree.leaves(params)
  bound = total / len(leaves) ** 0.5
  return jax.tree.map(lambda _: bound, params)


def global_norm(tree: PyTree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree.leaves(tree)))


def clip_factor(norm: jax.Array, bound: float | jax.Array, norm_eps: float) -> jax.Array:
  return jnp.minimum(1.0, bound / (norm + norm_eps))


def clip_gradient(grad: PyTree, spec: ClippingSpec) -> tuple[PyTree, jax.Array]:
  """Clips one example's gradient; returns (clipped, norm before clipping)."""
  norm = global_norm(grad)
  if spec.per_layer_bounds is None:
    factor = clip_factor(norm, spec.clip_norm, spec.norm_eps)
    return jax.tree.map(lambda g: g * factor.astype(g.dtype), grad), norm
  clipped = jax.tree.map(
      lambda g, c: g * clip_factor(jnp.sqrt(jnp.sum(jnp.square(g))), c,
                                   spec.norm_eps).astype(g.dtype),
      grad, spec.per_layer_bounds)
  return clipped, norm


def vmap_clipped_sum(loss_fn: PerExampleLoss, params: PyTree, batch: PyTree, mask: jax.Array,
                   spec: ClippingSpec, has_aux: bool):
  """Reference strategy: materialise per-example gradients with vmap(grad)."""
  grad_fn = jax.grad(loss_fn, has_aux=has_aux)

  def one(example, keep):
    if has_aux:
      g, aux = grad_fn(params, example)
    else:
      g, aux = grad_fn(params, example), None
    clipped, norm = clip_gradient(g, spec)
    # where, not multiply: a padding row must give exactly 0 even if its gradient is inf.
    return jax.tree.map(lambda x: jnp.where(keep, x, 0), clipped), norm, aux

  clipped, norms, aux = jax.vmap(one)(batch, mask)
  total = jax.tree.map(lambda x: jnp.sum(x, axis=0), clipped)
  return total, norms, aux
