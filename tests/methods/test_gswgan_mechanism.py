"""GS-WGAN's mechanism: sanitiser, G step, shards, vmapped pretraining, privacy numbers."""

import json

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpgen_jax import cli, errors, methods, parallel
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.methods import gswgan
from dpgen_jax.methods.gswgan import core as gswgan_core, pretrain as gswgan_pretrain
from dpgen_jax.privacy import accounting
from tests import helpers

KEY = jax.random.key(0, impl="rbg")
SPEC = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)


def _rows(norms, dim=784, seed=0):
  g = np.random.default_rng(seed).normal(size=(len(norms), dim))
  return jnp.asarray(g / np.linalg.norm(g, axis=1, keepdims=True) * np.asarray(norms)[:, None],
                     jnp.float32)


def test_without_noise_every_sanitised_row_has_norm_at_most_c():
  norms = [0.01, 0.3, 0.99, 1.0, 1.5, 7.0, 300.0]
  grads = _rows(norms).reshape(len(norms), 28, 28, 1)
  out, before = gswgan_core.sanitize_image_grads(grads, KEY, clip_norm=0.5, noise_multiplier=0.0)
  assert out.shape == grads.shape
  after = np.linalg.norm(np.asarray(out).reshape(len(norms), -1), axis=1)
  np.testing.assert_allclose(np.asarray(before), norms, rtol=1e-5)
  assert np.all(after <= 0.5 * (1 + 1e-6))
  np.testing.assert_allclose(after, np.minimum(norms, 0.5), rtol=1e-5)
  # Rows already inside the ball are untouched (up to the 1e-10 in the coefficient).
  np.testing.assert_allclose(np.asarray(out)[:2], np.asarray(grads)[:2], rtol=1e-6)


def test_non_private_mode_rescales_every_row_to_exactly_c():
  norms = [0.01, 0.3, 2.0, 50.0]
  out, _ = gswgan_core.sanitize_image_grads(_rows(norms), KEY, clip_norm=1.0,
                                            noise_multiplier=1.07, private=False)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1), 1.0, rtol=1e-5)


def test_added_noise_has_std_two_c_sigma_per_pixel():
  grads = _rows([3.0] * 128)
  clipped, _ = gswgan_core.sanitize_image_grads(grads, KEY, clip_norm=0.7, noise_multiplier=0.0)
  noisy, _ = gswgan_core.sanitize_image_grads(grads, KEY, clip_norm=0.7, noise_multiplier=1.5)
  noise = np.asarray(noisy - clipped)
  assert noise.std() == pytest.approx(2 * 0.7 * 1.5, rel=0.01)  # 100k draws: ~0.2% error
  assert abs(noise.mean()) < 0.02


def _tiny_method(**overrides):
  c = helpers.config("gswgan_mnist_eps10", "smoke", **overrides)
  return c, methods.build(c, SPEC, parallel.make_mesh())


