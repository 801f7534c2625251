"""DP-CGAN's microbatched D step (dpcgan.md §3), its sensitivity and its privacy values."""

import json

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax import cli, errors
from dpgen_jax.methods import dpcgan
from dpgen_jax.privacy import accounting, clipping, mechanisms, sums
from tests import helpers

C = 1.1
CLIP = clipping.ClippingSpec(clip_norm=C)


def _mlp_d(params, x, y):
  """A small conditional MLP D: [x, one-hot(y)] -> tanh(8) -> 1 logit."""
  h = jnp.concatenate([x.reshape(x.shape[0], -1), jax.nn.one_hot(y, 3)], -1)
  return (jnp.tanh(h @ params["w1"] + params["b1"]) @ params["w2"])[:, 0] + params["b2"]


def _params(seed=0, scale=3.0):
  k = jax.random.split(jax.random.key(seed), 3)
  return {"w1": scale * jax.random.normal(k[0], (8, 8)), "b1": jax.random.normal(k[1], (8,)),
          "w2": scale * jax.random.normal(k[2], (8, 1)), "b2": jnp.zeros(())}


def _data(num_real=7, padded=10, num_fakes=4, seed=1, pad_value=0.0):
  r = np.random.default_rng(seed)
  mask = np.arange(padded) < num_real
  x = r.normal(size=(padded, 5)).astype(np.float32)
  x[~mask] = pad_value
  real = {"x": jnp.asarray(x), "y": jnp.asarray(r.integers(0, 3, padded), jnp.int32),
          "mask": jnp.asarray(mask)}
  fake = {"x": jnp.asarray(r.normal(size=(num_fakes, 5)), jnp.float32),
          "y": jnp.asarray(r.integers(0, 3, num_fakes), jnp.int32)}
  return real, fake


def _real_ids(key, rows, m):
  """The microbatch of each real row, as privacy.discriminator draws them."""
  return jax.random.randint(key, (rows,), 0, m)


def _mech(sigma, m, batch_size=4):
  """DP-CGAN's mechanism: noise std sigma C on the sum, divided by m (sensitivity factor
  1 for m = B, 2 for microbatch means)."""
  return dpcgan.mechanism(sigma, C, m, batch_size)


def _grad(params, real, fake, m, sigma=0.0, key=1, **kw):
  return dpcgan.discriminator_grad(_mlp_d, params, real, fake, jax.random.key(7),
                                   jax.random.key(key), num_microbatches=m, clip=CLIP,
                                   mechanism=_mech(sigma, m), **kw)[0]


@jax.jit
def _example_grad(params, x, y, t):
  def loss(p):
    return dpcgan.bce_with_logits(_mlp_d(p, x[None], y[None])[0], t)
  return jax.grad(loss)(params)


def _clip(g):
  g = {k: np.asarray(v, np.float64) for k, v in g.items()}
  norm = np.sqrt(sum(np.sum(v ** 2) for v in g.values()))
  return {k: v * min(1.0, C / (norm + 1e-6)) for k, v in g.items()}, norm


def _add(a, b):
  return {k: a[k] + b[k] for k in a}


def _assert_trees_close(a, b, **kw):
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), **kw)


def test_m_equal_b_is_the_core_per_example_clipped_sum():
  params, (real, fake) = _params(), _data()
  got = _grad(params, real, fake, m=4)  # B = 4 fakes, m = B
  batch = {"x": jnp.concatenate([fake["x"], real["x"]]), "y": jnp.concatenate([fake["y"], real["y"]]),
           "t": jnp.concatenate([jnp.zeros(4), jnp.ones(10)])}
  mask = jnp.concatenate([jnp.ones(4, bool), real["mask"]])
  core, norms, _ = sums.clipped_grad_sum(
      lambda p, ex: dpcgan.bce_with_logits(_mlp_d(p, ex["x"][None], ex["y"][None])[0], ex["t"]),
      params, batch, mask, CLIP)
  _assert_trees_close(got, jax.tree.map(lambda s: s / 4, core), rtol=1e-6, atol=1e-7)
  assert np.sum(np.asarray(norms) > C) >= 3  # clipping is active
  # And by hand: every real and every fake example clipped to C, summed, divided by m.
  want = {k: np.zeros(v.shape) for k, v in params.items()}
  for i in range(10):
    if bool(real["mask"][i]):
      want = _add(want, _clip(_example_grad(params, real["x"][i], real["y"][i], 1.0))[0])
  for i in range(4):
    want = _add(want, _clip(_example_grad(params, fake["x"][i], fake["y"][i], 0.0))[0])
  _assert_trees_close(got, {k: v / 4 for k, v in want.items()}, rtol=1e-5, atol=1e-6)


