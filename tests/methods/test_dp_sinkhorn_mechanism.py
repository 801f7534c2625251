"""DP-Sinkhorn's mechanism, accounting and generators (dp_sinkhorn.md §1, §3)."""

import json

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax import methods
from dpgen_jax import cli, errors, parallel, rng
from dpgen_jax.data import registry
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.methods import dp_sinkhorn
from dpgen_jax.models import init, sinkhorn_generators as generators
from dpgen_jax.privacy import accounting
from tests import helpers

SPEC = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)


# ---- the image-gradient mechanism ----


def _sanitizer(clip_norm, sigma):
  return dp_sinkhorn.sanitizer(clip_norm, sigma)


def test_without_noise_the_block_is_clipped_to_c_as_one_block():
  grad = jax.random.normal(rng.make_key(0), (50, 28, 28, 1)) * 3.0
  out, norm = _sanitizer(0.5, 0.0)(grad, rng.make_key(1))
  assert float(norm) > 0.5
  assert float(jnp.linalg.norm(out)) <= 0.5 + 1e-6
  # One factor for the whole block (not per row): the direction is unchanged.
  np.testing.assert_allclose(np.asarray(out), np.asarray(grad) * 0.5 / (float(norm) + 1e-6),
                             rtol=1e-5)
  small = grad * 1e-4
  kept, _ = _sanitizer(0.5, 1.0).clip_only(small)
  np.testing.assert_allclose(np.asarray(kept), np.asarray(small), rtol=1e-6)


def test_noise_has_per_pixel_std_two_c_sigma():
  c, sigma = 0.5, 1.1
  zeros = jnp.zeros((50, 28, 28, 1))
  out, _ = _sanitizer(c, sigma)(zeros, rng.make_key(2))
  draws = np.asarray(out).ravel()
  want = 2 * c * sigma
  assert abs(draws.std() - want) < 6 * want / np.sqrt(2 * draws.size)
  assert abs(draws.mean()) < 6 * want / np.sqrt(draws.size)


def test_dp_event_and_privacy_fields():
  c = helpers.config("sinkhorn_mnist_m1")
  declared = dp_sinkhorn.declaration(c, 60_000, 1.1)
  assert declared.step_event == dp_accounting.PoissonSampledDpEvent(
      1 / 1200, dp_accounting.GaussianDpEvent(1.1))
  fields = declared.fields()
  assert (fields["fake_batch_size"], fields["extra_fake_batch_size"]) == (50, 10)
  assert fields["noise_std_per_pixel"] == pytest.approx(1.1)
  assert fields["sensitivity"] == pytest.approx(1.0)
  assert fields["epsilon_classic_tf_privacy"] == pytest.approx(10.000306967989392, rel=1e-6)
  assert fields["upstream_run_length"]["epochs"] == 2872


# ---- accounting: upstream's run lengths and the improved conversion ----


