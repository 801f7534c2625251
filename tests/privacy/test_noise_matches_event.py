"""Per method: the noise a real training step adds is the noise the ledger pays for.

Each test builds a method from its smoke preset (on scikit-learn's digits, resized to
28x28), installs a spy on the privacy mechanisms that replaces the statistic they receive
by zeros (as for data whose clipped gradients are all zero) and records what they
return, runs real `train_step`s, and compares the empirical standard deviation of the
recorded noise with the value implied by the event the loop charges
(the plan's `step_event`, or its one-time events: CSL-GAN's mean samples, the
embedding releases):

    std = sigma_event * L2 sensitivity (by hand, per method) / divisor (by hand),

within a two-sided chi-square bound (p = 1e-6). A method whose noise and charged event
drifted apart (a forgotten sensitivity factor, a different divisor, a noise multiplier
not the one accounted) fails here.
"""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dpgen_jax import methods, rng
from dpgen_jax.data import load_dataset
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.privacy import mechanisms, randomness
from tests import helpers


@pytest.fixture
def recorded(monkeypatch):
  """Spies on every mechanism call: zero input, record the output (the noise alone)."""
  out = []

  def record(*leaves):
    out.append(np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves]))

  real_sum, real_sanitize = mechanisms.GaussianSum.__call__, \
      mechanisms.ImageGradientSanitizer.__call__

  def spy_sum(self, total, key):
    noised = real_sum(self, jax.tree.map(jnp.zeros_like, total), key)
    jax.debug.callback(record, *jax.tree.leaves(noised))
    return noised

  def spy_sanitize(self, grads, key):
    noised, norms = real_sanitize(self, jnp.zeros_like(grads), key)
    jax.debug.callback(record, noised)
    return noised, norms

  monkeypatch.setattr(mechanisms.GaussianSum, "__call__", spy_sum)
  monkeypatch.setattr(mechanisms.ImageGradientSanitizer, "__call__", spy_sanitize)
  return out


def _gaussian_multiplier(event) -> float:
  """sigma of the Gaussian inside a (sampled, self-composed) event."""
  while not isinstance(event, dp_accounting.GaussianDpEvent):
    event = event.event
  return float(event.noise_multiplier)


def _assert_std(values: np.ndarray, want: float):
  ss, n = float(np.sum(np.square(values))), values.size
  ratio = ss / want ** 2
  assert stats.chi2.ppf(5e-7, n) <= ratio <= stats.chi2.isf(5e-7, n), \
      f"noise std {math.sqrt(ss / n):.6g}, charged event implies {want:.6g}"


def _run_steps(config, workdir, steps=2):
  """Starts the method on digits as the loop does, runs `steps` train steps; returns
  (plan, resolved config, n)."""
  config.data.name, config.data.image_size = "digits", 28
  dataset = load_dataset(config.data)
  n = dataset.spec.num_train
  method, state, root = helpers.started(config, dataset, workdir)
  keys = randomness.StepKeys(root)
  for t in range(steps):
    batch = None
    if method.data_use == "poisson":
      r = np.random.default_rng(t)
      size = 96
      idx = r.choice(n, size=size, replace=False)
      x = dataset.train_x[idx]
      batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(dataset.train_y[idx]),
               "mask": jnp.asarray(np.arange(size) < size - 7)}
    state, _ = method.train_step(state, batch, keys(t))
  jax.effects_barrier()
  return method.plan, method.config, n


def test_dpgan_noise_is_sigma_c_over_the_divisor(recorded, tmp_path):
  plan, c, n = _run_steps(helpers.config("mnist_eps10", "smoke"), tmp_path)
  sigma = _gaussian_multiplier(plan.step_event)
  qn = n / math.ceil(n / c.train.batch_size)
  divisor = int(qn) + int(round(qn))  # upstream's int(qN) + round(qN)
  assert len(recorded) == 2
  _assert_std(np.concatenate(recorded), sigma * c.privacy.clip_norm / divisor)


@pytest.mark.parametrize("per_example", [True, False])
def test_dpcgan_noise_matches_the_charged_multiplier(recorded, tmp_path, per_example):
  """m = B: per-example clipping, sensitivity C, the ledger charges sigma. m < B: noise
  std sigma C on a sum whose sensitivity is 2C; the ledger charges sigma / 2. Either
  way std = sigma_event * sensitivity / m."""
  cfg = helpers.config("dpcgan_mnist_eps10", "smoke")
  m = cfg.train.batch_size if per_example else cfg.train.batch_size // 4
  cfg.dpcgan.num_microbatches = m
  plan, c, n = _run_steps(cfg, tmp_path)
  sigma_event = _gaussian_multiplier(plan.step_event)
  factor = 1.0 if per_example else 2.0
  assert sigma_event == pytest.approx(c.privacy.noise_multiplier / factor)
  _assert_std(np.concatenate(recorded), sigma_event * factor * c.privacy.clip_norm / m)


