"""CSL-GAN's mechanisms against hand computations and published numbers (cslgan.md §3)."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import rdp

from dpgen_jax import errors, methods
from dpgen_jax.methods import cslgan
from dpgen_jax.methods.cslgan import losses as dp
from dpgen_jax.models import cslgan_nets as nets
from dpgen_jax.privacy import accounting, clipping, immediate_sensitivity
from tests import helpers

EPS = 1e-6  # the clip factor's norm_eps


def _linear_d(params, x, y):
  del y
  return x.reshape(x.shape[0], -1) @ params["w"] + params["b"], None


def _clip_np(g, c):
  return g * min(1.0, c / (np.linalg.norm(g) + EPS))


def _data(seed=0, n=6, d=3):
  r = np.random.default_rng(seed)
  scale = np.array([0.1, 0.5, 1.0, 2.0, 5.0, 10.0])[:n, None]  # some clipped, some not
  return (r.normal(size=(n, d)) * scale).astype(np.float32)


WGAN = dp.LossSpec(arch="none", loss="wgan", num_classes=1)
PARAMS = {"w": jnp.asarray([0.3, -0.2, 0.1]), "b": jnp.asarray(0.05)}


def gc_clipped_sum(spec, d_apply, params, real, fake, clip, *, split, strategy="vmap"):
  """The clipped sum S inside gc mode's gradient: the mechanism without noise, divisor 1."""
  return dp.gc_gradient(spec, d_apply, params, real, fake, jax.random.key(0), clip,
                        dp.gc_mechanism(0.0, 1.0, 1.0), split=split, strategy=strategy)


def _wgan_clipped_sum(xr, xf, mask, c, split):
  """gc_clipped_sum of the linear WGAN critic on real rows xr (masked) and fake rows xf."""
  total, _, _ = gc_clipped_sum(
      WGAN, _linear_d, PARAMS, {"x": jnp.asarray(xr), "y": jnp.zeros(len(xr), jnp.int32),
                                "mask": jnp.asarray(mask)},
      {"x": jnp.asarray(xf), "y": jnp.zeros(len(xf), jnp.int32)}, clipping.ClippingSpec(c),
      split=split)
  return total


def test_split_clipping_equals_hand_sum():
  # WGAN real loss -(w.x + b): gradient (-x, -1); fake loss +(w.x + b): (x, 1).
  xr, xf = _data(0), _data(1, n=4)
  mask = np.array([True, True, False, True, True, False])
  c = 2.0
  total = _wgan_clipped_sum(xr, xf, mask, c, split=True)
  want = np.zeros(4)
  for j in range(6):
    if mask[j]:
      want += _clip_np(np.concatenate([-xr[j], [-1.0]]), c)
  for f in range(4):  # every fake row is kept (a fixed number, independent of the data)
    want += _clip_np(np.concatenate([xf[f], [1.0]]), c)
  np.testing.assert_allclose(np.concatenate([total["w"], [total["b"]]]), want, rtol=1e-5,
                             atol=1e-6)


def test_combined_clipping_equals_hand_sum():
  xr, xf = _data(0), _data(2)
  mask = np.array([True, False, True, True, True, False])
  c = 1.5
  total = _wgan_clipped_sum(xr, xf, mask, c, split=False)
  want = np.zeros(4)
  for j in range(6):
    if mask[j]:  # real and paired fake summed BEFORE clipping; dropped together
      want += _clip_np(np.concatenate([xf[j] - xr[j], [0.0]]), c)
  np.testing.assert_allclose(np.concatenate([total["w"], [total["b"]]]), want, rtol=1e-5,
                             atol=1e-6)


