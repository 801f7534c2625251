"""Ghost clipping ('ghost') gives the same clipped sum as the 'vmap' reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dpgen_jax.models import dcgan
from dpgen_jax.privacy import clipping, ghost, sums


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(7, name="dense1")(x))
    return nn.Dense(1, name="dense2")(x)[..., 0]


class StridedConvNet(nn.Module):
  """PyTorch-style Conv2d(k=4, s=2, p=1) twice, then a Dense head."""

  @nn.compact
  def __call__(self, x):
    x = nn.leaky_relu(nn.Conv(4, (4, 4), strides=2, padding=((1, 1), (1, 1)))(x), 0.2)
    x = nn.leaky_relu(nn.Conv(6, (3, 3), strides=2, padding=((1, 1), (1, 1)))(x), 0.2)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


class StringPaddingConvNet(nn.Module):
  """'SAME' (asymmetric for stride 2), 'VALID', no bias, a dilated kernel (generic path)."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(3, (3, 3), padding="SAME")(x))
    x = jnp.tanh(nn.Conv(4, (3, 3), strides=2, padding="SAME")(x))
    x = jnp.tanh(nn.Conv(5, (3, 3), padding="VALID", use_bias=False)(x))
    x = jnp.tanh(nn.Conv(2, (2, 2), kernel_dilation=2, padding="VALID")(x))
    return jnp.sum(x, axis=(1, 2, 3))


class OddConvNet(nn.Module):
  """1-D convs with k % s != 0 (masked lanes) and stride > kernel; a (3, 2) kernel."""

  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Conv(3, (5,), strides=3, padding=((2, 1),))(x))  # (B, 7, 3)
    h = jnp.tanh(nn.Conv(4, (2,), strides=3, padding="VALID")(h))  # (B, 2, 4)
    y = jnp.tanh(nn.Conv(2, (3, 2), strides=(2, 1), padding="SAME")(x[..., None, :]))
    return jnp.sum(h, axis=(1, 2)) + jnp.sum(y, axis=(1, 2, 3))


class SharedDense(nn.Module):
  """One Dense module applied twice (shared weights), on a sequence input."""

  @nn.compact
  def __call__(self, x):
    shared = nn.Dense(5, name="shared")
    h = shared(jnp.tanh(shared(x)))
    return nn.Dense(1, name="head")(h).sum(axis=(-2, -1))


class Scale(nn.Module):
  """A module with its own parameter that is neither Dense nor Conv."""

  @nn.compact
  def __call__(self, x):
    return x * self.param("scale", nn.initializers.ones, (x.shape[-1],)) + 0.5


class WithEmbedAndCustom(nn.Module):
  @nn.compact
  def __call__(self, tokens, x):
    e = nn.Embed(11, 4, name="embed")(tokens).sum(axis=-2)
    h = Scale(name="scale")(jnp.tanh(nn.Dense(4)(x) + e))
    return nn.Dense(1)(h)[:, 0]


def _inputs(model, shapes, seed, n, ints=None):
  rng = np.random.default_rng(seed)
  batch = {k: jnp.asarray(rng.normal(size=(n,) + s), jnp.float32) for k, s in shapes.items()}
  for k, (hi, s) in (ints or {}).items():
    batch[k] = jnp.asarray(rng.integers(0, hi, size=(n,) + s), jnp.int32)
  batch["t"] = jnp.asarray(rng.normal(size=(n,)), jnp.float32)
  example = jax.tree.map(lambda x: x[:1], {k: v for k, v in batch.items() if k != "t"})
  params = model.init(jax.random.key(seed), *example.values())["params"]
  return params, batch


def _loss_of(model):
  def loss(params, ex):
    args = [ex[k][None] for k in ex if k != "t"]
    return (model.apply({"params": params}, *args)[0] - ex["t"]) ** 2
  return loss


def _run(loss, params, batch, mask, spec, strategy, **kwargs):
  fn = jax.jit(lambda p, b, m: sums.clipped_grad_sum(loss, p, b, m, spec,
                                                         strategy=strategy, **kwargs))
  return fn(params, batch, mask)


