"""DP-GAN's D step by hand (dpgan.md §5.5), chunking, and the adaptive n_D ladder."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpgen_jax import rng
from dpgen_jax.methods import dpgan
from dpgen_jax.privacy import clipping, mechanisms


def _linear_d(params, x, y):
  """A linear D's (logits, class cross-entropies): no auxiliary classifier, so zeros."""
  del y
  logits = x @ params["w"]
  return logits, jnp.zeros_like(logits)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def test_hand_checkable_d_step_opacus_semantics():
  """Linear D w = [1, 1] (no bias), unit clipping, divisor int(qN) + round(qN).

  The per-example BCE gradients are (sigmoid(w.x) - t) x; with large logits they are
  about -x for reals (t = 1, w.x << 0) and +x for fakes (t = 0, w.x >> 0), so after
  unit clipping each example contributes -x/|x| or +x/|x|.
  """
  w = np.array([1.0, 1.0])
  reals = np.array([[-3.0, -4.0], [-6.0, -8.0], [-5.0, -12.0]])
  fakes = np.array([[8.0, 6.0], [12.0, 5.0]])
  x = np.concatenate([fakes, reals, np.zeros((1, 2))])  # one padding row
  target = np.array([0, 0, 1, 1, 1, 0], np.float64)
  mask = np.array([1, 1, 1, 1, 1, 0], bool)
  n, q = 9, 1 / 3  # upstream toy: 9 points, bsz 3 -> q = 1/3, qN = 3
  divisor = int(q * n) + round(q * n)  # 3 + 3 = 6
  # By hand, in float64.
  expected = np.zeros(2)
  for xi, ti, mi in zip(x, target, mask):
    if mi:
      g = (_sigmoid(w @ xi) - ti) * xi
      expected += g * min(1.0, 1.0 / (np.linalg.norm(g) + 1e-6))
  expected /= divisor
  approx = (-reals / np.linalg.norm(reals, axis=1, keepdims=True)).sum(0) + \
           (fakes / np.linalg.norm(fakes, axis=1, keepdims=True)).sum(0)
  np.testing.assert_allclose(expected, approx / divisor, atol=1e-3)  # the large-logit regime

  real = {"x": jnp.asarray(x[2:], jnp.float32), "y": jnp.zeros((4,), jnp.int32),
          "mask": jnp.asarray(mask[2:])}
  fake = {"x": jnp.asarray(fakes, jnp.float32), "y": jnp.zeros((2,), jnp.int32)}
  grad, logits, norms, present = dpgan.private_discriminator_grad(
      _linear_d, {"w": jnp.asarray(w, jnp.float32)}, real, fake, rng.make_key(0), clip=clipping.ClippingSpec(clip_norm=1.0),
      mechanism=mechanisms.GaussianSum(noise_multiplier=0.0, clip_norm=1.0, divisor=divisor))
  np.testing.assert_allclose(np.asarray(grad["w"]), expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(logits), x @ w, rtol=1e-6)  # fakes, reals, padding
  np.testing.assert_array_equal(np.asarray(present), mask)
  # One SGD step with lr 1, as the upstream test: w - gradient.
  updates, _ = optax.sgd(1.0).update(grad, optax.sgd(1.0).init(grad))
  np.testing.assert_allclose(np.asarray(optax.apply_updates({"w": jnp.asarray(w)}, updates)["w"]),
                             w - expected, rtol=1e-5)


def test_d_step_noise_has_std_sigma_c_over_divisor():
  sigma, c, divisor = 1.5, 0.5, 6.0
  x = jnp.zeros((4, 2))  # zero inputs: zero gradients, so the output is pure noise

  def one(key):
    real = {"x": x, "y": jnp.zeros((4,), jnp.int32), "mask": jnp.ones((4,), bool)}
    fake = {"x": jnp.zeros((0, 2)), "y": jnp.zeros((0,), jnp.int32)}
    return dpgan.private_discriminator_grad(
        _linear_d, {"w": jnp.ones((2,))}, real, fake, key, clip=clipping.ClippingSpec(clip_norm=c),
        mechanism=mechanisms.GaussianSum(noise_multiplier=sigma, clip_norm=c,
                                         divisor=divisor))[0]["w"]

  draws = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(rng.make_key(1), 4000)))
  want = sigma * c / divisor
  assert abs(draws.std() - want) < 6 * want / np.sqrt(2 * draws.size)


def test_divisor_and_rates_match_the_spec_table():
  # dpgan.md §2.4 table.
  assert dpgan.sampling_rate(128, 60_000) == pytest.approx(1 / 469)
  assert (dpgan.fake_batch_size(128, 60_000), dpgan.dp_divisor(128, 60_000)) == (128, 255)
  assert (dpgan.fake_batch_size(512, 60_000), dpgan.dp_divisor(512, 60_000)) == (508, 1016)
  assert (dpgan.fake_batch_size(2048, 182_637), dpgan.dp_divisor(2048, 182_637)) == (2029, 4058)


def _reference_schedule(stream, start, beta, threshold, grace):
  """dpgan.md §2.8 written out in plain Python."""
  ladder = list(dpgan.ND_LADDER)
  idx, ema, taken, out = ladder.index(start), None, 0, []
  for acc in stream:
    ema = acc if ema is None else beta * ema + (1 - beta) * acc
    taken += 1
    if taken >= grace and ema <= threshold:
      idx, taken = min(idx + 1, len(ladder) - 1), 0
    out.append(ladder[idx])
  return out


def test_adaptive_schedule_climbs_the_ladder_and_never_descends():
  stream = [0.95] * 250 + [0.3] * 900 + [0.99] * 300 + [0.1] * 3000
  update = jax.jit(lambda i, e, t, a, f: dpgan.adaptive_nd_update(
      i, e, t, a, f, beta=0.99, threshold=0.6, grace=200, adaptive=True))
  idx, ema, taken = jnp.int32(0), jnp.float32(0), jnp.int32(0)
  got = []
  for k, acc in enumerate(stream):
    idx, ema, taken = update(idx, ema, taken, jnp.float32(acc), k == 0)
    got.append(dpgan.ND_LADDER[int(idx)])
  want = _reference_schedule(stream, 1, 0.99, 0.6, 200)
  assert got == want
  assert all(b >= a for a, b in zip(got, got[1:]))  # never descends
  assert got[0] == 1 and got[249] == 1  # high accuracy: no climb
  assert len(set(got)) >= 5  # it climbed several rungs
  assert got[-1] == 5000 or got[-1] == want[-1]


def test_fixed_nd_never_changes():
  idx, ema, taken = jnp.int32(-1), jnp.float32(0), jnp.int32(0)
  for k in range(300):
    idx, ema, taken = dpgan.adaptive_nd_update(idx, ema, taken, jnp.float32(0.0), k == 0,
                                               beta=0.99, threshold=0.6, grace=1, adaptive=False)
  assert int(idx) == -1 and float(ema) == pytest.approx(0.0)