def test_per_layer_bounds_respected_and_total_sensitivity():
  bounds = {"w": 0.7, "b": 0.2}
  spec = clipping.ClippingSpec(per_layer_bounds=bounds)
  assert spec.sensitivity == pytest.approx(math.sqrt(0.7 ** 2 + 0.2 ** 2))
  xr = _data(3)
  for j in range(6):  # one example at a time: each leaf within its own bound, as by hand
    total, _, _ = gc_clipped_sum(
        WGAN, _linear_d, PARAMS, {"x": jnp.asarray(xr[j:j + 1]), "y": jnp.zeros(1, jnp.int32),
                                  "mask": jnp.ones(1, bool)},
        {"x": jnp.zeros((0, 3)), "y": jnp.zeros(0, jnp.int32)}, spec, split=True)
    assert np.linalg.norm(total["w"]) <= 0.7 + 1e-6
    assert abs(float(total["b"])) <= 0.2 + 1e-6
    np.testing.assert_allclose(total["w"], _clip_np(-xr[j], 0.7), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(total["b"], _clip_np(np.array([-1.0]), 0.2)[0], rtol=1e-5)


def test_gc_noise_is_sigma_times_c_tot_over_b():
  zeros = {"w": jnp.zeros((200_000,)), "b": jnp.zeros(())}
  out = dp.gc_mechanism(3.0, math.sqrt(0.7 ** 2 + 0.2 ** 2), 50)(zeros, jax.random.key(1))
  want = 3.0 * math.sqrt(0.53) / 50
  assert float(jnp.std(out["w"])) == pytest.approx(want, rel=0.01)


def test_per_layer_lists_follow_pytorch_order_and_param_counts():
  _, d = nets.make_nets("vanilla", (28, 28, 1), 10, "ACGAN", latent_dim=100)
  params = d.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1, jnp.int32))["params"]
  assert nets.torch_param_order(params) == [("hidden", "kernel"), ("hidden", "bias"),
                                            ("critic", "kernel"), ("critic", "bias"),
                                            ("aux", "kernel"), ("aux", "bias")]
  assert sum(x.size for x in jax.tree.leaves(params)) == 101_889 + 1_290
  g, d = nets.make_nets("vanilla", (28, 28, 1), 10, "CGAN", latent_dim=100)
  gp = g.init(jax.random.key(0), jnp.zeros((1, 100)), jnp.zeros(1, jnp.int32))["params"]
  assert sum(x.size for x in jax.tree.leaves(gp)) == 115_344
  _, d = nets.make_nets("vanilla", (28, 28, 1), 10, "none", latent_dim=100)
  dp_ = d.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1, jnp.int32))["params"]
  assert sum(x.size for x in jax.tree.leaves(dp_)) == 100_609
  with pytest.raises(ValueError, match="expected 4 values"):
    nets.tree_from_list(dp_, [1.0, 2.0])


def test_celeba_resnet_d_has_nine_tensors_and_right_shapes():
  g, d = nets.make_nets("resnet", (64, 64, 3), 2, "none", latent_dim=128)
  shapes = jax.eval_shape(lambda k: d.init(k, jnp.zeros((1, 64, 64, 3)),
                                           jnp.zeros(1, jnp.int32))["params"], jax.random.key(0))
  order = nets.torch_param_order(shapes)
  assert [m for m, _ in order] == ["conv1", "conv1", "conv2", "conv2", "conv3", "conv3",
                                   "conv4", "conv4", "critic"]
  assert shapes["critic"]["kernel"].shape == (8192, 1)
  out = jax.eval_shape(lambda k: g.init_with_output(k, jnp.zeros((2, 128)),
                                                    jnp.zeros(2, jnp.int32))[0],
                       jax.random.key(0))
  assert out.shape == (2, 64, 64, 3)
  g48, d48 = nets.make_nets("resnet", (48, 48, 3), 2, "none", latent_dim=128)
  s48 = jax.eval_shape(lambda k: d48.init(k, jnp.zeros((1, 48, 48, 3)),
                                          jnp.zeros(1, jnp.int32))["params"], jax.random.key(0))
  assert s48["critic"]["kernel"].shape == (512 * 36, 1)


def test_pixel_shuffle_matches_pytorch_ordering():
  # PyTorch: out[c, 2h + a, 2w + b] = in[4c + 2a + b, h, w] (NCHW); here NHWC.
  x = np.arange(2 * 3 * 3 * 8, dtype=np.float32).reshape(2, 3, 3, 8)
  out = np.asarray(nets.pixel_shuffle(jnp.asarray(x), 2))
  assert out.shape == (2, 6, 6, 2)
  for c in range(2):
    for a in range(2):
      for b in range(2):
        np.testing.assert_array_equal(out[:, a::2, b::2, c], x[..., 4 * c + 2 * a + b])


def _is_hand(w, b, x, s_w=1.0, s_b=1.0):
  """Hand computation for L = mean_j (w.x_j + b)^2 / 2 (cslgan.md §3.4)."""
  bsz = len(x)
  r = x @ w + b
  g_w, g_b = (r[:, None] * x).mean(0), r.mean()
  s = math.sqrt(np.sum((g_w / s_w) ** 2) + (g_b / s_b) ** 2)
  h = [(r[j] * g_w + w * (x[j] @ g_w)) / s_w ** 2 / (bsz * s) + w * g_b / s_b ** 2 / (bsz * s)
       for j in range(bsz)]
  global_is = max(np.linalg.norm(hj) for hj in h)
  sw = np.linalg.norm(g_w)
  h_w = [(r[j] * g_w + w * (x[j] @ g_w)) / (bsz * sw) for j in range(bsz)]
  is_w = math.sqrt(sum(np.sum(hj ** 2) for hj in h_w))  # Frobenius over the whole batch
  is_b = np.linalg.norm(w) / math.sqrt(bsz)
  return global_is, is_w, is_b