def test_m_equal_one_clips_the_batch_mean_gradient_once():
  params, (real, fake) = _params(scale=10.0), _data()
  got = _grad(params, real, fake, m=1)
  mask = np.asarray(real["mask"])

  def mean_loss(p, x, y, t, keep):
    losses = dpcgan.bce_with_logits(_mlp_d(p, x, y), t)
    return jnp.sum(jnp.where(keep, losses, 0.0)) / jnp.sum(keep)

  g_real = jax.grad(mean_loss)(params, real["x"], real["y"], 1.0, real["mask"])
  g_fake = jax.grad(mean_loss)(params, fake["x"], fake["y"], 0.0, jnp.ones(4, bool))
  (c_real, n_real), (c_fake, n_fake) = _clip(g_real), _clip(g_fake)
  assert n_real > C and n_fake > C
  _assert_trees_close(got, _add(c_real, c_fake), rtol=1e-5, atol=1e-6)
  assert mask.sum() == 7


@pytest.mark.parametrize("weighted_max,chunk", [(32, None), (0, None), (0, 4)])
def test_intermediate_m_clips_each_microbatch_mean(monkeypatch, weighted_max, chunk):
  """m = 2 < B = 4: real ids i.i.d. from the key, fakes in fixed halves; both code paths."""
  monkeypatch.setattr(sums, "WEIGHTED_MAX_GROUPS", weighted_max)
  params, (real, fake) = _params(), _data()
  got = _grad(params, real, fake, m=2, chunk_size=chunk)
  ids = np.asarray(_real_ids(jax.random.key(7), 10, 2))
  mask = np.asarray(real["mask"])
  want = {k: np.zeros(v.shape) for k, v in params.items()}
  groups = [[i for i in range(10) if mask[i] and ids[i] == j] for j in range(2)]
  assert all(groups), "the test wants two non-empty real microbatches"
  for rows, x, y, t in [(groups[0], real["x"], real["y"], 1.0), (groups[1], real["x"], real["y"], 1.0),
                        ([0, 1], fake["x"], fake["y"], 0.0), ([2, 3], fake["x"], fake["y"], 0.0)]:
    grads = [_example_grad(params, x[i], y[i], t) for i in rows]
    mean = {k: np.mean([np.asarray(g[k]) for g in grads], axis=0) for k in params}
    want = _add(want, _clip(mean)[0])
  _assert_trees_close(got, {k: v / 2 for k, v in want.items()}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighted_max", [32, 0])
def test_each_microbatch_contribution_has_norm_at_most_c(monkeypatch, weighted_max):
  monkeypatch.setattr(sums, "WEIGHTED_MAX_GROUPS", weighted_max)
  params, (real, _) = _params(scale=10.0), _data(num_real=9, padded=12)
  batch = {"x": real["x"], "y": real["y"], "t": jnp.ones(12)}
  ids = _real_ids(jax.random.key(3), 12, 5)

  def loss(p, ex):
    return dpcgan.bce_with_logits(_mlp_d(p, ex["x"][None], ex["y"][None])[0], ex["t"])

  means, counts = sums.group_mean_grads(loss, params, batch, real["mask"], ids, 5)
  total, norms, _ = sums.clipped_group_sum(loss, params, batch, real["mask"], ids, 5, CLIP)
  assert float(jnp.sum(counts)) == 9
  contributions = jax.vmap(lambda g: clipping.clip_gradient(g, CLIP)[0])(means)
  sizes = np.asarray(jax.vmap(clipping.global_norm)(contributions))
  assert np.all(sizes <= C * (1 + 1e-6)) and np.any(np.asarray(norms) > C)
  assert np.all(sizes[np.asarray(counts) == 0] == 0)  # empty microbatches contribute 0
  _assert_trees_close(total, jax.tree.map(lambda c: jnp.sum(c, 0), contributions), rtol=1e-6)


@pytest.mark.parametrize("m", [4, 2, 1])
def test_padding_rows_contribute_exactly_nothing(m):
  params = _params()
  real, fake = _data(num_real=7, padded=10)
  dirty, _ = _data(num_real=7, padded=10, pad_value=np.nan)
  dirty["x"] = dirty["x"].at[8].set(jnp.inf)
  clean = _grad(params, real, fake, m=m)
  _assert_trees_close(_grad(params, dirty, fake, m=m), clean, rtol=0, atol=0)
  if m == 4:  # per example: the same as without the padding rows at all
    short = {k: v[:7] for k, v in real.items()}
    _assert_trees_close(_grad(params, short, fake, m=m), clean, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("m", [4, 1])
def test_one_noise_draw_std_sigma_c_on_the_combined_sum(m):
  """Exactly one N(0, (sigma C)^2) draw per coordinate on (S_real + S_fake), then / m.

  Fails if the fake term were noised too (two draws), if the real term were not
  noised (no draw), or if the noise depended on the real rows.
  """
  params, (real, fake) = _params(), _data()
  sigma = 1.15
  clean = _grad(params, real, fake, m=m)
  noisy = _grad(params, real, fake, m=m, sigma=sigma, key=11)
  diff = jax.tree.map(lambda a, b: (a - b) * m, noisy, clean)
  expected = mechanisms.gaussian_noise_like(jax.tree.map(jnp.zeros_like, params),
                                            jax.random.key(11), sigma * C)
  _assert_trees_close(diff, expected, rtol=1e-4, atol=1e-5)
  no_reals = dict(real, mask=jnp.zeros_like(real["mask"]))
  diff_empty = jax.tree.map(lambda a, b: (a - b) * m,
                            _grad(params, no_reals, fake, m=m, sigma=sigma, key=11),
                            _grad(params, no_reals, fake, m=m))
  _assert_trees_close(diff_empty, expected, rtol=1e-4, atol=1e-5)
  # The std over many independent draws is sigma C / m.
  draws = jax.jit(jax.vmap(lambda k: dpcgan.discriminator_grad(
      _mlp_d, params, real, fake, jax.random.key(7), k, num_microbatches=m, clip=CLIP,
      mechanism=_mech(sigma, m))[0]["w1"]))(jax.random.split(jax.random.key(5), 500))
  spread = np.asarray(draws) - np.asarray(clean["w1"])
  want = sigma * C / m
  assert abs(spread.std() - want) < 5 * want / np.sqrt(2 * spread.size)


def _linear_d(params, x, y):
  del y
  return x.reshape(x.shape[0], -1) @ params["w"]


def test_sensitivity_is_c_per_example_and_2c_for_microbatch_means():
  """Why the accountant uses sigma / 2 for m < B (module docstring of dpcgan.py).

  With w = 0 a real example's BCE gradient is -x/2. Microbatch {x1}: mean -x1/2,
  clipped to -C e1. Adding x2 = -3 x1 to that microbatch flips the mean to +x1/2,
  clipped to +C e1: the sum moves by 2C. Per example, adding x2 adds one clipped
  gradient: it moves by C.
  """
  params = {"w": jnp.zeros((2,))}

  def loss(p, ex):
    return dpcgan.bce_with_logits(_linear_d(p, ex["x"][None], None)[0], 1.0)

  x = jnp.array([[100.0, 0.0], [-300.0, 0.0]])
  one = {"x": x, "y": jnp.zeros(2, jnp.int32)}
  without, with_x2 = jnp.array([True, False]), jnp.array([True, True])
  ids = jnp.zeros(2, jnp.int32)
  s0 = sums.clipped_group_sum(loss, params, one, without, ids, 1, CLIP)[0]["w"]
  s1 = sums.clipped_group_sum(loss, params, one, with_x2, ids, 1, CLIP)[0]["w"]
  assert float(jnp.linalg.norm(s1 - s0)) == pytest.approx(2 * C, rel=1e-5)
  p0 = sums.clipped_grad_sum(loss, params, one, without, CLIP)[0]["w"]
  p1 = sums.clipped_grad_sum(loss, params, one, with_x2, CLIP)[0]["w"]
  assert float(jnp.linalg.norm(p1 - p0)) == pytest.approx(C, rel=1e-5)


def test_accounted_noise_multiplier_and_event():
  c = helpers.config("dpcgan_mnist_eps10")
  assert dpcgan.mechanism(1.15, C, 600, 600).sensitivity_factor == 1  # per example
  assert dpcgan.mechanism(1.15, C, 1, 600).sensitivity_factor == 2  # microbatch means
  assert dpcgan.mechanism(1.15, C, 600, 600).effective_noise_multiplier == pytest.approx(1.15)
  event = dpcgan.declaration(c, 60_000, 1.15).step_event
  assert event == dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.15))
  c.dpcgan.num_microbatches = 60
  declared = dpcgan.declaration(c, 60_000, 1.15)
  assert declared.step_event.event.noise_multiplier == pytest.approx(0.575)
  fields = declared.fields()
  assert fields["microbatch_sensitivity_factor"] == 2 and fields["l2_sensitivity"] == 2 * C
  assert fields["noise_stddev"] == pytest.approx(1.15 * C)


