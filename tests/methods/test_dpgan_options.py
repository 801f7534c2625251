"""DP-GAN recipe options, checked by hand: loss, Adam betas, G moving average, fakes per
step, D label mode, probe size; their validation; paper presets keep upstream values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpgen_jax import errors, methods, parallel, rng
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.methods import averaging, dpgan
from tests import helpers

SPEC = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)


def _smoke(**overrides):
  return helpers.config("mnist_eps10", "smoke", **overrides)


# --- losses -----------------------------------------------------------------------------


def test_hinge_rows_by_hand():
  logits = jnp.array([0.3, 2.0, -0.5, 0.3, -2.0, 0.5])
  target = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
  # reals: max(0, 1 - l); fakes: max(0, 1 + l)
  np.testing.assert_allclose(np.asarray(dpgan.d_row_loss("hinge", logits, target)),
                             [0.7, 0.0, 1.5, 1.3, 0.0, 1.5], rtol=1e-6)


def test_bce_rows_by_hand():
  logits = jnp.array([0.0, 1.0, 1.0])
  target = jnp.array([1.0, 1.0, 0.0])
  want = [np.log(2.0), np.log(1 + np.exp(-1.0)), np.log(1 + np.exp(1.0))]
  np.testing.assert_allclose(np.asarray(dpgan.d_row_loss("bce", logits, target)), want,
                             rtol=1e-6)


def test_generator_losses_by_hand():
  logits = jnp.array([1.0, -3.0])
  assert float(dpgan.g_loss_from_logits("hinge", logits)) == pytest.approx(1.0)  # -mean
  want = np.mean([np.log(1 + np.exp(-1.0)), np.log(1 + np.exp(3.0))])  # -log sigmoid
  assert float(dpgan.g_loss_from_logits("bce", logits)) == pytest.approx(want, rel=1e-6)


# --- the generator's moving average ----------------------------------------------------


def test_ema_decay_warm_up_by_hand():
  t = jnp.array([0, 1, 8, 990, 20_000])
  # min(0.999, (1 + t) / (10 + t))
  np.testing.assert_allclose(np.asarray(averaging.decay(t, 0.999)),
                             [0.1, 2 / 11, 0.5, 0.991, 0.999], rtol=1e-6)


def test_ema_after_two_g_steps_and_it_is_what_is_sampled():
  c = _smoke(**{"dpgan.g_ema_decay": 0.9, "dpgan.d_steps_per_g_step": 1})
  method = methods.build(c, SPEC, parallel.make_mesh())
  state = method.init(rng.make_key(0))
  g0 = state.g_params
  s1 = method._g_update(state, rng.make_key(1))
  s2 = method._g_update(s1, rng.make_key(2))
  # decay 0.1 at t = 0, then 2/11 at t = 1
  for e, p0, p1, p2 in zip(*(jax.tree.leaves(t) for t in (s2.ema_g_params, g0, s1.g_params,
                                                          s2.g_params))):
    e1 = 0.1 * np.asarray(p0) + 0.9 * np.asarray(p1)
    want = 2 / 11 * e1 + 9 / 11 * np.asarray(p2)
    np.testing.assert_allclose(np.asarray(e), want, rtol=1e-5, atol=1e-6)
  labels = jnp.arange(4) % 10
  got = method.sample(s2, rng.make_key(3), labels)
  z = jax.random.normal(rng.make_key(3), (4, c.dpgan.latent_dim))
  want = method.generator.apply({"params": s2.ema_g_params}, z, labels)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


# --- Adam betas --------------------------------------------------------------------------


def test_d_and_g_betas_reach_their_optimisers():
  """Two Adam steps on a scalar with gradients 1 then 3, by hand (eps 1e-8)."""
  def adam(lr, b1, b2, grads):
    m = v = 0.0
    x = 0.0
    for t, g in enumerate(grads, start=1):
      m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
      x -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + 1e-8)
    return x

  c = _smoke(**{"dpgan.d_beta1": 0.0, "dpgan.d_beta2": 0.99, "dpgan.g_beta1": 0.5,
                "dpgan.g_beta2": 0.9, "dpgan.d_lr": 0.1, "dpgan.g_lr": 0.2})
  method = methods.build(c, SPEC, parallel.make_mesh())
  for tx, (lr, b1, b2) in ((method.d_tx, (0.1, 0.0, 0.99)), (method.g_tx, (0.2, 0.5, 0.9))):
    x, opt = jnp.zeros(()), tx.init(jnp.zeros(()))
    for g in (1.0, 3.0):
      upd, opt = tx.update(jnp.asarray(g), opt, x)
      x = optax.apply_updates(x, upd)
    assert float(x) == pytest.approx(adam(lr, b1, b2, (1.0, 3.0)), rel=1e-5)


# --- fakes per step, probe size ----------------------------------------------------------


def test_num_fakes_sets_the_fake_rows_and_the_divisor():
  # q = 1/ceil(60000/1024) = 1/59: int(qN) = 1016 real rows expected.
  assert dpgan.fake_batch_size(1024, 60_000, 256) == 256
  assert dpgan.dp_divisor(1024, 60_000, 256) == 1016 + 256
  assert dpgan.dp_divisor(1024, 60_000) == 1016 + 1017  # upstream: round(qN) fakes
  c = _smoke(**{"dpgan.num_fakes": 5, "train.batch_size": 32})
  method = methods.build(c, SPEC, parallel.make_mesh())
  assert method.num_fakes == 5 and method.divisor == int(60_000 / 1875) + 5
  x, _ = method._fakes(method.init(rng.make_key(0)).g_params, rng.make_key(1), method.num_fakes)
  assert x.shape == (5, 28, 28, 1)


def test_g_batch_size_sets_the_generator_step_batch_only():
  mesh = parallel.make_mesh()
  default = methods.build(_smoke(**{"dpgan.num_fakes": 6}), SPEC, mesh)
  assert default.g_batch == 6  # 0: as many as the fakes per D step (upstream)
  c = _smoke(**{"dpgan.num_fakes": 6, "dpgan.g_batch_size": 11})
  method = methods.build(c, SPEC, mesh)
  assert (method.num_fakes, method.g_batch, method.divisor) == (6, 11, 32 + 6)
  assert method.plan.fields["g_batch_size"] == 11
  seen = []
  real_fakes = method._fakes

  def spy(g_params, key, n):
    seen.append(n)
    return real_fakes(g_params, key, n)

  method._fakes = spy
  method._g_update(method.init(rng.make_key(0)), rng.make_key(1))
  assert seen == [method.probe_size, 11]  # the probe, then the G step's batch


def test_g_steps_per_cycle_takes_that_many_generator_steps_against_the_same_d():
  c = _smoke(**{"dpgan.g_steps_per_cycle": 2, "dpgan.g_ema_decay": 0.5})
  method = methods.build(c, SPEC, parallel.make_mesh())
  state = method.init(rng.make_key(0))
  key = rng.make_key(1)
  after = method._g_update(state, key)
  assert int(after.g_steps) == 2 and int(after.since_g) == 0
  # By hand: the same key split as the method, two Adam steps on the G loss, EMA twice.
  _, k_g = jax.random.split(key)
  params, opt, ema = state.g_params, state.g_opt, state.ema_g_params
  for t, k in enumerate(jax.random.split(k_g, 2)):
    def loss(p, k=k):
      x, y = method._fakes(p, k, method.g_batch)
      return jnp.mean(jax.nn.softplus(-method._d_apply(state.d_params, x, y)))  # BCE G loss
    upd, opt = method.g_tx.update(jax.grad(loss)(params), opt, params)
    params = optax.apply_updates(params, upd)
    decay = min(0.5, (1 + t) / (10 + t))
    ema = jax.tree.map(lambda e, p, d=decay: d * e + (1 - d) * p, ema, params)
  for a, b in zip(jax.tree.leaves(after.g_params), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(after.ema_g_params), jax.tree.leaves(ema)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_probe_batch_size_zero_means_the_batch_size():
  assert methods.build(_smoke(), SPEC, parallel.make_mesh()).probe_size == 32
  c = _smoke(**{"dpgan.probe_batch_size": 8})
  assert methods.build(c, SPEC, parallel.make_mesh()).probe_size == 8


# --- the discriminator's label mode -------------------------------------------------------


@pytest.mark.parametrize("mode", ["embedding", "projection", "auxiliary"])
def test_label_mode_reaches_the_discriminator_and_a_private_d_step_runs(mode):
  c = _smoke(**{"dpgan.d_label": mode, "privacy.noise_multiplier": 1.0})
  method = methods.build(c, SPEC, parallel.make_mesh())
  assert method.discriminator.label_mode == mode
  state = method.init(rng.make_key(0))
  assert "conv1_2" not in state.d_params
  assert ("aux_head" if mode == "auxiliary" else "label_embed") in state.d_params
  data = np.random.default_rng(0)
  batch = {"x": jnp.asarray(data.uniform(size=(40, 28, 28, 1)), jnp.float32),
           "y": jnp.asarray(data.integers(0, 10, 40), jnp.int32),
           "mask": jnp.asarray(np.arange(40) < 30)}
  d_params, _, metrics = jax.jit(method._d_update)(state, batch, rng.make_key(1),
                                                   rng.make_key(2))
  assert np.isfinite(float(metrics["d_loss"]))
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), d_params, state.d_params)
  assert all(jax.tree.leaves(moved))


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("key,value,message", [
    ("loss", "wgan", r"dpgan.loss must be one of \('bce', 'hinge'\), got 'wgan'"),
    ("g_beta1", 1.0, r"dpgan.g_beta1 must be in \[0, 1\), got 1.0"),
    ("d_beta2", -0.1, r"dpgan.d_beta2 must be in \[0, 1\), got -0.1"),
    ("g_ema_decay", 1.0, r"dpgan.g_ema_decay must be in \[0, 1\)"),
    ("num_fakes", -1, r"dpgan.num_fakes must be >= 0"),
    ("g_batch_size", -2, r"dpgan.g_batch_size must be >= 0"),
    ("g_steps_per_cycle", 0, r"dpgan.g_steps_per_cycle must be >= 1, got 0"),
    ("d_label", "onehot", r"dpgan.d_label must be one of .*got 'onehot'"),
    ("g_norm", "layer", r"dpgan.g_norm must be one of .*got 'layer'"),
    ("g_lr", 0.0, r"dpgan.g_lr and dpgan.d_lr must be positive"),
])
def test_bad_option_values_are_one_clear_config_error(key, value, message):
  with pytest.raises(errors.ConfigError, match=message):
    dpgan.validate(_smoke(**{f"dpgan.{key}": value}), None)


@pytest.mark.parametrize("name", helpers.configs_of("dpgan"))
def test_paper_presets_keep_the_upstream_recipe(name):
  g = helpers.config(name, "paper").dpgan
  assert (g.loss, g.g_lr, g.d_lr) == ("bce", 2e-4, 2e-4)
  assert (g.g_beta1, g.g_beta2, g.d_beta1, g.d_beta2) == (0.5, 0.999, 0.5, 0.999)
  assert (g.g_ema_decay, g.num_fakes, g.probe_batch_size, g.g_batch_size) == (0.0, 0, 0, 0)
  assert (g.d_label, g.g_norm, g.g_steps_per_cycle) == ("planes", "none", 1)
  assert (g.g_width, g.d_width, g.latent_dim) == (128, 128, 128)


# --- the auxiliary classifier (d_label = 'auxiliary', AC-GAN) ----------------------------


def _aux_method(weight=2.0, **overrides):
  c = _smoke(**{"dpgan.d_label": "auxiliary", "dpgan.aux_weight": weight,
                "privacy.noise_multiplier": 1.0, **overrides})
  method = methods.build(c, SPEC, parallel.make_mesh())
  return method, method.init(rng.make_key(0))


def _rows(n, seed=0):
  data = np.random.default_rng(seed)
  return (jnp.asarray(data.uniform(size=(n, 28, 28, 1)), jnp.float32),
          jnp.asarray(data.integers(0, 10, n), jnp.int32))


def test_auxiliary_discriminator_ignores_the_label_and_scores_classes():
  method, state = _aux_method()
  assert "label_embed" not in state.d_params and "aux_head" in state.d_params
  x, y = _rows(5)
  logits, class_logits = method.discriminator.apply({"params": state.d_params}, x, y)
  assert logits.shape == (5,) and class_logits.shape == (5, 10)
  other = method.discriminator.apply({"params": state.d_params}, x, (y + 3) % 10)
  # The label must not enter D: otherwise the class head could read it off its input.
  np.testing.assert_array_equal(np.asarray(other[0]), np.asarray(logits))
  np.testing.assert_array_equal(np.asarray(other[1]), np.asarray(class_logits))
  _, ce = method._d_scores(state.d_params, x, y)
  log_p = jax.nn.log_softmax(np.asarray(class_logits, np.float64), axis=-1)
  np.testing.assert_allclose(np.asarray(ce), -log_p[np.arange(5), np.asarray(y)], rtol=1e-5)


@pytest.mark.parametrize("strategy", ["vmap", "ghost"])
def test_auxiliary_loss_of_real_rows_is_inside_the_clipped_record(strategy):
  """Sum of per-row gradients of hinge + w * CE (reals only), each clipped to C, by hand."""
  method, state = _aux_method(weight=2.0, **{"dpgan.loss": "hinge"})
  xr, yr = _rows(6, seed=1)
  xf, yf = _rows(3, seed=2)
  real = {"x": xr, "y": yr, "mask": jnp.asarray([True] * 5 + [False])}
  fake = {"x": xf, "y": yf}
  clip = dpgan.clipping.ClippingSpec(clip_norm=0.05)
  mech = dpgan.mechanism(1.0, 0.05, 32, 60_000, 3)
  grad, _, norms, _ = dpgan.private_discriminator_grad(
      method._d_scores, state.d_params, real, fake, rng.make_key(3), clip=clip,
      mechanism=mech, strategy=strategy, loss_name="hinge", aux_weight=2.0)

  def row_loss(params, x, y, is_real):
    logits, class_logits = method.discriminator.apply({"params": params}, x[None], y[None])
    hinge = jax.nn.relu(1.0 - logits[0]) if is_real else jax.nn.relu(1.0 + logits[0])
    ce = -jax.nn.log_softmax(class_logits[0])[y]
    return hinge + (2.0 * ce if is_real else 0.0)

  total = jax.tree.map(jnp.zeros_like, state.d_params)
  want_norms = []
  rows = [(xf[i], yf[i], False) for i in range(3)] + [(xr[i], yr[i], True) for i in range(5)]
  for x, y, is_real in rows:
    g = jax.grad(row_loss)(state.d_params, x, y, is_real)
    norm = float(optax.tree.norm(g))
    want_norms.append(norm)
    total = jax.tree.map(lambda t, a, f=min(1.0, 0.05 / (norm + 1e-6)): t + f * a, total, g)
  np.testing.assert_allclose(np.asarray(norms)[:8], want_norms, rtol=2e-4)
  # The released gradient is (clipped sum + N(0, (sigma C)^2)) / divisor: subtract the
  # hand-made clipped sum and the noise must have the calibrated scale.
  noise = jnp.concatenate([jnp.ravel(a * mech.divisor - b) for a, b in
                           zip(jax.tree.leaves(grad), jax.tree.leaves(total))])
  assert abs(float(jnp.std(noise)) / 0.05 - 1.0) < 0.05
  # And the CE term is really there: with aux_weight 0 the norms differ.
  _, _, plain_norms, _ = dpgan.private_discriminator_grad(
      method._d_scores, state.d_params, real, fake, rng.make_key(3), clip=clip,
      mechanism=mech, strategy=strategy, loss_name="hinge", aux_weight=0.0)
  assert not np.allclose(np.asarray(plain_norms)[3:8], want_norms[3:])
  np.testing.assert_allclose(np.asarray(plain_norms)[:3], want_norms[:3], rtol=2e-4)


def test_auxiliary_generator_loss_adds_the_class_cross_entropy():
  method, state = _aux_method(weight=3.0, **{"privacy.noise_multiplier": None,
                                             "privacy.enabled": False})
  key = rng.make_key(4)
  after = jax.jit(method._g_update)(state, key)
  # The same G step by hand: non-saturating BCE + 3 * CE of D's class head on the fakes.
  _, k_g = jax.random.split(key)

  def loss(g_params):
    x, y = method._fakes(g_params, k_g, method.g_batch)
    logits, class_logits = method.discriminator.apply({"params": state.d_params}, x, y)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(class_logits), y[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.softplus(-logits)) + 3.0 * jnp.mean(ce)

  upd, _ = method.g_tx.update(jax.grad(loss)(state.g_params), state.g_opt, state.g_params)
  want = optax.apply_updates(state.g_params, upd)
  for a, b in zip(jax.tree.leaves(after.g_params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_aux_weight_must_not_be_negative():
  with pytest.raises(errors.ConfigError, match=r"dpgan.aux_weight must be >= 0, got -1"):
    dpgan.validate(_smoke(**{"dpgan.aux_weight": -1.0}), None)