def test_generator_step_pulls_back_minus_mean_of_the_clipped_per_example_gradients():
  """Noise 0: G's update equals Adam on -(1/B) sum_i <clip(dD/dx_i), G(theta)_i>."""
  c, method = _tiny_method(**{"train.batch_size": 8})
  gan = method.gan
  k1, k2, k3 = jax.random.split(KEY, 3)
  gen, d = jax.jit(gan.init_generator)(k1), jax.jit(gan.init_discriminator)(k2)
  new_gen, _, metrics = jax.jit(lambda g: gan.generator_step_sanitized(
      g, lambda x, y: gan.critic_image_grads(d.params, d.sn, x, y), k3, KEY, clip_norm=0.01,
      noise_multiplier=0.0, private=True))(gen)

  z, y = gan._fake_labels(k3, 8)
  x, _ = jax.jit(gan.generate)(gen.params, gen.sn, z, y)
  # Per-example input gradients one example at a time (D's SN state as in the step).
  one = jax.vmap(jax.grad(lambda xi, yi: gan.critic(d.params, d.sn, xi[None], yi[None])[0][0]))
  g = np.asarray(jax.jit(one)(x, y)).reshape(8, -1)
  g = g * np.minimum(1.0, 0.01 / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-10))
  assert float(metrics["clip_fraction"]) > 0  # the clip is active in this check

  @jax.jit
  def reference(params, opt):
    surrogate = lambda p: -jnp.sum(jnp.asarray(g).reshape(x.shape) *
                                   gan.generate(p, gen.sn, z, y)[0]) / 8
    updates, _ = gan.g_tx.update(jax.grad(surrogate)(params), opt, params)
    return optax.apply_updates(params, updates)

  expected = reference(gen.params, gen.opt)
  for a, b in zip(jax.tree.leaves(new_gen.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-7)


def test_shard_iterator_alternates_32_and_28_and_covers_each_pass():
  x = jnp.arange(60, dtype=jnp.float32).reshape(60, 1, 1, 1) * jnp.ones((60, 28, 28, 1))
  y = jnp.arange(60, dtype=jnp.int32)
  seen = []
  for count in range(4):
    xb, yb, mask = gswgan_core.Core.shard_batch(x, y, KEY, jnp.asarray(count), 32)
    assert xb.shape == (32, 28, 28, 1) and int(mask.sum()) == (32 if count % 2 == 0 else 28)
    seen.append(np.asarray(yb)[np.asarray(mask)])
  for first, second in (seen[0:2], seen[2:4]):
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(60))
  assert not np.array_equal(np.concatenate(seen[0:2]), np.concatenate(seen[2:4]))


def test_partition_shards_are_disjoint_cover_n_over_k_times_k_and_match_upstream():
  idx = gswgan_pretrain.partition(1003, 10, seed=1)
  assert idx.shape == (10, 100)
  assert len(np.unique(idx)) == 1000 and idx.min() >= 0 and idx.max() < 1003
  legacy = np.arange(1003)
  np.random.seed(1)
  np.random.shuffle(legacy)  # upstream: np.random.seed(1); np.random.shuffle(indices)
  np.testing.assert_array_equal(idx.ravel(), legacy[:1000])
  full = gswgan_pretrain.partition(60_000, 1000, seed=1)
  assert full.shape == (1000, 60) and len(np.unique(full)) == 60_000


def test_vmapped_pretraining_equals_one_discriminator_at_a_time():
  # DCGAN: the property does not depend on G, and it compiles faster than the ResNet.
  c, method = _tiny_method(**{"gswgan.pretrain_iterations": 2, "train.batch_size": 8,
                              "gswgan.critic_iters": 1, "gswgan.gen_arch": "DCGAN"})
  rs = np.random.RandomState(0)
  xs = rs.randint(0, 256, (4, 12, 28, 28, 1)).astype(np.uint8)
  ys = rs.randint(0, 10, (4, 12)).astype(np.int32)
  pre = gswgan_pretrain.Pretrainer(method.gan, c, method.mesh, xs, ys)
  together = pre.run_chunk(1, 4)
  for i in (1, 3):
    alone = pre.run_chunk(i, i + 1)
    for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
      np.testing.assert_allclose(np.asarray(a)[i - 1], np.asarray(b)[0], rtol=1e-4, atol=1e-6)


def _privacy_report(config, capsys):
  assert cli.run("privacy", config, None) == 0
  return json.loads(capsys.readouterr().out)


def test_paper_preset_runs_per_row_selection_whose_published_epsilon_is_a_bound(capsys):
  report = _privacy_report(helpers.config("gswgan_mnist_eps10"), capsys)
  assert report["selection"] == "per_row" and report["accounting"] == "sound"
  assert report["epsilon"] == pytest.approx(9.2428, abs=1e-3)  # dp-accounting's conversion
  assert report["epsilon_per_row"] == report["epsilon"] and "epsilon_bound" not in report
  assert "epsilon_caveat" not in report and report["within_budget"]
  # Upstream's number: the same RDP curve with the classic conversion (docs/privacy.md, accounting test vectors).
  assert report["epsilon_upstream_classic"] == pytest.approx(9.992623570832224, rel=1e-9)
  assert report["epsilon_upstream_classic_order"] == 4
  # One critic for all 32 rows (upstream's code): amplified once, sigma / sqrt(32).
  assert report["epsilon_per_step"] == pytest.approx(2.97e5, rel=0.01)
  assert report["steps"] == 20_000 and report["compositions_per_step"] == 32
  assert report["sampling_rate"] == 1e-3 and report["noise_std_per_pixel"] == pytest.approx(2.14)
  assert report["epsilon_pld"] is None  # dp-accounting's PLD has no WOR sampling