def test_immediate_sensitivity_equals_hand_computation():
  w, b = np.array([0.3, -0.7, 0.2]), 0.4
  x = _data(4, n=5).astype(np.float64)
  params = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
  loss = lambda p, xx: jnp.mean(jnp.square(xx @ p["w"] + p["b"])) / 2
  want_global, want_w, want_b = _is_hand(w, b, x)
  _, sens = immediate_sensitivity.immediate_sensitivity(loss, params, jnp.asarray(x, jnp.float32))
  assert float(sens) == pytest.approx(want_global, rel=1e-4)
  _, sens = immediate_sensitivity.immediate_sensitivity(loss, params, jnp.asarray(x, jnp.float32), per_param=True)
  assert float(sens["w"]) == pytest.approx(want_w, rel=1e-4)
  assert float(sens["b"]) == pytest.approx(want_b, rel=1e-4)
  scaled_global, _, _ = _is_hand(w, b, x, s_w=2.0, s_b=0.5)
  _, sens = immediate_sensitivity.immediate_sensitivity(loss, params, jnp.asarray(x, jnp.float32),
                                     scaling={"w": 2.0, "b": 0.5})
  assert float(sens) == pytest.approx(scaled_global, rel=1e-4)


def test_is_noise_scale_and_skips():
  g = {"a": jnp.zeros((100_000,)), "b": jnp.zeros((100_000,)), "c": jnp.zeros((10,))}
  sens = {"a": jnp.asarray(0.3), "b": jnp.asarray(0.0), "c": jnp.asarray(5.0)}
  skip = {"a": jnp.asarray(False), "b": jnp.asarray(False), "c": jnp.asarray(True)}
  out = immediate_sensitivity.is_noise(g, sens, jax.random.key(0), noise_multiplier=2.0,
                    scaling={"a": 1.5, "b": 1.0, "c": 1.0}, skip=skip)
  assert float(jnp.std(out["a"])) == pytest.approx(2.0 * 0.3 * 1.5, rel=0.02)
  assert float(jnp.max(jnp.abs(out["b"]))) == 0.0  # zero sensitivity: no noise
  assert float(jnp.max(jnp.abs(out["c"]))) == 0.0  # skipped at the first batch


def test_mean_sample_cost_reproduces_upstream_numbers():
  # docs/privacy.md (accounting test vectors): upstream's sensitivity assumes 3x64x64; classic conversion, Opacus 0.14.
  orders = accounting.orders_for("opacus014")
  for std, size, q, count, delta, want in [(0.12, 1000, 1000 / 180_000, 32, 1e-6, 0.300),
                                           (0.22, 5000, 5000 / 6000, 200, 1e-5, 3.030)]:
    sigma = dp.mean_sample_noise_multiplier(std, size, (64, 64, 3))
    event = dp.mean_sample_event(std, size, (64, 64, 3), q, count, 1)
    eps, _ = accounting.classic_epsilon(orders, accounting.rdp_vector(event, orders="opacus014"),
                                        delta)
    assert eps == pytest.approx(want, abs=0.002), (sigma, eps)
  # Our sensitivity uses the true shape: MNIST 28x28x1 -> sqrt(784) / (2 * 5000).
  assert dp.mean_sample_noise_multiplier(0.22, 5000, (28, 28, 1)) == pytest.approx(
      0.22 / (28 / 10_000))


def _means(x, y, num, size, rate, noise_std=0.0):
  return dp.make_mean_samples(x, y, num=num, size=size, noise_std=noise_std, conditional=True,
                              num_classes=int(y.max()) + 1, rate=rate,
                              rng=np.random.default_rng(0), noise_key=jax.random.key(0))


def test_mean_samples_are_noised_centred_means():
  x = np.full((40, 2, 2, 1), 0.9, np.float32)
  y = np.repeat(np.arange(2), 20)
  imgs, labels = _means(x, y, num=3, size=20, rate=1.0)
  assert imgs.shape == (6, 2, 2, 1) and list(labels) == [0, 1, 0, 1, 0, 1]
  np.testing.assert_allclose(imgs, 0.9, atol=1e-6)  # q = 1: every example kept