@pytest.mark.parametrize("name,improved,upstream,order", [
    ("dpcgan_mnist_eps10", 8.80, 9.643695567594444, 4.0),
    ("dpcgan_thyroid", 3.24, 3.718745314966683, 7.0),
])
def test_privacy_mode_values(name, improved, upstream, order, capsys):
  """`main.py --config=configs/<name>.py --mode=privacy` (dpcgan.md §3.3, docs/privacy.md).

  dp-accounting's RDP (improved conversion) gives `improved`; upstream printed
  `upstream` from TF-Privacy 0.2.2, i.e. the same sampled-Gaussian RDP curve on
  TF-Privacy's orders with the classic conversion eps = min RDP(a) + log(1/delta)/(a-1).
  """
  for preset in ("paper", "cpu"):
    assert cli.run("privacy", helpers.config(name, preset), None) == 0
    report = json.loads(capsys.readouterr().out)
    assert round(report["epsilon"], 2) == improved and report["within_budget"]
    assert report["accountant"] == "rdp" and report["delta"] == 1e-5
    assert report["noise_multiplier"] == 1.15 and report["accounted_noise_multiplier"] == 1.15
    assert report["epsilon_pld"] < report["epsilon"]  # the tighter accountant, for reference
  n, bsz, steps = {"dpcgan_mnist_eps10": (60_000, 600, 24_900),
                   "dpcgan_thyroid": (3_772, 32, 5_894)}[name]
  assert report["steps"] == steps and report["num_examples"] == n
  assert report["sampling_rate"] == bsz / n  # q = B/N
  # Upstream's number, recomputed here from the hyperparameters alone (not the config).
  event = accounting.poisson_gaussian_event(bsz / n, 1.15, steps)
  eps, alpha = accounting.classic_epsilon(*accounting.rdp_curve(event, orders="tf_privacy"), 1e-5)
  assert eps == pytest.approx(upstream, rel=1e-6) and alpha == order
  assert accounting.epsilon(event, 1e-5) == pytest.approx(report["epsilon"], rel=1e-12)
  # ... and reported beside ours by --mode=privacy.
  assert report["epsilon_classic_tf_privacy_orders"] == pytest.approx(upstream, rel=1e-6)
  assert report["upstream_epsilon"] == upstream


