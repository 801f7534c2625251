"""Ghost clipping: exact clipped sums without materialising per-example gradients.

Strategy 'ghost' of `sums.STRATEGIES`; same signature, result and guarantee as the
reference 'vmap' strategy (clipping.vmap_clipped_sum):

    S = sum_i m_i * clip(g_i),   clip factor min(1, C / (||g_i|| + norm_eps)),

flat or per parameter leaf, and padding rows (m_i = False) contribute exactly zero
(their captured activations and output gradients are replaced by zeros with `where`
before anything is summed, so even inf/NaN inputs cannot leak into S; their reported
norm is 0).

How. The per-example loss is traced once per example under `jax.vmap` with a Flax
method interceptor around every call of a module that owns parameters. Each call
records its inputs and adds a zero "perturbation" to its output; the gradient of
sum_i m_i * loss_i with respect to the perturbations is every example's gradient
with respect to that call's output (one backward pass, no weight gradients). For a
layer y_t = a_t W + b (t over positions) example i's gradient is
dW_i = sum_t a_it^T b_it and db_i = sum_t b_it, so:

  nn.Dense, nn.Conv  ||dW_i||^2 from the inputs A_i (T x K; conv: patches) and output
                     gradients B_i (T x O), as sum((A_i A_i^T) * (B_i B_i^T)) ("ghost",
                     cost T^2 (K+O)) or ||A_i^T B_i||^2 (cost T K O), whichever is
                     cheaper per layer (conv patches are never materialised for the
                     Gram form); then the clipped sum sum_i c_i A_i^T B_i is one matrix
                     product per layer (no second pass through the network).
  any other module   (e.g. nn.Embed, nn.ConvTranspose, a custom module with
  with parameters    self.param): per-example gradients of that module alone, by vmap
                     of its VJP on the captured inputs (exact, materialised for it).

A module called several times in one example is one group: its gradient is the sum
over calls (for Dense/Conv the positions of all calls are concatenated).

Sharp edges (each raises `GhostClippingError`, suggesting strategy='vmap'):
  - a parameter leaf used outside a module call (e.g. an L2 penalty on raw params, a
    hand-written layer reading the params tree) or parameters of modules under Flax
    lifted transforms (nn.scan, nn.vmap, nn.remat), whose leaves cannot be attributed;
  - the loss's module calls must not depend on data-dependent Python control flow
    (the call sequence is traced once per example shape).
Modules must use only the 'params' collection when re-applied (no rngs, no mutable
state), which is what a per-example-clipped model needs anyway (no batch norm).
Precision: every matrix product of the private computation here, the per-example norms
AND the clipped sums, runs in float32 at HIGHEST precision (`_einsum`), whatever
jax_default_matmul_precision says. The norms and the sums are separate products, so
with a reduced default precision (TF32 on NVIDIA GPUs, bfloat16 passes on TPUs) one
example's contribution to the sum could exceed C by ~1e-3 relative to the norm that
decided its clip factor; at HIGHEST both agree to float32 rounding (tests/privacy/
test_ghost.py checks that every dot product of the clipped sum asks for HIGHEST).
The 'vmap' strategy clips each materialised per-example gradient by its own norm, so
its bound holds at any precision.
"""

from collections.abc import Mapping
import dataclasses
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
from flax import linen as nn

from dpgen_jax.errors import ConfigError
from dpgen_jax.privacy import clipping

PyTree = Any


class GhostClippingError(ConfigError, ValueError):
  """The loss uses parameters in a way ghost clipping cannot attribute; use 'vmap'."""


@dataclasses.dataclass
class _Call:
  """One intercepted module call, as seen when tracing one example."""
  kind: str  # 'dense', 'conv' or 'generic'
  group: int  # index of the module's parameter set in `_Plan.groups`
  module: nn.Module  # unbound clone, for re-application
  method: str
  args_def: Any  # treedef of (args, kwargs)
  static: list  # leaves of (args, kwargs); None where an array is captured
  out_struct: Any  # per-example output shapes (pytree of ShapeDtypeStruct)

  def rebuild(self, arrays):
    it = iter(arrays)
    leaves = [next(it) if s is None else s for s in self.static]
    return jax.tree.unflatten(self.args_def, leaves)


