"""The eval job on a workdir, and the metrics' sanity on real vs noise images."""

import json
import os
import shutil

import numpy as np
import pytest

from dpgen_jax import cli
from dpgen_jax.data import load_dataset
from dpgen_jax.evaluation import job, metrics, metrics_log
from dpgen_jax.training import loop
from tests import helpers


def _digits(**overrides):
  c = helpers.config("mnist_eps10", "smoke", **{"data.name": "digits", "data.image_size": 28})
  for dotted, value in overrides.items():
    section, key = dotted.split(".")
    c[section][key] = value
  return c


def test_real_images_score_well_and_noise_scores_badly(tmp_path):
  # acc_cnn's protocol itself is tested in test_classifier_accuracy.py; here the
  # names are resolved through the registry with faster classifiers.
  c = _digits(**{"eval.cache_dir": str(tmp_path), "eval.lenet_epochs": 5,
                 "eval.max_epochs": 40, "eval.patience": 5})
  data = load_dataset(c.data)
  ctx = metrics.EvalContext(data, c.eval)
  rng = np.random.default_rng(0)
  noise_x = rng.uniform(size=data.train_x.shape).astype(np.float32)
  noise_y = rng.integers(0, 10, len(noise_x)).astype(np.int32)
  real = {}
  fake = {}
  for name in ("fid_lenet", "acc_logreg", "is_lenet"):
    real.update(metrics.compute(name, ctx, data.train_x, data.train_y))
    fake.update(metrics.compute(name, ctx, noise_x, noise_y))
  assert real["acc_logreg"] > 0.8 and fake["acc_logreg"] < 0.25
  assert real["fid_lenet"] < fake["fid_lenet"] / 10
  assert real["is_lenet"] > 5 and fake["is_lenet"] < real["is_lenet"]
  # The real-side statistics are cached with the extractor that made them.
  stats = [f for f in os.listdir(tmp_path) if f.startswith("stats_digits_test_lenet-")]
  assert len(stats) == 1
  with np.load(os.path.join(tmp_path, stats[0])) as f:
    assert str(f["extractor"]).startswith("lenet-") and int(f["num_examples"]) == 360


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  loop.train(_digits(), workdir)  # 6 steps, checkpoints 3 and 6
  return workdir


def _eval_config(cache, **overrides):
  return _digits(**{"eval.cache_dir": cache, "eval.metrics": ("fid_lenet", "is_lenet"),
                    "eval.export_npz": True, **overrides})


def _lines(workdir):
  with open(os.path.join(workdir, metrics_log.METRICS_FILE)) as f:
    return [json.loads(l) for l in f if l.strip()]


def test_job_evaluates_both_checkpoints_once_and_stops(trained_workdir, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(trained_workdir, workdir)
  assert cli.run("eval", _eval_config(str(tmp_path)), workdir) == 0
  lines = _lines(workdir)
  assert [l["step"] for l in lines] == [3, 6]
  for line in lines:
    assert line["epsilon"] > 0 and line["delta"] == 1e-5
    assert line["fid_lenet"] > 0 and line["is_lenet"] >= 1 and line["num_samples"] == 240
  with np.load(os.path.join(workdir, "eval", "gen_data_6.npz")) as f:
    assert f["data_x"].shape == (240, 28, 28, 1) and f["data_y"].shape == (240,)
    # quantised to multiples of 1/255, as upstream
    np.testing.assert_allclose(f["data_x"] * 255, np.round(f["data_x"] * 255), atol=1e-3)
  assert os.path.exists(os.path.join(workdir, "eval", "samples_6.png"))
  # Running again evaluates nothing new and appends nothing.
  assert cli.run("eval", _eval_config(str(tmp_path)), workdir) == 0
  assert len(_lines(workdir)) == 2


# Orbax's background readers of the damaged checkpoint raise after the failed restore has
# been handled; pytest reports those as unraisable-exception warnings.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_checkpoint_is_reported_and_skipped(trained_workdir, tmp_path, caplog):
  workdir = str(tmp_path / "w")
  shutil.copytree(trained_workdir, workdir)
  state_dir = os.path.join(workdir, "checkpoints", "3", "state")
  for name in os.listdir(state_dir):
    path = os.path.join(state_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
  assert cli.run("eval", _eval_config(str(tmp_path)), workdir) == 0
  assert [l["step"] for l in _lines(workdir)] == [6]


def test_only_the_requested_checkpoint(trained_workdir, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(trained_workdir, workdir)
  assert cli.run("eval", _eval_config(str(tmp_path), **{"eval.checkpoint": 3}), workdir) == 0
  assert [l["step"] for l in _lines(workdir)] == [3]


def test_unknown_metric_and_missing_workdir_are_clear_errors(tmp_path, capsys):
  code = cli.run("eval", _eval_config(str(tmp_path), **{"eval.metrics": ("fid_resnet",)}),
                 str(tmp_path))
  assert code == cli.EXIT_USER_ERROR and "Unknown metric 'fid_resnet'" in capsys.readouterr().err
  code = cli.run("eval", _eval_config(str(tmp_path)), str(tmp_path / "missing"))
  assert code == cli.EXIT_USER_ERROR and "does not exist" in capsys.readouterr().err
  code = cli.run("eval", _eval_config(str(tmp_path), **{"eval.metrics": ("fid_inception",)}),
                 str(tmp_path))
  assert code == cli.EXIT_USER_ERROR and "eval.inception_weights" in capsys.readouterr().err