@pytest.mark.parametrize("overrides,fragment", [
    ({"dpcgan.num_microbatches": 7}, "must divide train.batch_size = 600"),
    ({"dpcgan.num_microbatches": 1200}, "must divide train.batch_size = 600"),
    ({"dpcgan.num_microbatches": 0}, "must divide"),
    ({"dpcgan.g_head": "tabular"}, "needs a tabular dataset"),
    ({"dpcgan.g_head": "softmax"}, "dpcgan.g_head must be one of"),
    ({"dpcgan.d_lr": -0.1}, "dpcgan.d_lr must be positive"),
    ({"privacy.clipping": "per_layer"}, "privacy.clipping = 'flat'"),
    ({"train.batch_size": 100_000, "dpcgan.num_microbatches": 100_000}, "larger than the dataset"),
])
def test_user_mistakes_are_one_config_error(overrides, fragment):
  c = helpers.config("dpcgan_mnist_eps10", **overrides)
  with pytest.raises(errors.ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
    helpers.privacy_plan(c)  # the common checks and the method's, as every mode runs them


def test_d_learning_rate_schedule_flag():
  c = helpers.config("dpcgan_mnist_eps10")
  constant = dpcgan.d_learning_rate(c)
  assert [float(constant(s)) for s in (0, 5_000, 20_000)] == pytest.approx([0.15] * 3)
  c.dpcgan.d_lr_decay = True
  decay = dpcgan.d_learning_rate(c)
  assert [float(decay(s)) for s in (0, 5_000, 10_000, 20_000)] == pytest.approx(
      [0.15, 0.101, 0.052, 0.052])