def test_every_class_is_thinned_at_the_accounted_rate_not_its_own_size():
  """All-ones images: a mean sample is 0.5 + 0.5 * kept / size, so the number kept is
  visible. With the accounted rate q = size / 100 (smallest class 100), a class of 400
  keeps about 4 * size per release, not `size` (a rate size / 400 would depend on the
  class's private size)."""
  y = np.concatenate([np.zeros(100, int), np.ones(400, int)])
  x = np.ones((500, 1, 1, 1), np.float32)
  imgs, labels = _means(x, y, num=200, size=10, rate=0.1)
  kept = (imgs.reshape(-1) - 0.5) / 0.5 * 10
  small, large = kept[labels == 0].mean(), kept[labels == 1].mean()
  assert abs(small - 10) < 6 * np.sqrt(100 * 0.1 * 0.9 / 200)
  assert abs(large - 40) < 6 * np.sqrt(400 * 0.1 * 0.9 / 200)


def test_mean_sample_rate_comes_from_the_config_not_the_data():
  c = helpers.config("cslgan_mnist_acgan_gc", **{"cslgan.num_mean_samples": 20})
  assert dp.mean_sample_rate(c, 60_000) == pytest.approx(5000 / 5421)  # MNIST's split
  c.cslgan.mean_sample_min_class_size = 6000
  assert dp.mean_sample_rate(c, 60_000) == pytest.approx(5000 / 6000)


def test_privacy_mode_defaults_and_upstream_conversion():
  c = helpers.config("cslgan_mnist_gc")
  report = helpers.privacy_report(c, 60_000)
  assert report["epsilon"] == pytest.approx(0.81, abs=0.005)  # issue 8 / dp-accounting RDP
  # Upstream train.py: 99 steps/epoch (58,862 images, B = 600), N = 60,000, Opacus 0.14
  # orders, classic conversion, delta 1e-5 -> 0.990 (docs/privacy.md, accounting test vectors).
  event = accounting.poisson_gaussian_event(0.01, 5.0, 9_900)
  eps, order = accounting.classic_epsilon(accounting.orders_for("opacus014"),
                                          accounting.rdp_vector(event, orders="opacus014"), 1e-5)
  assert (round(eps, 3), order) == (0.990, 25.0)
  # budget_analysis.py: 100 steps/epoch, orders up to 1199, delta 1e-6 -> 1.088.
  orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 1200))
  acc = rdp.RdpAccountant(orders=orders).compose(accounting.poisson_gaussian_event(0.01, 5.0,
                                                                                   10_000))
  eps, order = accounting.classic_epsilon(orders, acc._rdp, 1e-6)  # pylint: disable=protected-access
  assert (round(eps, 3), order) == (1.088, 27.0)


def test_privacy_mode_adds_mean_sample_cost():
  c = helpers.config("cslgan_mnist_acgan_gc")
  c.cslgan.num_mean_samples = 20
  c.privacy.grad_clip_mode = "adaptive"
  report = helpers.privacy_report(c, 60_000)
  q_mean = 5000 / 5421  # smallest MNIST class
  sigma_mean = 0.22 / (28 / 10_000)
  engine = accounting.poisson_gaussian_event(0.01, 5.0, 10_000)
  means = accounting.poisson_gaussian_event(q_mean, sigma_mean, 200)
  both = dp_accounting.ComposedDpEvent([means, engine])
  assert report["epsilon"] == pytest.approx(accounting.epsilon(both, 1e-5), rel=1e-9)
  assert report["epsilon"] > accounting.epsilon(engine, 1e-5) + 0.01
  assert report["mean_samples"]["count"] == 200


def test_is_mode_epsilon_is_flagged_everywhere_it_is_reported():
  report = helpers.privacy_report(helpers.config("cslgan_mnist_is"), 60_000)
  assert report["epsilon_caveat"] == "approximate, not formally DP"
  assert "NOT formally DP" in report["mechanism"]
  gc_report = helpers.privacy_report(helpers.config("cslgan_mnist_gc"), 60_000)
  assert "epsilon_caveat" not in gc_report


@pytest.mark.parametrize("overrides,message", [
    ({"cslgan.penalty": "wgan-gp"}, "needs public data or mean samples"),
    ({"privacy.grad_clip_mode": "adaptive"}, "adaptive clipping needs"),
    ({"cslgan.public_set_size": 10, "cslgan.num_mean_samples": 2}, "mutually exclusive"),
    ({"privacy.mode": "is", "privacy.imm_sens_per_param": True,
      "privacy.imm_sens_scaling_mode": "constant-pl"}, "requires"),
    ({"cslgan.label_mode": "embed"}, "supports only"),
    ({"cslgan.train_d_until_threshold": -1.0}, "never on the private batch"),
    ({"privacy.mode": "tm"}, "privacy.mode must be"),
])
def test_config_mistakes_are_config_errors(overrides, message):
  c = helpers.config("cslgan_mnist_gc", **overrides)
  with pytest.raises(errors.ConfigError, match=message):
    cslgan.validate(c, None)


