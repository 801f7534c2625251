"""Clipped gradient sums: strategy dispatch, physical microbatches, device sharding and
clipped group means. The sensitivity-bounding half of every DP-SGD step here.

  clipped_grad_sum          S = sum_i m_i clip(g_i) with a strategy of STRATEGIES ('vmap',
                            the reference; 'ghost', the same sum without materialising
                            per-example gradients), optionally in lax.scan chunks;
  sharded_clipped_grad_sum  the same split over a mesh's 'data' axis (psum of the
                            per-device sums);
  clipped_group_sum         S = sum_j clip(mean gradient of group j): microbatched DP-SGD.

Guarantees are stated in clipping.py (per example) and on `clipped_group_sum` (groups).
Padding rows (mask False) contribute exactly zero everywhere. Noise is never added here:
a mechanism (mechanisms.py) noises the sum once, after any cross-device reduction.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from dpgen_jax.privacy import clipping, ghost

PyTree = Any
DATA_AXIS = "data"  # the mesh axis examples are split over (dpgen_jax/parallel.py)

STRATEGIES = {"vmap": clipping.vmap_clipped_sum, "ghost": ghost.ghost_clipped_sum}


def clipped_grad_sum(per_example_loss: clipping.PerExampleLoss, params: PyTree, batch: PyTree,
                     mask: jax.Array, spec: clipping.ClippingSpec, *,
                     microbatch_size: int | None = None, strategy: str = "vmap",
                     has_aux: bool = False):
  """Returns (S, per_example_norms, aux) with S the masked sum of clipped gradients.

  Args:
    per_example_loss: loss of one example (see `clipping.PerExampleLoss`).
    params: the parameters to differentiate.
    batch: pytree of arrays with a leading batch axis B (padded).
    mask: bool[B], True for real examples; False rows contribute exactly zero.
    spec: clipping bounds.
    microbatch_size: if set and smaller than B, process chunks of this size with
      lax.scan (B must be a multiple of it); same S up to float rounding.
    strategy: a key of STRATEGIES.
    has_aux: per_example_loss returns (loss, aux); aux is returned stacked per example
      (no DP guarantee: it is computed from raw private data).

  Returns:
    S (params-shaped), the unclipped per-example gradient norms (B,) (0 for padding
    rows that were skipped; 'ghost' reports 0 for every padding row) and the stacked
    aux (None without has_aux).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown clipping strategy {strategy!r}; known: {sorted(STRATEGIES)}")
  run = STRATEGIES[strategy]
  batch_size = mask.shape[0]
  if not microbatch_size or microbatch_size >= batch_size:
    return run(per_example_loss, params, batch, mask, spec, has_aux)
  if batch_size % microbatch_size:
    raise ValueError(f"batch size {batch_size} is not a multiple of microbatch size "
                     f"{microbatch_size}")
  num_chunks = batch_size // microbatch_size
  chunked = jax.tree.map(lambda x: x.reshape((num_chunks, microbatch_size) + x.shape[1:]),
                         (batch, mask))
  zero = jax.tree.map(jnp.zeros_like, params)
  aux_shape = None
  if has_aux:
    first = jax.tree.map(lambda x: x[0], chunked)
    aux_shape = jax.eval_shape(lambda b, m: run(per_example_loss, params, b, m, spec,
                                                has_aux)[2], *first)

  def body(acc, chunk):
    chunk_batch, chunk_mask = chunk

    def compute(_):
      return run(per_example_loss, params, chunk_batch, chunk_mask, spec, has_aux)

    def skip(_):
      aux = None if aux_shape is None else jax.tree.map(
          lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)
      return zero, jnp.zeros((microbatch_size,), jnp.float32), aux

    total, norms, aux = jax.lax.cond(jnp.any(chunk_mask), compute, skip, None)
    return jax.tree.map(jnp.add, acc, total), (norms, aux)

  total, (norms, aux) = jax.lax.scan(body, zero, chunked)
  flat = lambda x: x.reshape((batch_size,) + x.shape[2:])
  return total, flat(norms), (None if aux is None else jax.tree.map(flat, aux))


def split_multiple(mesh: jax.sharding.Mesh | None, microbatch_size: int | None) -> int:
  """Rows a batch must be a multiple of to split over `mesh`'s devices (none: one) in
  microbatches of `microbatch_size` (None: one pass)."""
  return (mesh.size if mesh is not None else 1) * (microbatch_size or 1)