@pytest.mark.parametrize("n,bsz,sigma,delta,epochs,eps,eps_before", [
    (60_000, 50, 1.1, 1e-5, 2872, 10.000306967989392, 9.998428438469197),
    (60_000, 50, 0.9, 1e-5, 1510, 10.001158056118308, 9.99758455421756),
    (162_770, 200, 0.8, 1e-6, 571, 10.005223332159005, 9.995766146263783),
])
def test_upstream_run_lengths_with_the_classic_conversion(n, bsz, sigma, delta, epochs, eps,
                                                          eps_before):
  """docs/privacy.md (accounting test vectors): the first epoch count whose classic epsilon exceeds 10."""
  run = dp_sinkhorn.upstream_run_length(n, bsz, sigma, delta, 10.0)
  assert run["epochs"] == epochs and run["steps"] == epochs * (n // bsz)
  # dp-accounting's RDP and TF-Privacy's agree to ~1e-7 relative.
  assert run["epsilon"] == pytest.approx(eps, rel=1e-6)
  assert run["epsilon_one_epoch_earlier"] == pytest.approx(eps_before, rel=1e-6)
  # The same number from dp-accounting's RDP curve, classic conversion, tf_privacy_ext.
  grid, rdp = accounting.rdp_curve(accounting.poisson_gaussian_event(bsz / n, sigma,
                                                                     run["steps"]),
                                   orders="tf_privacy_ext")
  assert accounting.classic_epsilon(grid, rdp, delta)[0] == pytest.approx(eps, rel=1e-6)


@pytest.mark.parametrize("steps,eps", [(10_000, 0.84), (100_000, 1.50), (500_000, 3.45),
                                       (1_000_000, 5.00), (2_000_000, 7.32)])
def test_mnist_classic_epsilon_curve_matches_the_reference(steps, eps):
  """docs/privacy.md (accounting test vectors), MNIST curve (q = 1/1200, sigma 1.1, delta 1e-5, classic)."""
  grid, rdp = accounting.rdp_curve(accounting.poisson_gaussian_event(1 / 1200, 1.1, steps),
                                   orders="tf_privacy_ext")
  assert accounting.classic_epsilon(grid, rdp, 1e-5)[0] == pytest.approx(eps, abs=0.006)


CONFIGS = ("sinkhorn_mnist_m1", "sinkhorn_mnist_m3", "sinkhorn_fashion_mnist_m1",
           "sinkhorn_fashion_mnist_m3", "sinkhorn_celeba")
# dp_sinkhorn.md §4: (steps of the paper preset, sigma, m or None for the squared L2 cost).
PAPER = {"sinkhorn_mnist_m1": (3_446_400, 1.1, 1.0), "sinkhorn_mnist_m3": (3_446_400, 1.1, 3.0),
         "sinkhorn_fashion_mnist_m1": (1_812_000, 0.9, 1.0),
         "sinkhorn_fashion_mnist_m3": (1_812_000, 0.9, 3.0),
         "sinkhorn_celeba": (464_223, 0.8, None)}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("preset", ("paper", "cpu", "smoke"))
def test_every_config_and_preset_validates_and_stays_within_epsilon_10(name, preset):
  c = helpers.config(name, preset)
  report = helpers.privacy_report(c, compare_accountants=False)
  assert report["epsilon"] <= 10.0 and report["target_epsilon"] == 10.0
  steps, sigma, mixture = PAPER[name]
  s = c.dp_sinkhorn
  assert s.cost == ("sq_l2" if mixture is None else "l1_sq_l2")
  assert s.loss == ("full_divergence" if mixture is None else "semi_debiased")
  if mixture is not None:
    assert s.mixture_fraction == mixture and s.debias_ratio == 0.2
  if preset == "paper":
    # Upstream's step counts and sigma: the classic conversion says just over 10, the
    # improved one (what the run reports) about 9.2.
    assert report["steps"] == steps and report["noise_multiplier"] == sigma
    assert report["epsilon_classic_tf_privacy"] > 10.0
    assert 9.0 < report["epsilon"] < 9.4
    assert (s.lr, s.weight_decay, s.label_scale) == (1e-5, 1e-5, 15.0)
  if preset == "cpu":  # fewer steps, sigma calibrated to the same budget
    assert report["steps"] < steps and report["noise_multiplier_calibrated_for"] == 10.0
    assert 9.9 < report["epsilon"] <= 10.0


def test_run_length_skips_orders_the_accountant_cannot_evaluate():
  """q = 0.05, sigma 0.8: dp-accounting leaves order 1.25 out (RDP inf); the run length
  must still be the classic-conversion one, without 0 * inf = nan warnings."""
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)
    run = dp_sinkhorn.upstream_run_length(400, 20, 0.8, 1e-3, 10.0)
  grid, rdp = accounting.rdp_curve(accounting.poisson_gaussian_event(0.05, 0.8, run["steps"]),
                                   orders="tf_privacy_ext")
  assert np.isinf(rdp[0]) and run["epochs"] >= 1
  assert run["epsilon"] == pytest.approx(accounting.classic_epsilon(grid, rdp, 1e-3)[0])
  assert run["epsilon_one_epoch_earlier"] <= 10.0 < run["epsilon"]