@dataclasses.dataclass
class _Plan:
  calls: list
  groups: list  # per group: (flat params indices, treedef of the module's own params)


def _is_array(x) -> bool:
  return isinstance(x, (jax.Array, jax.core.Tracer)) or hasattr(x, "__jax_array__")


def _kind(module: nn.Module, method: str) -> str | None:
  """How a module call is handled; None: not intercepted (it owns no parameters)."""
  if method == "setup":
    return None
  own = module.variables.get("params", {})
  if not any(not isinstance(v, Mapping) for v in own.values()):
    return None
  if method == "__call__" and set(own) <= {"kernel", "bias"}:
    if (isinstance(module, nn.Dense) and type(module).__call__ is nn.Dense.__call__
        and _unset(module, "dot_general", "dot_general_cls")):
      return "dense"
    if (isinstance(module, nn.Conv) and type(module).__call__ is nn.Conv.__call__
        and module.feature_group_count == 1 and module.mask is None
        and all(d == 1 for d in _tuple(module.input_dilation, 1) + _tuple(
            module.kernel_dilation, 1))
        and _unset(module, "conv_general_dilated", "conv_general_dilated_cls")
        and nn.linear.canonicalize_padding(module.padding, len(_tuple(
            module.kernel_size, 1))) not in ("CIRCULAR", "REFLECT", "CAUSAL")):
      return "conv"
  return "generic"


def _unset(module, *names) -> bool:
  return all(getattr(module, n, None) is None for n in names)


def _tuple(x, n: int) -> tuple[int, ...]:
  if x is None:
    x = 1
  return (x,) * n if isinstance(x, int) else tuple(x)


def _plan(loss_fn, params, example, has_aux) -> _Plan:
  """Traces one example: the module calls, their outputs, and who owns which leaf."""
  leaves, treedef = jax.tree.flatten(params)
  calls, groups, index = [], [], {}

  def traced(p_leaves, q_leaves, ex):
    ids = {id(x): i for i, x in enumerate(p_leaves)}
    depth = [0]

    def interceptor(next_fun, args, kwargs, ctx):
      kind = None if depth[0] else _kind(ctx.module, ctx.method_name)
      if kind is None:
        return next_fun(*args, **kwargs)
      own_leaves, own_def = jax.tree.flatten(ctx.module.variables["params"])
      idx = tuple(ids.get(id(x), -1) for x in own_leaves)
      if -1 in idx:
        raise GhostClippingError(
            f"ghost clipping: the parameters of module {'/'.join(ctx.module.path)!r} "
            f"({type(ctx.module).__name__}) are not leaves of the params passed to the "
            "loss (a Flax lifted transform such as nn.scan/nn.vmap/nn.remat, or a cast?); "
            "use clipping strategy 'vmap'")
      if idx not in index:
        index[idx] = len(groups)
        groups.append((idx, own_def))
      module = ctx.module.clone(parent=None)
      # The call reads the parameters through a second copy (q), so that any use of
      # p outside module calls shows up as a dependency in the traced program.
      own_q = jax.tree.unflatten(own_def, [q_leaves[i] for i in idx])
      depth[0] += 1
      try:
        out = module.apply({"params": own_q}, *args, method=ctx.method_name, **kwargs)
      finally:
        depth[0] -= 1
      flat, args_def = jax.tree.flatten((args, kwargs))
      calls.append(_Call(kind, index[idx], module, ctx.method_name, args_def,
                         [None if _is_array(x) else x for x in flat],
                         jax.tree.map(lambda o: jax.ShapeDtypeStruct(o.shape, o.dtype), out)))
      return out

    with nn.intercept_methods(interceptor):
      out = loss_fn(jax.tree.unflatten(treedef, p_leaves), ex)
    return out[0] if has_aux else out

  struct = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
  closed = jax.make_jaxpr(traced)(jax.tree.map(struct, leaves), jax.tree.map(struct, leaves),
                                  jax.tree.map(struct, example))
  jaxpr = closed.jaxpr
  used = {v for eqn in jaxpr.eqns for v in eqn.invars if isinstance(v, jax_core.Var)}
  used |= {v for v in jaxpr.outvars if isinstance(v, jax_core.Var)}
  direct = [i for i, v in enumerate(jaxpr.invars[:len(leaves)]) if v in used]
  if direct:
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    raise GhostClippingError(
        "ghost clipping: the loss uses parameter(s) "
        f"{', '.join(paths[i] for i in direct[:5])} outside of a Flax module call, so their "
        "per-example gradients cannot be attributed; use clipping strategy 'vmap'")
  return _Plan(calls, groups)


