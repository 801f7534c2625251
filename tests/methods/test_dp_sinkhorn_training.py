"""DP-Sinkhorn end to end: the smoke presets train and write checkpoints."""

import json
import os

from dpgen_jax.methods import dp_sinkhorn
from dpgen_jax.training import loop
from dpgen_jax.checkpoints import Checkpointer
from tests import helpers


def _assert_run_outputs(workdir, steps):
  assert Checkpointer(workdir, read_only=True).all_steps()[-1] == steps
  ledger = json.loads(open(os.path.join(workdir, "privacy.json")).read())
  assert ledger["steps"] == steps and ledger["epsilon"] > 0
  assert ledger["sampling"]["scheme"] == "poisson"
  assert any(p.endswith(".png") for p in os.listdir(os.path.join(workdir, "samples")))


def test_smoke_preset_trains_on_real_mnist(tmp_path, monkeypatch):
  monkeypatch.setenv("DPGEN_DATA_DIR", os.path.dirname(helpers.mnist_dir()))
  c = helpers.config("sinkhorn_mnist_m1", "smoke")
  summary = loop.train(c, str(tmp_path))
  assert summary["steps"] == 4 and summary["epsilon"] > 0
  _assert_run_outputs(str(tmp_path), 4)
  helpers.assert_only_public_tags(str(tmp_path), dp_sinkhorn.DPSinkhorn)


def test_celeba_smoke_preset_trains_the_biggan_generator_on_the_train_split(tmp_path):
  """A stand-in celeb_a_train.npz (random 32x32 RGB): BigGAN, the full divergence and
  data.split = 'train' end to end."""
  folder = helpers.fake_celeba(tmp_path / "data", "celeb_a_train.npz", 400, 20, size=32)
  c = helpers.config("sinkhorn_celeba", "smoke", **{"data.data_dir": folder,
                                                    "train.batch_size": 20,
                                                    "privacy.delta": 1e-3})
  c.train.num_steps = 2
  summary = loop.train(c, str(tmp_path / "run"))
  assert summary["steps"] == 2
  _assert_run_outputs(str(tmp_path / "run"), 2)