def test_adaptive_thresholds_from_public_data_hand_computed():
  # WGAN real loss -(w.x + b): per-sample gradient (-x_j, -1), leaf norms ||x_j|| and 1.
  x = _data(5)
  y = jnp.zeros(6, jnp.int32)
  norms = np.linalg.norm(x, axis=1)
  bounds, flat, c_tot = dp.adaptive_bounds(WGAN, _linear_d, PARAMS, jnp.asarray(x), y,
                                           jnp.asarray(x), y, per_layer=True, split=True,
                                           scalar=1.5, stat="mean")
  assert flat is None
  assert float(bounds["w"]) == pytest.approx(1.5 * norms.mean(), rel=1e-5)
  assert float(bounds["b"]) == pytest.approx(1.5, rel=1e-5)
  assert float(c_tot) == pytest.approx(1.5 * math.sqrt(norms.mean() ** 2 + 1), rel=1e-5)
  _, flat, c_tot = dp.adaptive_bounds(WGAN, _linear_d, PARAMS, jnp.asarray(x), y,
                                      jnp.asarray(x), y, per_layer=False, split=True,
                                      scalar=1.5, stat="max")
  assert float(flat) == pytest.approx(1.5 * math.sqrt(norms.max() ** 2 + 1), rel=1e-5)
  # Combined (not split): the paired fake's gradient (x_f, 1) is added first; here
  # x_f = x_j, so the per-sample gradient is exactly 0.
  _, flat, _ = dp.adaptive_bounds(WGAN, _linear_d, PARAMS, jnp.asarray(x), y, jnp.asarray(x),
                                  y, per_layer=False, split=False, scalar=1.5, stat="max")
  assert float(flat) == pytest.approx(0.0, abs=1e-6)


def test_ghost_strategy_equals_vmap_on_the_vanilla_acgan_combined():
  split = False  # D called twice per example (real and paired fake): the harder case
  _, d = nets.make_nets("vanilla", (28, 28, 1), 10, "ACGAN", latent_dim=8, hidden=16)
  params = d.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1, jnp.int32))["params"]
  apply = lambda p, x, y: d.apply({"params": p}, x, y)
  spec = dp.LossSpec(arch="ACGAN", loss="bce", num_classes=10)
  r = np.random.default_rng(0)
  real = {"x": jnp.asarray(r.random((6, 28, 28, 1)), jnp.float32),
          "y": jnp.asarray(r.integers(0, 10, 6), jnp.int32),
          "mask": jnp.asarray([True, True, True, False, True, False])}
  fake = {"x": jnp.asarray(r.random((6, 28, 28, 1)), jnp.float32),
          "y": jnp.asarray(r.integers(0, 10, 6), jnp.int32)}
  clip = clipping.ClippingSpec(0.05)
  want, _, _ = gc_clipped_sum(spec, apply, params, real, fake, clip, split=split)
  got, _, _ = gc_clipped_sum(spec, apply, params, real, fake, clip, split=split,
                             strategy="ghost")
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_ledger_charges_mean_samples_once_not_as_steps():
  c = helpers.config("cslgan_mnist_acgan_gc", **{"cslgan.num_mean_samples": 20})
  plan = helpers.privacy_plan(c, 60_000)
  ledger = plan.new_ledger()
  means = accounting.poisson_gaussian_event(5000 / 5421, 0.22 / (28 / 10_000), 200)
  assert ledger.steps == 0
  assert ledger.epsilon() == pytest.approx(accounting.epsilon(means, 1e-5), rel=1e-9)
  ledger.charge(plan.step_event)
  assert ledger.steps == 1
  both = dp_accounting.ComposedDpEvent([means, accounting.poisson_gaussian_event(0.01, 5.0)])
  assert ledger.epsilon() == pytest.approx(accounting.epsilon(both, 1e-5), rel=1e-9)


def test_released_artifact_is_the_generator_only():
  from dpgen_jax import parallel
  from dpgen_jax.data.dataset import DataSpec
  c = helpers.config("cslgan_mnist_acgan_gc", "smoke")
  spec = DataSpec("mnist", "image", (28, 28, 1), 10, 256, 10_000)
  method = methods.build(c, spec, parallel.make_mesh())
  state = method.init(jax.random.key(0))
  assert "hidden" in state.d_params  # the checkpoint keeps D (for the audit) ...
  assert set(method.released(state)) == {"g_params"}  # ... but D is never released