def sharded_clipped_grad_sum(mesh: jax.sharding.Mesh | None,
                             per_example_loss: clipping.PerExampleLoss, params: PyTree,
                             batch: PyTree, mask: jax.Array, spec: clipping.ClippingSpec, *,
                             microbatch_size: int | None = None, strategy: str = "vmap",
                             has_aux: bool = False):
  """`clipped_grad_sum` with the batch split over `mesh`'s 'data' axis.

  Each device clips and sums its slice; `lax.psum` adds the per-device sums. The sum is
  what the sensitivity bound is about, so sharding does not change the mechanism: one
  example lives on one device and still contributes at most C. The batch size must be a
  multiple of mesh.size (times microbatch_size if set). Returns the replicated sum and
  per-example norms / aux sharded like the batch; with no mesh or one device this is
  `clipped_grad_sum`.
  """
  if mesh is None or mesh.size == 1:
    return clipped_grad_sum(per_example_loss, params, batch, mask, spec,
                            microbatch_size=microbatch_size, strategy=strategy, has_aux=has_aux)
  if mask.shape[0] % split_multiple(mesh, microbatch_size):
    raise ValueError(f"batch of {mask.shape[0]} does not split over {mesh.size} devices "
                     f"in microbatches of {microbatch_size}")

  def local(params, batch, mask):
    total, norms, aux = clipped_grad_sum(per_example_loss, params, batch, mask, spec,
                                         microbatch_size=microbatch_size, strategy=strategy,
                                         has_aux=has_aux)
    return jax.lax.psum(total, DATA_AXIS), norms, aux

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
                     out_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), check_vma=False)
  return fn(params, batch, mask)


# Up to this many groups, group gradients come from one vmap over groups of the
# gradient of a weighted batch loss (cost ~ groups x batch backward passes); above it,
# from per-example gradients summed by group (cost ~ materialising them once).
WEIGHTED_MAX_GROUPS = 32


def group_mean_grads(per_example_loss, params, batch, mask, ids, num_groups: int, *,
                     chunk_size: int | None = None):
  """(means, counts): mean gradient of each group's real rows (0 for an empty group).

  Padding rows (mask False) are not counted and contribute exact zeros: their inputs
  are zeroed before the loss and their gradients selected away with `where`, so even
  inf/NaN padding cannot leak. Two exact evaluation orders (WEIGHTED_MAX_GROUPS):
  weighted batch losses, or per-example gradients (vmap of grad, in lax.scan chunks
  of `chunk_size` rows) summed into groups with segment_sum.
  """
  rows = mask.shape[0]
  counts = jax.ops.segment_sum(mask.astype(jnp.float32), ids, num_groups)
  scale = 1.0 / jnp.maximum(counts, 1.0)
  expand = lambda v, x: v.reshape(v.shape + (1,) * (x.ndim - v.ndim))
  batch = jax.tree.map(lambda x: jnp.where(expand(mask, x), x, jnp.zeros_like(x)), batch)
  if num_groups <= WEIGHTED_MAX_GROUPS:
    weights = jax.nn.one_hot(ids, num_groups).T * mask * scale[:, None]  # (groups, rows)

    def weighted_loss(p, w):
      losses = jax.vmap(per_example_loss, in_axes=(None, 0))(p, batch)
      return jnp.sum(jnp.where(mask, w * losses, 0.0))

    return jax.vmap(jax.grad(weighted_loss), in_axes=(None, 0))(params, weights), counts
  grad_fn = jax.grad(per_example_loss)

  def group_sums(chunk_batch, chunk_mask, chunk_ids):
    grads = jax.vmap(grad_fn, in_axes=(None, 0))(params, chunk_batch)
    keep = lambda g: jnp.where(expand(chunk_mask, g), g, 0.0)
    return jax.tree.map(lambda g: jax.ops.segment_sum(keep(g), chunk_ids, num_groups), grads)

  if not chunk_size or chunk_size >= rows:
    sums = group_sums(batch, mask, ids)
  else:
    pad = -rows % chunk_size
    padded = jax.tree.map(lambda x: jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]),
                          (batch, mask, ids))
    chunked = jax.tree.map(lambda x: x.reshape((-1, chunk_size) + x.shape[1:]), padded)
    zero = jax.tree.map(lambda p: jnp.zeros((num_groups,) + p.shape, p.dtype), params)
    body = lambda acc, c: (jax.tree.map(jnp.add, acc, group_sums(*c)), None)
    sums, _ = jax.lax.scan(body, zero, chunked)
  return jax.tree.map(lambda s: s * expand(scale, s), sums), counts


def clipped_group_sum(per_example_loss, params, batch, mask, ids, num_groups: int,
                      spec: clipping.ClippingSpec, *, chunk_size: int | None = None):
  """(S, norms, counts): S = sum over groups of clip_C(group mean gradient).

  Guarantee: adding or removing one real row changes only its group's mean, and two
  vectors of norm <= C differ by at most 2C, so ||S - S'|| <= 2C (sensitivity factor 2,
  for group ids drawn i.i.d. per row independently of the data; a partition by position
  in the padded batch would not do: adding one row shifts the others)."""
  means, counts = group_mean_grads(per_example_loss, params, batch, mask, ids, num_groups,
                                   chunk_size=chunk_size)
  clipped, norms = jax.vmap(lambda g: clipping.clip_gradient(g, spec))(means)
  total = jax.tree.map(lambda x: jnp.sum(x, axis=0), clipped)
  return total, norms, counts