def _assert_trees_close(a, b, rtol=2e-5, atol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _naive(loss, params, batch, mask, spec):
  """Per-example loop in float64 numpy: the definition of the clipped sum."""
  grad = jax.jit(jax.grad(loss))
  leaves, treedef = jax.tree.flatten(params)
  bounds = None if spec.per_layer_bounds is None else treedef.flatten_up_to(
      spec.per_layer_bounds)
  total = [np.zeros(x.shape) for x in leaves]
  for i in np.flatnonzero(mask):
    g = [np.asarray(x, np.float64) for x in
         jax.tree.leaves(grad(params, jax.tree.map(lambda a: a[i], batch)))]
    if bounds is None:
      norm = np.sqrt(sum(np.sum(x ** 2) for x in g))
      g = [x * min(1.0, spec.clip_norm / (norm + spec.norm_eps)) for x in g]
    else:
      g = [x * min(1.0, c / (np.linalg.norm(x) + spec.norm_eps)) for x, c in zip(g, bounds)]
    total = [t + x for t, x in zip(total, g)]
  return jax.tree.unflatten(treedef, total)


CASES = {
    "mlp": (MLP(), {"x": (5,)}, None),
    "strided_conv": (StridedConvNet(), {"x": (8, 8, 2)}, None),
    "string_padding_conv": (StringPaddingConvNet(), {"x": (9, 9, 2)}, None),
    "shared_dense": (SharedDense(), {"x": (3, 5)}, None),
    "odd_conv": (OddConvNet(), {"x": (20, 2)}, None),
    "embed_and_custom": (WithEmbedAndCustom(), {"x": (3,)}, {"tokens": (11, (2,))}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ghost_matches_vmap_and_naive_loop_with_padding(case):
  model, shapes, ints = CASES[case]
  params, batch = _inputs(model, shapes, seed=1, n=8, ints=ints)
  mask = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
  spec = clipping.ClippingSpec(clip_norm=0.5)
  loss = _loss_of(model)
  want, want_norms, _ = _run(loss, params, batch, jnp.asarray(mask), spec, "vmap")
  got, norms, _ = _run(loss, params, batch, jnp.asarray(mask), spec, "ghost")
  _assert_trees_close(got, want)
  _assert_trees_close(got, _naive(loss, params, batch, mask, spec))
  np.testing.assert_allclose(np.asarray(norms)[mask], np.asarray(want_norms)[mask], rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(norms)[~mask], 0.0)
  # Some examples must actually be clipped for the comparison to mean something.
  assert np.any(np.asarray(norms)[mask] > 0.5)


@pytest.mark.parametrize("case", ["mlp", "strided_conv", "embed_and_custom"])
def test_per_layer_bounds_match_vmap(case):
  model, shapes, ints = CASES[case]
  params, batch = _inputs(model, shapes, seed=2, n=6, ints=ints)
  bounds = jax.tree.map(lambda _: 0.2, params)
  first = jax.tree.leaves_with_path(bounds)[0][0]
  bounds = jax.tree_util.tree_map_with_path(lambda p, b: 1.5 if p == first else b, bounds)
  spec = clipping.ClippingSpec(per_layer_bounds=bounds)
  mask = jnp.array([1, 0, 1, 1, 1, 1], bool)
  loss = _loss_of(model)
  got = _run(loss, params, batch, mask, spec, "ghost")[0]
  _assert_trees_close(got, _run(loss, params, batch, mask, spec, "vmap")[0])
  _assert_trees_close(got, _naive(loss, params, batch, np.asarray(mask), spec))
  for leaf, bound in zip(jax.tree.leaves(got), jax.tree.leaves(bounds)):
    assert float(jnp.linalg.norm(leaf.ravel())) <= 5 * bound * (1 + 1e-5)  # 5 real rows


def _dcgan_case(n=10, seed=3):
  _, disc = dcgan.make_dcgan(28, 1, 10, d_width=16)
  rng = np.random.default_rng(seed)
  params = disc.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)),
                     jnp.zeros((1,), jnp.int32))["params"]
  batch = {"x": jnp.asarray(rng.uniform(size=(n, 28, 28, 1)), jnp.float32),
           "y": jnp.asarray(rng.integers(0, 10, size=n), jnp.int32),
           "t": jnp.asarray(rng.integers(0, 2, size=n), jnp.float32)}

  def loss(p, ex):
    logit = disc.apply({"params": p}, ex["x"][None], ex["y"][None])[0]
    bce = jax.nn.softplus(logit) - ex["t"] * logit
    return bce, {"logit": logit}

  return loss, params, batch


