"""CSL-GAN end to end: smoke presets through cli.run (train, privacy.json, audit), the
variants (CGAN / WCGAN / combined / per-layer / adaptive from mean samples / public
penalty / shuffle), and CelebA's ResNet on a tiny synthetic array."""

import json
import os

import numpy as np
import pytest

from dpgen_jax import cli, methods
from dpgen_jax.methods.cslgan.method import CSLGAN
from tests import helpers


def _json(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


@pytest.fixture
def mnist(monkeypatch):
  monkeypatch.setenv("DPGEN_DATA_DIR", os.path.dirname(helpers.mnist_dir()))


def test_gc_smoke_trains_and_ledger_says_poisson(tmp_path, mnist):
  c = helpers.config("cslgan_mnist_gc", "smoke")
  assert cli.run("train", c, str(tmp_path)) == 0
  ledger = _json(tmp_path, "privacy.json")
  assert ledger["steps"] == 4 and ledger["private"] and ledger["epsilon"] > 0
  assert ledger["sampling"]["scheme"] == "poisson"
  assert ledger["training_set"] == "the first 256 examples of the training split"
  assert "epsilon_caveat" not in ledger
  helpers.assert_only_public_tags(str(tmp_path), CSLGAN)


def test_is_smoke_per_parameter_and_caveat_in_ledger(tmp_path, mnist, capsys):
  c = helpers.config("cslgan_mnist_is", "smoke", **{"privacy.imm_sens_per_param": True})
  assert cli.run("train", c, str(tmp_path)) == 0
  ledger = _json(tmp_path, "privacy.json")
  assert ledger["epsilon_caveat"] == "approximate, not formally DP"
  assert "approximate, not formally DP" in capsys.readouterr().out  # the run's summary
  assert cli.run("privacy", c, None) == 0
  assert '"epsilon_caveat": "approximate, not formally DP"' in capsys.readouterr().out


def test_acgan_smoke_then_audit(tmp_path, mnist, capsys):
  c = helpers.config("cslgan_mnist_acgan_gc", "smoke")
  assert cli.run("train", c, str(tmp_path)) == 0
  capsys.readouterr()
  assert cli.run("audit", c, str(tmp_path)) == 0
  printed = json.loads(capsys.readouterr().out)
  saved = _json(tmp_path, "audit.json")
  assert printed == saved
  assert saved["score"] == "aux" and saved["member_pool"] == 256
  assert saved["chance"] == 0.1 and 0.0 <= saved["top_k_precision"] <= 1.0
  assert saved["checkpoint_step"] == 4


def test_variants_wcgan_combined_adaptive_pl_mean_samples_penalty(tmp_path, mnist):
  c = helpers.config("cslgan_mnist_acgan_gc", "smoke", **{
      "cslgan.conditional_arch": "WCGAN", "cslgan.loss": "wgan", "cslgan.penalty": "wgan-gp",
      "cslgan.num_mean_samples": 1, "cslgan.mean_sample_size": 10,
      "cslgan.mean_sample_noise_std": 5.0,
      "cslgan.mean_sample_min_class_size": 14, "privacy.grad_clip_split": False,
      "privacy.grad_clip_mode": "adaptive-pl", "cslgan.train_d_until_threshold": -1.0})
  assert cli.run("train", c, str(tmp_path)) == 0
  ledger = _json(tmp_path, "privacy.json")
  one_time = [s for s in ledger["segments"] if s.get("one_time")]
  assert len(one_time) == 1 and one_time[0]["count"] == 10  # 1 round x 10 classes
  assert ledger["steps"] == 4 and ledger["mean_samples"]["epsilon_alone"] > 0


def test_variants_cgan_constant_pl_public_penalty_shuffle(tmp_path, mnist, caplog):
  c = helpers.config("cslgan_mnist_gc", "smoke", **{
      "cslgan.conditional_arch": "CGAN", "cslgan.penalty": "wgan-gp-1",
      "cslgan.public_set_size": 64, "privacy.grad_clip_mode": "constant-pl",
      "privacy.clipping_per_layer": (1.0, 0.5, 0.2, 0.1), "data.sampling": "shuffle"})
  assert cli.run("train", c, str(tmp_path)) == 0
  ledger = _json(tmp_path, "privacy.json")
  assert "AS IF Poisson" in ledger["sampling_assumption"]
  assert "accountant assumes Poisson" in caplog.text


def test_audit_finds_members_of_a_memorised_training_set(tmp_path):
  """Non-private ACGAN on 100 random binary images with random labels: D must memorise
  them (nothing generalises), so the attack finds the members far above chance (10 %)."""
  r = np.random.default_rng(0)
  folder = tmp_path / "data"
  folder.mkdir()
  bits = lambda n: (r.random((n, 28, 28, 1)) < 0.5).astype(np.uint8) * 255
  np.savez(folder / "mnist.npz", x_train=bits(100), y_train=r.integers(0, 10, 100),
           x_test=bits(1000), y_test=r.integers(0, 10, 1000))
  c = helpers.config("cslgan_mnist_acgan_gc", "smoke", **{
      "privacy.enabled": False, "data.data_dir": str(folder), "data.num_train_subset": 100,
      "train.batch_size": 100, "train.num_steps": 100, "train.checkpoint_every": 100,
      "train.sample_every": 100, "cslgan.hidden": 32, "cslgan.d_lr": 2e-3, "audit.draws": 300})
  run = str(tmp_path / "run")
  assert cli.run("train", c, run) == 0
  assert cli.run("audit", c, run) == 0
  result = _json(run, "audit.json")
  assert result["member_pool"] == 100 and result["nonmember_pool"] == 1000
  assert result["top_k_precision"] > 0.8, result  # chance 0.1
  assert result["roc_auc"] > 0.95, result
  assert result["private"] is False and result["epsilon"] is None


def test_celeba_resnet_smoke_on_a_tiny_synthetic_array(tmp_path, monkeypatch):
  """CelebA is not on this machine: a 64x64 synthetic celeb_a.npz (random images)."""
  folder = helpers.fake_celeba(tmp_path / "data", "celeb_a.npz", 96, 8, size=64)
  c = helpers.config("cslgan_celeba_gc", "smoke", **{
      "data.data_dir": folder, "data.num_train_subset": 96, "train.batch_size": 8,
      "train.num_steps": 2, "train.checkpoint_every": 2, "train.sample_every": 2,
      "cslgan.width_divisor": 64, "privacy.grad_clip_mode": "constant-pl"})
  assert cli.run("train", c, str(tmp_path / "run")) == 0
  ledger = _json(tmp_path / "run", "privacy.json")
  assert ledger["steps"] == 2 and ledger["delta"] == 1e-6
  assert any(s.get("one_time") for s in ledger["segments"])  # the mean samples' cost


def test_resume_replays_shuffled_batches_and_mean_samples_exactly(tmp_path, mnist):
  """CSL-GAN draws its own shuffles and mean samples (setup): both come from the run's
  secret root, so a run resumed from an earlier checkpoint ends in the same state."""
  import shutil
  import jax
  from dpgen_jax import parallel, rng
  from dpgen_jax.data import registry
  from dpgen_jax.training import loop
  from dpgen_jax.checkpoints import Checkpointer

  c = helpers.config("cslgan_mnist_gc", "smoke", **{
      "cslgan.conditional_arch": "CGAN", "cslgan.num_mean_samples": 1,
      "cslgan.mean_sample_size": 10, "cslgan.mean_sample_min_class_size": 14,
      "cslgan.mean_sample_noise_std": 5.0, "data.sampling": "shuffle",
      "train.checkpoint_every": 2})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.train(c, straight)
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
  loop.train(c, resumed)
  method = methods.build(c, registry.static_spec(c.data), parallel.make_mesh())
  abstract = jax.eval_shape(lambda: method.init(rng.make_key(0)))
  a, _ = Checkpointer(straight, read_only=True).restore(4, abstract)
  b, _ = Checkpointer(resumed, read_only=True).restore(4, abstract)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_adversarial_loss_is_public_only_when_computed_on_public_data():
  import jax.numpy as jnp
  from dpgen_jax import parallel, rng
  from dpgen_jax.data.dataset import DataSpec
  spec = DataSpec("mnist", "image", (28, 28, 1), 10, 256, 10_000)
  private_batch = methods.build(helpers.config("cslgan_mnist_gc", "smoke"), spec,
                               parallel.make_mesh())
  assert "d_adv_loss" not in private_batch.public_metrics  # it reads the real batch
  c = helpers.config("cslgan_mnist_gc", "smoke", **{"cslgan.public_set_size": 64})
  method = methods.build(c, spec, parallel.make_mesh())
  assert "d_adv_loss" in method.public_metrics
  r = np.random.default_rng(0)
  method.public = (jnp.asarray(r.uniform(size=(64, 28, 28, 1)), jnp.float32),
                   jnp.asarray(r.integers(0, 10, 64), jnp.int32))
  keys = {"model": rng.make_key(1), "noise": rng.make_key(2)}
  values = []
  for seed in (3, 4):  # two different private batches, same state and keys
    x = np.random.default_rng(seed).uniform(size=(40, 28, 28, 1))
    batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.zeros((40,), jnp.int32),
             "mask": jnp.ones((40,), bool)}
    _, metrics = method.train_step(method.init(rng.make_key(0)), batch, keys)
    values.append(float(metrics["d_adv_loss"]))
  assert values[0] == values[1]