def test_dp_sinkhorn_noise_is_two_c_sigma_per_pixel(recorded, tmp_path):
  plan, c, n = _run_steps(helpers.config("sinkhorn_mnist_m1", "smoke"), tmp_path)
  sigma = _gaussian_multiplier(plan.step_event)
  _assert_std(np.concatenate(recorded), sigma * 2 * c.privacy.clip_norm)


@pytest.mark.parametrize("selection", ["per_row", "per_step"])
def test_gswgan_noise_matches_the_sound_event_of_each_selection(recorded, selection):
  """per_row: each row is its own Gaussian (sensitivity 2C); per_step: the B rows of
  one critic move together (sensitivity 2C sqrt(B)). Randomly initialised critics on
  random shards stand in for pretrained ones (the noise does not depend on them)."""
  c = helpers.config("gswgan_mnist_eps10", "smoke", **{"gswgan.selection": selection,
                                                       "gswgan.gen_arch": "DCGAN"})
  c.data.name, c.data.image_size = "digits", 28
  n = 1437
  method = methods.build(c, DataSpec("digits", "image", (28, 28, 1), 10, n, 360))
  k = int(c.gswgan.num_discriminators)
  r = np.random.default_rng(0)
  method._shards = {"x": jnp.asarray(r.integers(0, 256, (k, 12, 28, 28, 1), dtype=np.uint8)),
                    "y": jnp.asarray(r.integers(0, 10, (k, 12)), jnp.int32)}
  root = randomness.SecretRoot.from_entropy()
  method._shard_key = root.key("gswgan/shards")
  state = method.init(rng.make_key(0))
  keys = randomness.StepKeys(root)
  for t in range(2):
    state, _ = method.train_step(state, None, keys(t))
  jax.effects_barrier()
  sigma = _gaussian_multiplier(method.plan.step_event)
  c = method.config
  rows = c.train.batch_size if selection == "per_step" else 1
  _assert_std(np.concatenate(recorded), sigma * 2 * c.privacy.clip_norm * math.sqrt(rows))


def test_cslgan_gc_noise_is_sigma_c_over_b(recorded, tmp_path):
  plan, c, n = _run_steps(helpers.config("cslgan_mnist_gc", "smoke"), tmp_path)
  sigma = _gaussian_multiplier(plan.step_event)
  _assert_std(np.concatenate(recorded), sigma * c.privacy.clip_norm / c.train.batch_size)


def test_cslgan_mean_sample_noise_matches_its_one_time_event(recorded, tmp_path):
  cfg = helpers.config("cslgan_mnist_gc", "smoke", **{
      "cslgan.num_mean_samples": 3, "cslgan.mean_sample_size": 20,
      "cslgan.mean_sample_noise_std": 0.3, "cslgan.conditional_arch": "CGAN",
      "cslgan.mean_sample_min_class_size": 100})
  plan, c, n = _run_steps(cfg, tmp_path, steps=0)
  (event, count), = plan.one_time
  assert count == 3 * 10 and len(recorded) == count
  sigma = _gaussian_multiplier(event)
  sensitivity = math.sqrt(28 * 28) / (2 * 20)  # one centred image, / size
  _assert_std(np.concatenate(recorded), sigma * sensitivity)


@pytest.mark.parametrize("config_name, neighboring, factor", [
    ("merf_mnist_eps1", "replace_one", 2.0), ("merf_mnist_eps10", "add_or_remove_one", 1.0),
    ("ntk_mnist_eps10", "replace_one", 2.0)])
def test_embedding_release_noise_matches_its_one_time_event(recorded, tmp_path, config_name,
                                                            neighboring, factor):
  """The mean of n features of norm <= 1: sensitivity 2/n (replace-one) or 1/n
  (add/remove-one); std per entry = sigma_event * sensitivity."""
  cfg = helpers.config(config_name, "smoke", **{"privacy.neighboring": neighboring})
  plan, c, n = _run_steps(cfg, tmp_path, steps=0)
  (event, count), = plan.one_time
  assert count == 1 and len(recorded) == 1
  _assert_std(recorded[0], _gaussian_multiplier(event) * factor / n)