def test_dcgan_discriminator_with_labels_padding_aux_and_microbatches():
  loss, params, batch = _dcgan_case()
  mask = jnp.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], bool)
  poisoned = dict(batch, x=batch["x"].at[7:].set(jnp.inf))
  spec = clipping.ClippingSpec(clip_norm=0.05)
  want, want_norms, want_aux = _run(loss, params, batch, mask, spec, "vmap", has_aux=True)
  got, norms, aux = _run(loss, params, poisoned, mask, spec, "ghost", has_aux=True)
  _assert_trees_close(got, want, rtol=1e-4, atol=1e-7)
  for leaf in jax.tree.leaves(got):
    assert np.all(np.isfinite(np.asarray(leaf)))
  np.testing.assert_allclose(np.asarray(norms[:7]), np.asarray(want_norms[:7]), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(aux["logit"][:7]), np.asarray(want_aux["logit"][:7]),
                             rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(norms[:7]) > 0.05)
  # Microbatches of 5: the second chunk is mostly padding with inf inputs.
  chunked, _, chunked_aux = _run(loss, params, poisoned, mask, spec, "ghost",
                                 has_aux=True, microbatch_size=5)
  _assert_trees_close(chunked, want, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(np.asarray(chunked_aux["logit"][:7]),
                             np.asarray(want_aux["logit"][:7]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,strides,padding", [
    ((4, 4), 2, ((1, 1), (1, 1))), ((3, 3), 2, "SAME"), ((3, 2), (2, 1), "VALID"),
    ((2, 2), 3, ((0, 1), (2, 0))), ((3, 3), 1, "SAME")])
def test_conv_patch_gram_and_kernel_grad_match_explicit_patches(kernel, strides, padding):
  conv = nn.Conv(3, kernel, strides=strides, padding=padding)
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(2, 9, 8, 4)), jnp.float32)
  params = conv.init(jax.random.key(0), x)["params"]
  y, vjp = jax.vjp(lambda p: conv.apply({"params": p}, x), params)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  pads = nn.linear.canonicalize_padding(padding, 2)
  patches = jax.lax.conv_general_dilated_patches(
      x, kernel, ghost._tuple(strides, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  patches = patches.reshape(2, -1, patches.shape[-1])
  xs, out, taps = ghost._space_to_depth(conv, x)
  np.testing.assert_allclose(np.asarray(ghost._conv_patch_gram(xs, out, taps, 4)),
                             np.asarray(jnp.einsum("ntk,nsk->nts", patches, patches)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ghost._conv_kernel_grad(conv, x, g)),
                             np.asarray(vjp(g)[0]["kernel"]), rtol=1e-5, atol=1e-5)


def test_padding_rows_contribute_exactly_zero():
  model, shapes, _ = CASES["strided_conv"]
  params, batch = _inputs(model, shapes, seed=4, n=6)
  mask = jnp.array([1, 1, 1, 0, 0, 0], bool)
  poisoned = dict(batch, x=batch["x"].at[3:].set(jnp.nan), t=batch["t"].at[3].set(jnp.inf))
  loss, spec = _loss_of(model), clipping.ClippingSpec()
  clean = _run(loss, params, batch, mask, spec, "ghost")[0]
  dirty = _run(loss, params, poisoned, mask, spec, "ghost")[0]
  only_real = _run(loss, params, jax.tree.map(lambda x: x[:3], batch), mask[:3], spec,
                   "ghost")[0]
  for a, b, c in zip(*map(jax.tree.leaves, (clean, dirty, only_real))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-6, atol=1e-8)


def test_parameters_used_outside_a_module_are_refused():
  model, shapes, _ = CASES["mlp"]
  params, batch = _inputs(model, shapes, seed=5, n=4)
  mask = jnp.ones((4,), bool)

  def penalised(p, ex):  # an L2 penalty on raw parameters: not attributable to a call
    return _loss_of(model)(p, ex) + 0.1 * jnp.sum(p["dense1"]["kernel"] ** 2)

  with pytest.raises(ghost.GhostClippingError, match=r"dense1.*'vmap'"):
    _run(penalised, params, batch, mask, clipping.ClippingSpec(), "ghost")

  def raw(p, ex):  # no Flax module at all
    return jnp.sum(ex["x"] @ p["dense1"]["kernel"])

  with pytest.raises(ghost.GhostClippingError, match="outside of a Flax module"):
    _run(raw, params, batch, mask, clipping.ClippingSpec(), "ghost")


def test_ghost_is_registered():
  assert sums.STRATEGIES["ghost"] is ghost.ghost_clipped_sum


def _dot_precisions(jaxpr) -> list:
  """The precision of every dot_general in a (closed) jaxpr and its sub-jaxprs."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      out.append(eqn.params["precision"])
    for value in eqn.params.values():
      for sub in (value if isinstance(value, (list, tuple)) else [value]):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          out.extend(_dot_precisions(inner if hasattr(inner, "eqns") else inner.jaxpr))
  return out


def test_every_product_of_the_clipped_sum_runs_at_highest_precision():
  """The norms and the sums are separate products: both at HIGHEST, so that under a
  reduced default precision (TF32, bfloat16 passes) no example's contribution can exceed
  the bound its clip factor was computed for. The DCGAN discriminator has only
  convolutions, so every dot product traced here is ghost clipping's own."""
  loss, params, batch = _dcgan_case()
  mask = jnp.ones((batch["x"].shape[0],), bool)
  spec = clipping.ClippingSpec(clip_norm=0.05)
  with jax.default_matmul_precision("bfloat16"):
    jaxpr = jax.make_jaxpr(lambda p, b, m: ghost.ghost_clipped_sum(
        loss, p, b, m, spec, True))(params, batch, mask)
  precisions = _dot_precisions(jaxpr.jaxpr)
  assert len(precisions) >= 4  # Gram / direct norms and the per-layer sums
  highest = jax.lax.Precision.HIGHEST
  assert all(p is not None and all(q == highest for q in (p if isinstance(p, tuple) else (p,)))
             for p in precisions), precisions