def test_mode_privacy_on_the_mnist_paper_preset(capsys):
  assert cli.run("privacy", helpers.config("sinkhorn_mnist_m1"), None) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["steps"] == 3_446_400 and report["sampling_rate"] == pytest.approx(1 / 1200)
  assert report["epsilon"] == pytest.approx(9.16, abs=0.01)  # dp-accounting, improved (issue 6)
  assert report["epsilon_classic_tf_privacy"] == pytest.approx(10.0003, abs=1e-4)
  assert report["within_budget"]


def test_a_target_only_config_is_calibrated_by_dp_accounting_within_the_budget():
  c = helpers.config("sinkhorn_mnist_m1", **{"train.num_steps": None})
  report = helpers.privacy_report(c, compare_accountants=False)
  assert report["num_steps_calibrated_for"] == 10.0
  assert 9.99 < report["epsilon"] <= 10.0
  assert report["steps"] > 3_446_400  # the tighter conversion allows more steps


def test_celeba_uses_the_train_split_for_the_sampling_rate():
  c = helpers.config("sinkhorn_celeba")
  spec = registry.static_spec(c.data)
  assert (spec.num_train, spec.num_test) == (162_770, 19_867)
  assert dp_sinkhorn.declaration(c, spec.num_train, 0.8).sampling_rate == pytest.approx(
      200 / 162_770)
  assert registry.static_spec(helpers.config("celeba_eps10_adaptive").data).num_train == 182_637
  with pytest.raises(errors.ConfigError, match="no split variant 'valid'"):
    registry.static_spec(helpers.config("sinkhorn_celeba", **{"data.split": "valid"}).data)


@pytest.mark.parametrize("key,value,match", [
    ("dp_sinkhorn.generator", "dcgan", "generator must be one of"),
    ("dp_sinkhorn.loss", "debias", "loss must be one of"),
    ("dp_sinkhorn.cost", "l2", "cost must be one of"),
    ("dp_sinkhorn.debias_ratio", 1.5, "debias_ratio"),
    ("dp_sinkhorn.max_loop_iterations", 5, "below the 13 iterations"),
    ("dp_sinkhorn.g_ema_decay", 1.0, r"g_ema_decay must be in \[0, 1\)"),
])
def test_config_mistakes_are_one_config_error(key, value, match):
  with pytest.raises(errors.ConfigError, match=match):
    dp_sinkhorn.validate(helpers.config("sinkhorn_mnist_m1", **{key: value}), SPEC)


# ---- generators ----


def _count(model, z_dim, num_classes):
  variables = jax.eval_shape(lambda: model.init(rng.make_key(0), jnp.zeros((2, z_dim)),
                                                jnp.zeros((2,), jnp.int32), train=False))
  return generators.count_params(variables["params"])


def test_generator_parameter_counts_match_upstream():
  assert _count(generators.ConvCondGenerator(), 16, 10) == 957_969
  assert _count(generators.CondBigGANGenerator(), 32, 2) == 3_886_595


def test_phase_decomposed_transposed_convolution_equals_flax_conv_transpose():
  x = jax.random.normal(rng.make_key(3), (2, 5, 6, 3))
  kernel = jax.random.normal(rng.make_key(4), (4, 4, 3, 7))
  ours = generators.conv_transpose_k4s2p1(x, kernel)
  # init.torch_conv_transpose is PyTorch's geometry; its Flax kernel is PyTorch's
  # flipped spatially.
  flax_layer = init.torch_conv_transpose(7, 4, 2, 1, use_bias=False)
  theirs = flax_layer.apply({"params": {"kernel": kernel[::-1, ::-1]}}, x)
  assert ours.shape == (2, 10, 12, 7)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-4)