def test_upstream_code_is_accounted_soundly_by_default(capsys):
  per_step = helpers.config("gswgan_mnist_eps10", **{"gswgan.selection": "per_step",
                                                     "privacy.target_epsilon": None})
  report = _privacy_report(per_step, capsys)
  assert report["epsilon"] == pytest.approx(2.97e5, rel=0.01)
  assert report["compositions_per_step"] == 1 and "epsilon_caveat" not in report


def test_upstream_accounting_of_upstream_code_is_shown_with_a_caveat_and_the_bound(capsys):
  c = helpers.config("gswgan_mnist_eps10", **{"gswgan.selection": "per_step",
                                              "gswgan.accounting": "upstream"})
  report = _privacy_report(c, capsys)
  assert report["epsilon"] == pytest.approx(9.2428, abs=1e-3)  # the published claim ...
  assert report["epsilon_bound"] == pytest.approx(2.97e5, rel=0.01)  # ... and the bound
  assert "NOT a bound" in report["epsilon_caveat"]
  assert report["within_budget"] is False  # the budget is checked against the bound


def test_the_classic_conversion_of_the_rdp_curve_is_upstreams_9_9926():
  event = dp_accounting.SelfComposedDpEvent(gswgan.step_event(1.07, 1000, 32, "per_row"),
                                            20_000)
  orders, curve = accounting.rdp_curve(event, orders="int500", neighboring="replace_one")
  eps, order = accounting.classic_epsilon(orders, curve, 1e-5)
  assert (eps, order) == (pytest.approx(9.992623570832224, rel=1e-12), 4.0)


@pytest.mark.parametrize("overrides, message", [
    ({"privacy.neighboring": "add_or_remove_one"}, "replace_one"),
    ({"privacy.accountant": "pld"}, "PLD accountant does not support"),
    ({"gswgan.stage": "eval"}, "gswgan.stage must be one of"),
    ({"gswgan.accounting": "conservative"}, "gswgan.accounting must be one of"),
    ({"gswgan.selection": "per_batch"}, "gswgan.selection must be one of"),
    ({"gswgan.critic_chunk": 0}, "gswgan.critic_chunk must be in"),
    ({"gswgan.num_discriminators": 0}, "num_discriminators must be a positive"),
    ({"data.name": "thyroid"}, "28x28x1 images"),
])
def test_user_mistakes_are_one_config_error(overrides, message):
  c = helpers.config("gswgan_mnist_eps10", "smoke", **overrides)
  from dpgen_jax.data import registry
  with pytest.raises(errors.ConfigError, match=message):
    gswgan.validate(c, registry.static_spec(c.data))


def test_critic_choice_follows_the_secret_root_not_the_seed():
  """Two runs of one config (same train.seed) choose different critics; one root, the
  same (so a resumed run chooses what the first attempt chose)."""
  from dpgen_jax import rng
  from dpgen_jax.privacy import randomness
  k = 100
  # The 'drawn' schedule trains the drawn critics, which makes the draws visible in the
  # state (round-robin training is public and the same for every root).
  c, method = _tiny_method(**{"gswgan.num_discriminators": k, "gswgan.critic_iters": 1,
                              "gswgan.gen_arch": "DCGAN", "gswgan.critic_schedule": "drawn",
                              "gswgan.accounting": "upstream",
                              "privacy.target_epsilon": None})
  r = np.random.default_rng(0)
  method._shards = {"x": jnp.asarray(r.integers(0, 256, (k, 12, 28, 28, 1), dtype=np.uint8)),
                    "y": jnp.asarray(r.integers(0, 10, (k, 12)), jnp.int32)}

  def trained_critics(root):  # batches drawn per critic in one per-row step
    method._shard_key = root.key("gswgan/shards")
    state, metrics = method.train_step(method.init(rng.make_key(0)), None,
                                       randomness.StepKeys(root)(0))
    assert "discriminator" not in metrics  # the subsampling outcome is never a metric
    return np.asarray(state.discs.batches)

  a, b = randomness.SecretRoot.from_entropy(), randomness.SecretRoot.from_entropy()
  first, again, other = trained_critics(a), trained_critics(a), trained_critics(b)
  # B = 8 rows, each chosen critic trained one batch (a critic drawn twice keeps one copy).
  assert 0 < first.sum() <= 8 and set(first.tolist()) <= {0, 1}
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)  # P(the same critics) < 1e-10