def _space_to_depth(module: nn.Conv, x: jax.Array):
  """A conv's padded input regrouped by its stride, and its window taps.

  Window offset i = q*s + r (per spatial dim) is block offset q, lane r: after
  space-to-depth xs[n, p, (r, c)] = x_padded[n, p*s + r, c], the patch of output
  position o is the concatenation over block offsets q of xs[n, o + q, :], restricted
  to the lanes with q*s + r < k. Returns (xs (N, *L, F), output sizes, [(q, lane mask
  as a tuple of bools over F // C_in lanes)]).
  """
  kernel = _tuple(module.kernel_size, 1)
  nd = len(kernel)
  strides = _tuple(module.strides, nd)
  x = x.reshape((-1,) + x.shape[-(nd + 1):])
  n, sizes, c = x.shape[0], x.shape[1:-1], x.shape[-1]
  padding = nn.linear.canonicalize_padding(module.padding, nd)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(sizes, kernel, strides, padding)
  out = [(n_ + lo + hi - k) // s + 1 for n_, (lo, hi), k, s in zip(sizes, padding, kernel, strides)]
  blocks_per_dim = [-(-k // s) for k, s in zip(kernel, strides)]
  length = [(o + q - 1) * s for o, q, s in zip(out, blocks_per_dim, strides)]
  config = [(0, 0, 0)] + [(lo, l - n_ - lo, 0) for (lo, _), l, n_ in
                          zip(padding, length, sizes)] + [(0, 0, 0)]
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
  split = [n] + [v for l, s in zip(length, strides) for v in (l // s, s)] + [c]
  order = [0] + [1 + 2 * d for d in range(nd)] + [2 + 2 * d for d in range(nd)] + [2 * nd + 1]
  xs = x.reshape(split).transpose(order)
  xs = xs.reshape((n,) + tuple(l // s for l, s in zip(length, strides)) + (-1,))
  lanes = list(itertools.product(*(range(s) for s in strides)))
  taps = [(q, tuple(all(qi * s + r < k for qi, r, s, k in zip(q, lane, strides, kernel))
                    for lane in lanes))
          for q in itertools.product(*(range(b) for b in blocks_per_dim))]
  return xs, out, taps


def _lane_mask(valid, c):
  return None if all(valid) else jnp.repeat(jnp.asarray(valid, jnp.float32), c)


def _conv_blocks(xs, out, taps, c) -> list:
  """Patches as column blocks [(A_q (N, T, F), column mask or None)], one per q.

  The patch matrix (T output positions x window*C_in) is the concatenation of the
  A_q with masked columns dropped, up to a column permutation (no norm sees it).
  """
  n, blocks = xs.shape[0], []
  for q, valid in taps:
    a = jax.lax.slice(xs, (0,) + q + (0,), (n,) + tuple(qi + o for qi, o in zip(q, out)) +
                      (xs.shape[-1],))
    blocks.append((a.reshape(n, -1, a.shape[-1]), _lane_mask(valid, c)))
  return blocks


def _conv_patch_gram(xs, out, taps, c) -> jax.Array:
  """Per-image Gram matrix (N, T, T) of a conv's patches, without forming patches.

  G[o, o'] = sum_q <xs[o + q], xs[o' + q]> over valid lanes: one Gram matrix of the
  space-to-depth positions per distinct lane mask, then shifted windows of it summed
  (no strided copies of the activations).
  """
  n, grid = xs.shape[0], xs.shape[1:-1]
  flat = xs.reshape(n, -1, xs.shape[-1])
  gram = 0
  for valid in dict.fromkeys(v for _, v in taps):
    m = _lane_mask(valid, c)
    pixel = _einsum("npf,nqf->npq", flat if m is None else flat * m, flat)
    pixel = pixel.reshape((n,) + grid + grid)
    for q, v in taps:
      if v == valid:
        window = jax.lax.slice(pixel, (0,) + q + q,
                               (n,) + 2 * tuple(qi + o for qi, o in zip(q, out)))
        gram = gram + window.reshape(n, math.prod(out), math.prod(out))
  return gram


def _conv_kernel_grad(module: nn.Conv, x: jax.Array, grad_out: jax.Array) -> jax.Array:
  """sum_n patches_n^T grad_out_n in the kernel's layout, as one matrix product.

  Instead of slicing patches out of the activations, the output gradients are
  shifted into the space-to-depth grid once per block offset q (cheap pads of the
  narrower tensor): sum_o xs[o + q]^T g[o] = sum_p xs[p]^T g[p - q]. A plain GEMM
  also stays fast inside lax.scan (microbatches), where XLA:CPU's kernel-gradient
  convolution is several times slower.
  """
  xs, out, taps = _space_to_depth(module, x)
  kernel = _tuple(module.kernel_size, 1)
  nd = len(kernel)
  strides = _tuple(module.strides, nd)
  n, grid, c, o = xs.shape[0], xs.shape[1:-1], x.shape[-1], grad_out.shape[-1]
  g = grad_out.reshape((n,) + tuple(out) + (o,))
  shifted = jnp.stack([jax.lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0)] + [
      (qi, gi - oi - qi, 0) for qi, gi, oi in zip(q, grid, out)] + [(0, 0, 0)])
                       for q, _ in taps], axis=-2)
  w = _einsum("npf,npj->fj", xs.reshape(n, -1, xs.shape[-1]),
              shifted.reshape(n, -1, len(taps) * o))
  blocks = [-(-k // s) for k, s in zip(kernel, strides)]
  w = w.reshape(tuple(strides) + (c,) + tuple(blocks) + (o,))  # (r..., c, q..., o)
  order = [v for d in range(nd) for v in (nd + 1 + d, d)] + [nd, 2 * nd + 1]
  w = w.transpose(order).reshape(tuple(b * s for b, s in zip(blocks, strides)) + (c, o))
  return w[tuple(slice(0, k) for k in kernel)]  # lanes beyond the kernel are dropped


def _einsum(spec: str, a, b):
  return jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST)


def _linear_norms(calls, inputs, grads, batch):
  """Per-example squared norms {'kernel', 'bias'} of a Dense/Conv module's gradient.

  ||dW_i||^2 = sum((A_i A_i^T) * (B_i B_i^T)) (Gram form) = ||A_i^T B_i||^2 (direct),
  evaluated in whichever form costs fewer multiply-adds for this layer's shapes.
  """
  b = jnp.concatenate([g.astype(jnp.float32).reshape(batch, -1, g.shape[-1]) for g in grads],
                      axis=1)  # several calls: positions concatenate (gradients add)
  bias_sq = jnp.sum(jnp.square(jnp.sum(b, axis=1)), axis=1)
  t, o = b.shape[1], b.shape[2]
  gram_b = lambda: _einsum("bto,bso->bts", b, b)
  blocks = []
  for call, arrays in zip(calls, inputs):
    x = arrays[0].astype(jnp.float32)
    if call.kind == "dense":
      blocks.append([(x.reshape(batch, -1, x.shape[-1]), None)])
      continue
    xs, out, taps = _space_to_depth(call.module, x)
    if len(calls) == 1 and xs.shape[0] == batch:  # one image per example
      pixels, lanes = math.prod(xs.shape[1:-1]), xs.shape[-1]
      masks = len(set(v for _, v in taps))
      if masks * pixels ** 2 * lanes + t * t * o < t * len(taps) * lanes * o:
        gram_a = _conv_patch_gram(xs, out, taps, x.shape[-1])
        return {"kernel": jnp.sum(gram_a * gram_b(), axis=(1, 2)), "bias": bias_sq}
    blocks.append([(a.reshape(batch, -1, a.shape[-1]), m)
                   for a, m in _conv_blocks(xs, out, taps, x.shape[-1])])
  blocks = [(jnp.concatenate([c[j][0] for c in blocks], axis=1), blocks[0][j][1])
            for j in range(len(blocks[0]))]
  k = sum(a.shape[2] for a, _ in blocks)
  if t * t * (k + o) < t * k * o:
    gram_a = sum(_einsum("btk,bsk->bts", a if m is None else a * m, a) for a, m in blocks)
    kernel_sq = jnp.sum(gram_a * gram_b(), axis=(1, 2))
  else:
    kernel_sq = sum(jnp.sum(jnp.square(_einsum("btk,bto->bko", a, b)) *
                            (1.0 if m is None else m[:, None]), axis=(1, 2))
                    for a, m in blocks)
  return {"kernel": kernel_sq, "bias": bias_sq}


def _generic_group(calls, inputs, grads, own_params):
  """Per-example gradients of one module's parameters (vmap of its VJP), summed over calls."""
  total = None
  for call, arrays, g in zip(calls, inputs, grads):
    def one(arrays_i, g_i, call=call):
      args, kwargs = call.rebuild(arrays_i)
      apply = lambda p: call.module.apply({"params": p}, *args, method=call.method, **kwargs)
      return jax.vjp(apply, own_params)[1](g_i)[0]
    per_example = jax.vmap(one)(arrays, g)
    total = per_example if total is None else jax.tree.map(jnp.add, total, per_example)
  return total


def _rows(per_row, x):
  """Reshapes a (B,) vector to broadcast against x (B, ...), in x's dtype."""
  return per_row.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)


def _mask_rows(mask, x):
  return jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros((), x.dtype))


def ghost_clipped_sum(loss_fn: clipping.PerExampleLoss, params: PyTree, batch: PyTree,
                      mask: jax.Array, spec: clipping.ClippingSpec, has_aux: bool):
  """Returns (S, per-example norms, aux) exactly as `clipping.vmap_clipped_sum` does.

  S = sum_i m_i clip(g_i) (flat or per-leaf clipping per `spec`); norms are the
  unclipped per-example gradient norms (0 for padding rows); aux is stacked per
  example (no DP guarantee). Raises GhostClippingError when some parameter's
  gradient cannot be attributed to a module call (use strategy 'vmap' then).
  """
  size = mask.shape[0]
  leaves, treedef = jax.tree.flatten(params)
  plan = _plan(loss_fn, params, jax.tree.map(lambda x: x[0], batch), has_aux)

  def per_example(perturbations, example):
    calls, captured, depth = iter(plan.calls), [], [0]

    def interceptor(next_fun, args, kwargs, ctx):
      kind = None if depth[0] else _kind(ctx.module, ctx.method_name)
      if kind is None:
        return next_fun(*args, **kwargs)
      call = next(calls, None)
      if call is None or call.kind != kind or call.method != ctx.method_name:
        raise GhostClippingError("ghost clipping: the sequence of module calls differs "
                                 "between traces; use clipping strategy 'vmap'")
      depth[0] += 1
      try:
        out = next_fun(*args, **kwargs)
      finally:
        depth[0] -= 1
      captured.append([x for x in jax.tree.leaves((args, kwargs)) if _is_array(x)])
      return jax.tree.map(jnp.add, out, perturbations[len(captured) - 1])

    with nn.intercept_methods(interceptor):
      result = loss_fn(params, example)
    loss, aux = result if has_aux else (result, None)
    return loss, (aux, captured)

  zeros = [jax.tree.map(lambda s: jnp.zeros((size,) + s.shape, s.dtype), c.out_struct)
           for c in plan.calls]
  losses, backward, (aux, captured) = jax.vjp(
      lambda z: jax.vmap(per_example)(z, batch), zeros, has_aux=True)
  (out_grads,) = backward(mask.astype(losses.dtype))
  captured = jax.tree.map(lambda x: _mask_rows(mask, x), captured)
  out_grads = jax.tree.map(lambda x: _mask_rows(mask, x), out_grads)

  # Per-example squared norms of every leaf; unused leaves have gradient 0.
  sq = [jnp.zeros((size,), jnp.float32) for _ in leaves]
  groups = []
  for g, (idx, own_def) in enumerate(plan.groups):
    members = [k for k, c in enumerate(plan.calls) if c.group == g]
    calls = [plan.calls[k] for k in members]
    inputs, grads = [captured[k] for k in members], [out_grads[k] for k in members]
    own = jax.tree.unflatten(own_def, [leaves[i] for i in idx])
    names = jax.tree.unflatten(own_def, list(idx))
    linear = len({c.kind for c in calls}) == 1 and calls[0].kind in ("dense", "conv")
    if linear:
      for name, value in _linear_norms(calls, inputs, grads, size).items():
        if name in names:
          sq[names[name]] = value
      per_example = None
    else:
      per_example = jax.tree.map(lambda x: _mask_rows(mask, x),
                                 _generic_group(calls, inputs, grads, own))
      for i, x in zip(idx, jax.tree.leaves(per_example)):
        sq[i] = jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(size, -1), axis=1)
    groups.append((idx, names, calls, inputs, grads, own, per_example))

  norms = jnp.sqrt(sum(sq))
  if spec.per_layer_bounds is None:
    flat = jnp.where(mask, clipping.clip_factor(norms, spec.clip_norm, spec.norm_eps), 0.0)
    factors = [flat] * len(leaves)
  else:
    bounds = treedef.flatten_up_to(spec.per_layer_bounds)
    factors = [jnp.where(mask, clipping.clip_factor(jnp.sqrt(s), c, spec.norm_eps), 0.0)
               for s, c in zip(sq, bounds)]

  # The clipped sum: for Dense/Conv one matrix product per call, of the captured
  # inputs with the output gradients scaled by the clip factors.
  total = [jnp.zeros_like(x) for x in leaves]
  for idx, names, calls, inputs, grads, own, per_example in groups:
    if per_example is not None:
      for i, x in zip(idx, jax.tree.leaves(per_example)):
        total[i] = jnp.sum(x * _rows(factors[i], x), axis=0).astype(leaves[i].dtype)
      continue
    for call, arrays, g in zip(calls, inputs, grads):
      x = arrays[0]
      kernel_g = g * _rows(factors[names["kernel"]], g)
      if call.kind == "conv":
        grad = {"kernel": _conv_kernel_grad(call.module, x, kernel_g)}
      else:
        grad = {"kernel": _einsum("tk,to->ko", x.reshape(-1, x.shape[-1]),
                                  kernel_g.reshape(-1, g.shape[-1]))}
      if "bias" in names:
        bias_g = g * _rows(factors[names["bias"]], g)
        grad["bias"] = jnp.sum(bias_g.reshape(-1, g.shape[-1]), axis=0)
      for name, i in names.items():
        total[i] = total[i] + grad[name].astype(leaves[i].dtype)
  return jax.tree.unflatten(treedef, total), jnp.where(mask, norms, 0.0), aux

