"""GS-WGAN end to end on MNIST: pretraining and main training as separate stages."""

import json
import os

import pytest

from dpgen_jax import cli, errors
from dpgen_jax.methods import gswgan
from dpgen_jax.training import loop
from dpgen_jax.checkpoints import Checkpointer
from tests import helpers


def _config(stage, **overrides):
  return helpers.config("gswgan_mnist_eps10", "smoke", **{"gswgan.stage": stage, **overrides})


@pytest.fixture
def mnist(monkeypatch):
  monkeypatch.setenv("DPGEN_DATA_DIR", os.path.dirname(helpers.mnist_dir()))


def test_smoke_pretrains_then_trains_and_writes_everything(tmp_path, mnist):
  workdir = str(tmp_path)
  summary = loop.train(_config("pretrain"), workdir)
  pretrained = os.path.join(workdir, "stages", "pretrain")
  assert summary["stages"]["pretrain"]["items"] == 4 and set(summary) == {"stages"}
  assert summary["stages"]["pretrain"]["directory"] == pretrained
  chunks = sorted(f for f in os.listdir(pretrained) if f.startswith("items_"))
  assert chunks == ["items_00000_00002", "items_00002_00004"]
  assert {"meta.json", "log.jsonl"} <= set(os.listdir(pretrained))
  with open(os.path.join(pretrained, "log.jsonl")) as f:  # timing only: no critic losses
    assert all(set(json.loads(line)) == {"start", "end", "seconds"} for line in f)
  assert not os.path.exists(os.path.join(workdir, "privacy.json"))  # pretraining is free

  # 'both' on the same workdir: pretraining is found complete, main training runs.
  summary = loop.train(_config("both"), workdir)
  assert summary["stages"]["pretrain"]["items"] == 4  # found, not recomputed
  assert summary["steps"] == 4 and 0 < summary["epsilon"] <= 10
  assert Checkpointer(workdir, read_only=True).all_steps() == [0, 2, 4]
  ledger = json.loads(open(os.path.join(workdir, "privacy.json")).read())
  assert ledger["steps"] == 4 and ledger["num_discriminators"] == 4
  assert ledger["neighboring"] == "replace_one" and ledger["accounting"] == "sound"
  assert ledger["selection"] == "per_row"
  assert os.listdir(os.path.join(workdir, "samples"))
  helpers.assert_only_public_tags(workdir, gswgan.GSWGAN)


def test_main_stage_without_pretrained_discriminators_is_one_clear_error(tmp_path, mnist, capsys):
  assert cli.run("train", _config("main"), str(tmp_path)) == cli.EXIT_USER_ERROR
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "No pretrained discriminators in" in err[0]
  assert "Traceback" not in err[0]


def test_pretrained_discriminators_of_another_recipe_are_refused(tmp_path, mnist):
  other = str(tmp_path / "other")
  os.makedirs(other)
  with open(os.path.join(other, "meta.json"), "w") as f:
    json.dump({"num_discriminators": 8}, f)
  c = _config("main", **{"gswgan.pretrained_dir": other})
  with pytest.raises(errors.ConfigError, match="holds outputs of another recipe"):
    loop.train(c, str(tmp_path / "run"))
