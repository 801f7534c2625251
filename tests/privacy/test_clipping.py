"""The clipped sum against a naive per-example loop, and its sensitivity bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.privacy import clipping, sums


def _model(seed=0, d_in=5, d_hidden=7):
  rng = np.random.default_rng(seed)
  return {
      "dense1": {"w": jnp.asarray(rng.normal(size=(d_in, d_hidden)), jnp.float32),
                 "b": jnp.asarray(rng.normal(size=(d_hidden,)), jnp.float32)},
      "dense2": {"w": jnp.asarray(rng.normal(size=(d_hidden, 1)), jnp.float32),
                 "b": jnp.zeros((1,), jnp.float32)},
  }


def _loss(params, example):
  h = jnp.tanh(example["x"] @ params["dense1"]["w"] + params["dense1"]["b"])
  out = (h @ params["dense2"]["w"] + params["dense2"]["b"])[0]
  return (out - example["y"]) ** 2


def _batch(n, seed=1, d_in=5, scale=3.0):
  rng = np.random.default_rng(seed)
  return {"x": jnp.asarray(scale * rng.normal(size=(n, d_in)), jnp.float32),
          "y": jnp.asarray(rng.normal(size=(n,)), jnp.float32)}


def _jitted_sum(spec, loss=_loss, **kwargs):
  return jax.jit(lambda p, b, m: sums.clipped_grad_sum(loss, p, b, m, spec, **kwargs))


def _naive(params, batch, mask, bounds=None, clip_norm=1.0):
  """Per-example Python loop in float64 numpy: the definition of the clipped sum."""
  leaves, treedef = jax.tree.flatten(params)
  total = [np.zeros(l.shape, np.float64) for l in leaves]
  for i in range(mask.shape[0]):
    if not mask[i]:
      continue
    example = jax.tree.map(lambda a: a[i], batch)
    g = [np.asarray(x, np.float64) for x in jax.tree.leaves(jax.grad(_loss)(params, example))]
    if bounds is None:
      norm = np.sqrt(sum(np.sum(x ** 2) for x in g))
      g = [x * min(1.0, clip_norm / (norm + 1e-6)) for x in g]
    else:
      g = [x * min(1.0, c / (np.sqrt(np.sum(x ** 2)) + 1e-6)) for x, c in zip(g, bounds)]
    total = [t + x for t, x in zip(total, g)]
  return total


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("microbatch_size", [None, 4, 12])
def test_clipped_sum_matches_naive_loop(per_layer, microbatch_size):
  params, batch = _model(), _batch(12)
  mask = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0], bool)  # last chunk of 4 is all padding
  if per_layer:
    bounds_tree = jax.tree.map(lambda _: 0.3, params)
    bounds_tree["dense2"]["w"] = 2.0
    spec = clipping.ClippingSpec(per_layer_bounds=bounds_tree)
    bounds = jax.tree.leaves(bounds_tree)
  else:
    spec, bounds = clipping.ClippingSpec(clip_norm=0.7), None
  got, norms, _ = _jitted_sum(spec, microbatch_size=microbatch_size)(params, batch,
                                                                    jnp.asarray(mask))
  want = _naive(params, batch, mask, bounds=bounds, clip_norm=0.7)
  for g, w in zip(jax.tree.leaves(got), want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=2e-5, atol=2e-6)
  assert norms.shape == (12,)


def test_padding_rows_contribute_exactly_zero_even_if_non_finite():
  params, batch = _model(), _batch(6)
  mask = jnp.array([True, True, True, False, False, False])
  poisoned = {"x": batch["x"].at[3:].set(jnp.inf), "y": batch["y"]}
  fn = _jitted_sum(clipping.ClippingSpec())
  clean, dirty = fn(params, batch, mask)[0], fn(params, poisoned, mask)[0]
  for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(dirty)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_contribution_is_bounded_and_outlier_moves_sum_by_at_most_c():
  params, batch = _model(), _batch(8, scale=5.0)
  mask = jnp.ones((8,), bool)
  fn = _jitted_sum(clipping.ClippingSpec(clip_norm=0.5))
  for i in range(8):
    single = jnp.zeros((8,), bool).at[i].set(True)
    contrib = fn(params, batch, single)[0]
    assert float(clipping.global_norm(contrib)) <= 0.5 * (1 + 1e-6)
  base = fn(params, batch, mask)[0]
  outlier = {"x": batch["x"].at[2].multiply(1e6), "y": batch["y"].at[2].multiply(1e6)}
  moved = fn(params, outlier, mask)[0]
  diff = jax.tree.map(jnp.subtract, moved, base)
  # The change replaces one clipped gradient by another: at most 2C apart, and
  # removing the example moves the sum by at most C.
  assert float(clipping.global_norm(diff)) <= 2 * 0.5 * (1 + 1e-5)
  removed = fn(params, outlier, mask.at[2].set(False))[0]
  assert float(clipping.global_norm(jax.tree.map(jnp.subtract, moved, removed))) <= 0.5 * (1 + 1e-5)


def test_per_layer_bounds_hold_per_leaf_and_sensitivity_is_their_norm():
  params, batch = _model(), _batch(4, scale=50.0)
  bounds = jax.tree.map(lambda _: 0.1, params)
  bounds["dense1"]["w"] = 0.4
  spec = clipping.ClippingSpec(per_layer_bounds=bounds)
  np.testing.assert_allclose(spec.sensitivity, np.sqrt(3 * 0.1 ** 2 + 0.4 ** 2))
  fn = _jitted_sum(spec)
  for i in range(4):
    single = jnp.zeros((4,), bool).at[i].set(True)
    contrib = fn(params, batch, single)[0]
    for leaf, bound in zip(jax.tree.leaves(contrib), jax.tree.leaves(bounds)):
      assert float(jnp.linalg.norm(leaf.ravel())) <= bound * (1 + 1e-6)
    assert float(clipping.global_norm(contrib)) <= spec.sensitivity * (1 + 1e-6)


def test_equal_per_layer_bounds_have_total_norm():
  params = _model()
  spec = clipping.ClippingSpec(per_layer_bounds=clipping.equal_per_layer_bounds(params, 2.0))
  np.testing.assert_allclose(spec.sensitivity, 2.0, rtol=1e-12)


def test_has_aux_returns_per_example_aux_through_microbatches():
  params, batch = _model(), _batch(8)

  def loss_with_aux(p, ex):
    value = _loss(p, ex)
    return value, {"loss": value}

  mask = jnp.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
  spec = clipping.ClippingSpec()
  aux_full = _jitted_sum(spec, loss_with_aux, has_aux=True)(params, batch, mask)[2]
  aux_mb = _jitted_sum(spec, loss_with_aux, has_aux=True, microbatch_size=4)(params, batch, mask)[2]
  want = jax.vmap(lambda ex: _loss(params, ex))(batch)
  np.testing.assert_allclose(np.asarray(aux_full["loss"]), np.asarray(want), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(aux_mb["loss"][:5]), np.asarray(want[:5]), rtol=1e-6)


def test_microbatch_size_must_divide_batch():
  params, batch = _model(), _batch(6)
  with pytest.raises(ValueError, match="multiple"):
    sums.clipped_grad_sum(_loss, params, batch, jnp.ones((6,), bool),
                              clipping.ClippingSpec(), microbatch_size=4)