def test_fixed_fake_batch_and_padding_independent_step():
  """n and n' never depend on the realised batch; padded real rows change nothing."""
  c = helpers.config("sinkhorn_mnist_m1", "smoke")
  method = methods.build(c, SPEC, parallel.make_mesh())
  assert (method.num_fakes, method.num_extra, method.plan.sampling_rate) == (50, 10, pytest.approx(1 / 1200))
  state = method.init(rng.make_key(0))
  data = np.random.default_rng(0)
  x = data.uniform(size=(40, 28, 28, 1)).astype(np.float32)
  y = data.integers(0, 10, 40).astype(np.int32)
  mask = np.arange(40) < 25
  keys = {"model": rng.make_key(1), "noise": rng.make_key(2)}
  step = jax.jit(method._step)
  outs = []
  for fill in (0.0, 1.0):
    xb = np.where(mask[:, None, None, None], x, fill).astype(np.float32)
    outs.append(step(state, {"x": jnp.asarray(xb), "y": jnp.asarray(y), "mask": jnp.asarray(mask)},
                     keys))
  for a, b in zip(jax.tree.leaves(outs[0][0]), jax.tree.leaves(outs[1][0])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  metrics = outs[0][1]
  assert np.isfinite(float(metrics["g_loss"])) and float(metrics["img_grad_norm"]) > 0


def test_moving_average_by_hand_and_it_is_what_is_sampled():
  """dp_sinkhorn.g_ema_decay = 0.9: decay 0.1 after step 0 and 2/11 after step 1
  (min(0.9, (1 + t) / (10 + t))); samples come from the average, not the last iterate."""
  c = helpers.config("sinkhorn_mnist_m1", "smoke", **{"dp_sinkhorn.g_ema_decay": 0.9})
  method = methods.build(c, SPEC, parallel.make_mesh())
  s0 = method.init(rng.make_key(0))
  data = np.random.default_rng(0)
  batch = {"x": jnp.asarray(data.uniform(size=(40, 28, 28, 1)).astype(np.float32)),
           "y": jnp.asarray(data.integers(0, 10, 40).astype(np.int32)),
           "mask": jnp.asarray(np.arange(40) < 30)}
  p0 = jax.tree.map(np.asarray, s0.params)
  step = jax.jit(method._step)
  s1, _ = step(s0, batch, {"model": rng.make_key(1), "noise": rng.make_key(2)})
  s2, _ = step(s1, batch, {"model": rng.make_key(3), "noise": rng.make_key(4)})
  for e, a, b, c2 in zip(*(jax.tree.leaves(t) for t in (s2.ema_params, p0, s1.params,
                                                        s2.params))):
    e1 = 0.1 * np.asarray(a) + 0.9 * np.asarray(b)
    np.testing.assert_allclose(np.asarray(e), 2 / 11 * e1 + 9 / 11 * np.asarray(c2),
                               rtol=1e-5, atol=1e-6)
  labels = jnp.arange(8) % 10
  got = method.sample(s2, rng.make_key(5), labels)
  z = jax.random.uniform(rng.make_key(5), (8, c.dp_sinkhorn.latent_dim))
  want, _ = method.generator.apply({"params": s2.ema_params, "batch_stats": s2.batch_stats},
                                   z, labels, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(got), (np.asarray(want) + 1) / 2, rtol=1e-5,
                             atol=1e-6)
  last, _ = method.generator.apply({"params": s2.params, "batch_stats": s2.batch_stats},
                                   z, labels, train=True, mutable=["batch_stats"])
  assert not np.allclose(np.asarray(got), (np.asarray(last) + 1) / 2)


def test_without_the_average_samples_come_from_the_parameters():
  c = helpers.config("sinkhorn_mnist_m1", "smoke")
  assert c.dp_sinkhorn.g_ema_decay == 0.0  # upstream: no average
  method = methods.build(c, SPEC, parallel.make_mesh())
  state = method.init(rng.make_key(0))
  assert jax.tree.leaves(state.ema_params)[0].shape == (1,)  # a placeholder
  assert method.released(state)["params"] is state.params