def _random_critics_method(k, **overrides):
  from dpgen_jax import rng
  c, method = _tiny_method(**{"gswgan.num_discriminators": k, "gswgan.critic_iters": 1,
                              "gswgan.gen_arch": "DCGAN", **overrides})
  r = np.random.default_rng(0)
  method._shards = {"x": jnp.asarray(r.integers(0, 256, (k, 12, 28, 28, 1), dtype=np.uint8)),
                    "y": jnp.asarray(r.integers(0, 10, (k, 12)), jnp.int32)}
  return c, method, rng


def test_round_robin_critic_state_does_not_depend_on_the_secret_draws():
  """The condition of the composition proof: after a step, every critic (parameters,
  spectral-norm vectors, optimiser state, batch counter) is the same whichever critics
  the rows drew; only the scheduled critic changed."""
  from dpgen_jax.privacy import randomness
  k = 6
  c, method, rng = _random_critics_method(k)
  method._shard_key = jax.random.key(5)  # the same critic randomness in both worlds
  before = method.init(rng.make_key(0))
  outs = []
  model_key = randomness.StepKeys(randomness.SecretRoot.from_entropy())(0)["model"]
  for _ in range(2):  # the same critic randomness ('model'), different draws ('noise')
    noise_key = randomness.StepKeys(randomness.SecretRoot.from_entropy())(0)["noise"]
    state, _ = method.train_step(method.init(rng.make_key(0)), None,
                                 {"model": model_key, "noise": noise_key})
    outs.append(state.discs)
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  changed = [i for i in range(k) if not all(
      np.array_equal(np.asarray(x[i]), np.asarray(y[i]))
      for x, y in zip(jax.tree.leaves(before.discs), jax.tree.leaves(outs[0])))]
  assert changed == [0]  # step 0 trains critic 0


def test_each_row_uses_only_its_own_critic():
  c, method, rng = _random_critics_method(3)
  gan = method.gan
  nets = jax.vmap(gan.init_discriminator)(jax.random.split(jax.random.key(1), 3))
  x = jax.random.uniform(jax.random.key(2), (3, 28, 28, 1))
  y = jnp.asarray([1, 4, 7])
  rows, _, _ = gan.per_row_image_grads(nets.params, nets.sn, x, y, 1)
  for i in range(3):
    one = gswgan_core.tree_index(nets, i)
    alone, _, _ = gan.critic_image_grads(one.params, one.sn, x[i:i + 1], y[i:i + 1])
    np.testing.assert_allclose(np.asarray(rows[i]), np.asarray(alone[0]), rtol=1e-5, atol=1e-7)
  other, _, _ = gan.critic_image_grads(gswgan_core.tree_index(nets, 1).params,
                                       gswgan_core.tree_index(nets, 1).sn, x[:1], y[:1])
  assert not np.allclose(np.asarray(rows[0]), np.asarray(other[0]))


def test_upstream_schedule_has_no_proven_bound(capsys):
  c = helpers.config("gswgan_mnist_eps10", **{"gswgan.critic_schedule": "drawn",
                                              "gswgan.selection": "per_step"})
  from dpgen_jax.data import registry
  with pytest.raises(errors.ConfigError, match="no proven privacy bound"):
    gswgan.validate(c, registry.static_spec(c.data))
  c.gswgan.accounting, c.privacy.target_epsilon = "upstream", None
  report = _privacy_report(c, capsys)
  assert report["epsilon"] == pytest.approx(9.2428, abs=1e-3)
  assert report["epsilon_bound"] is None and "no bound is proven" in report["epsilon_caveat"]
