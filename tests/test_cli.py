"""main.py: one clear message and exit status 2 for user mistakes, before any compute."""

import json
import os
import subprocess
import sys

import pytest

from dpgen_jax import cli
from tests import helpers


def _run_main(*args, env=None):
  full_env = dict(os.environ, **(env or {}))
  proc = subprocess.run([sys.executable, os.path.join(helpers.ROOT, "main.py"), *args],
                        capture_output=True, text=True, env=full_env, cwd=helpers.ROOT,
                        timeout=300)
  return proc.returncode, proc.stdout, proc.stderr


def _assert_one_clear_error(code, err, *fragments):
  assert code == cli.EXIT_USER_ERROR, err
  assert "Traceback" not in err
  lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1, err
  for fragment in fragments:
    assert fragment in err, err


def test_privacy_mode_prints_one_json_object_and_trains_nothing(tmp_path):
  code, out, err = _run_main("--config=configs/mnist_eps10.py", "--mode=privacy",
                             f"--workdir={tmp_path / 'w'}")
  assert code == 0, err
  report = json.loads(out)
  for key in ("epsilon", "delta", "noise_multiplier", "sampling_rate", "steps", "accountant"):
    assert key in report
  assert abs(report["epsilon"] - 9.963) < 0.005 and report["steps"] == 450_000
  assert not os.path.exists(tmp_path / "w")


def test_overrides_reach_the_config():
  code, out, err = _run_main("--config=configs/mnist_eps10.py", "--mode=privacy",
                             "--config.train.num_steps=50000", "--config.privacy.accountant=pld")
  assert code == 0, err
  report = json.loads(out)
  assert report["steps"] == 50_000 and report["accountant"] == "pld"


def test_none_unsets_a_field_so_the_budget_calibrates_it():
  """--config.train.num_steps=None: the steps come from privacy.target_epsilon (sigma 1.0,
  q = 1/469, epsilon <= 10: a little over upstream's 450,000)."""
  code, out, err = _run_main("--config=configs/mnist_eps10.py", "--mode=privacy",
                             "--config.train.num_steps=None")
  assert code == 0, err
  report = json.loads(out)
  assert report["num_steps_calibrated_for"] == 10.0 and report["steps"] > 450_000
  assert report["epsilon"] <= 10.0
  code, _, err = _run_main("--config=configs/mnist_eps10.py", "--mode=privacy",
                           "--config.train.nope=None")
  _assert_one_clear_error(code, err, "no field 'train.nope'")


def test_unknown_preset(tmp_path):
  code, _, err = _run_main("--config=configs/mnist_eps10.py:gpu", "--mode=privacy")
  _assert_one_clear_error(code, err, "no preset 'gpu'", "paper, cpu, smoke")


def test_missing_data_before_any_compute(tmp_path):
  code, _, err = _run_main("--config=configs/mnist_eps10.py:smoke", f"--workdir={tmp_path}",
                           "--config.data.download=False",
                           env={"DPGEN_DATA_DIR": str(tmp_path / "empty")})
  _assert_one_clear_error(code, err, "Dataset 'mnist' was not found", "--config.data.data_dir")
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("overrides,fragments", [
    ({"data.name": "cifar"}, ["Unknown dataset 'cifar'"]),
    ({"train.num_steps": 1001}, ["must be a multiple of dpgan.d_steps_per_g_step = 50"]),
    ({"privacy.delta": 1e-3}, ["privacy.delta = 0.001 must be in (0, 1/N)"]),
    ({"privacy.noise_multiplier": 0.0}, ["noise_multiplier must be positive"]),
    ({"privacy.noise_multiplier": -1.0}, ["noise_multiplier must be positive"]),
    ({"data.name": "digits", "data.image_size": 28, "train.batch_size": 5000},
     ["train.batch_size = 5000 is larger than the dataset (1437 examples)"]),
    ({"data.name": "digits"}, ["28x28 or 32x32", "data.image_size=28"]),
    ({"privacy.accountant": "moments"}, ["privacy.accountant must be one of"]),
])
def test_bad_config_values(capsys, overrides, fragments):
  c = helpers.config("mnist_eps10")
  for dotted, value in overrides.items():
    section, key = dotted.split(".")
    c[section][key] = value
  code = cli.run("privacy", c, None)
  err = capsys.readouterr().err
  _assert_one_clear_error(code, err, *fragments)


def test_privacy_mode_reports_a_run_over_budget(capsys):
  c = helpers.config("mnist_eps10", **{"train.num_steps": 600_000})
  assert cli.run("privacy", c, None) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["epsilon"] > 10 and report["within_budget"] is False


def test_training_over_budget_is_refused_before_any_compute(capsys, tmp_path):
  c = helpers.config("mnist_eps10", "smoke", **{"data.name": "digits", "data.image_size": 28,
                                                "train.num_steps": 200_000})
  code = cli.run("train", c, str(tmp_path))
  _assert_one_clear_error(code, capsys.readouterr().err, "would spend epsilon",
                          "privacy.target_epsilon = 10", "more steps")
  assert not os.path.exists(tmp_path / "checkpoints" / "0")


def test_unknown_method(capsys):
  c = helpers.config("mnist_eps10")
  c.method = "dpsgan"
  _assert_one_clear_error(cli.run("privacy", c, None), capsys.readouterr().err,
                          "Unknown method 'dpsgan'")


def test_train_needs_a_workdir(capsys):
  _assert_one_clear_error(cli.run("train", helpers.config("mnist_eps10", "smoke"), None),
                          capsys.readouterr().err, "--workdir is required")


def test_audit_of_a_method_without_a_discriminator_audit_says_so(capsys):
  _assert_one_clear_error(cli.run("audit", helpers.config("mnist_eps10", "smoke"), "/tmp/x"),
                          capsys.readouterr().err, "needs a method that declares a membership audit")
