"""The generic training loop: secret randomness, exact replay on resume (including after
kill -9 and after falling back to an older checkpoint), the budget, divergence, logs.

Every run here is DP-GAN's smoke preset on scikit-learn's digits (no download), with
secret randomness unless a test says otherwise.
"""

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from dpgen_jax import methods
from dpgen_jax import cli, errors, parallel, rng
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.methods import dpgan
from dpgen_jax.training import loop, progress
from dpgen_jax.checkpoints import Checkpointer
from tests import helpers

DIGITS = DataSpec("digits", "image", (28, 28, 1), 10, 1437, 360)
_EVERY = {"train.checkpoint_every": 2, "train.sample_every": 1}


def digits_config(steps=6, **overrides):
  c = helpers.config("mnist_eps10", "smoke", **{"data.name": "digits", "data.image_size": 28})
  c.train.num_steps = steps
  for dotted, value in overrides.items():
    section, key = dotted.split(".")
    c[section][key] = value
  return c


def _ledger(workdir):
  with open(os.path.join(workdir, "privacy.json")) as f:
    return json.load(f)


def _final_state(workdir):
  ck = Checkpointer(workdir, read_only=True)
  step = ck.latest_step()
  method = methods.build(digits_config(), DIGITS, parallel.make_mesh())
  state, meta = ck.restore(step, jax.eval_shape(lambda: method.init(rng.make_key(0))))
  return state, meta


def _assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _grid(workdir, step):
  return os.path.join(workdir, "samples", f"step_{step:08d}.png")


def _copy_prefix(src, dst, keep_steps):
  """A copy of run `src` as it was when only checkpoints `keep_steps` existed (its
  privacy.json still records what was released)."""
  shutil.copytree(src, dst)
  ckpt = os.path.join(dst, "checkpoints")
  for name in os.listdir(ckpt):
    if name.isdigit() and int(name) not in keep_steps:
      shutil.rmtree(os.path.join(ckpt, name))
  shutil.rmtree(os.path.join(dst, "samples"))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """An uninterrupted 8-step run with secret randomness: checkpoints 0, 2, ..., 8 and a
  sample grid after every step."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  loop.train(digits_config(8, **_EVERY), workdir)
  return workdir


def test_a_run_keeps_its_secret_root_in_every_checkpoint_and_nowhere_else(straight_run):
  ck = Checkpointer(straight_run, read_only=True)
  assert ck.all_steps() == [0, 2, 4, 6, 8]
  roots = {tuple(ck.restore_secret(s)) for s in ck.all_steps()}
  assert len(roots) == 1
  words = [str(w) for w in next(iter(roots))]
  for name in ("privacy.json", "config.json"):
    text = open(os.path.join(straight_run, name)).read()
    assert not any(w in text for w in words if len(w) > 6)
  ledger = _ledger(straight_run)
  assert ledger["randomness"] == "secret" and ledger["epsilon"] > 0


def test_resume_replays_exactly_what_the_uninterrupted_run_drew(straight_run, tmp_path):
  """Secret randomness: the resumed run draws the same batches, choices and noise (the
  root comes from the checkpoint), so its grids and final state equal the straight run's."""
  resumed = str(tmp_path / "resumed")
  _copy_prefix(straight_run, resumed, keep_steps={0, 2, 4})
  loop.train(digits_config(8, **_EVERY), resumed)
  _assert_same_state(_final_state(straight_run), _final_state(resumed))
  for step in range(5, 9):
    assert filecmp.cmp(_grid(straight_run, step), _grid(resumed, step), shallow=False)
  ledger = _ledger(resumed)
  assert ledger["steps"] == 8 and [s["count"] for s in ledger["segments"]] == [8]


def _train_times(workdir):
  ck = Checkpointer(workdir, read_only=True)
  method = methods.build(digits_config(), DIGITS, parallel.make_mesh())
  abstract = jax.eval_shape(lambda: method.init(rng.make_key(0)))
  return {s: ck.restore(s, abstract)[1]["train_wall_time_s"] for s in ck.all_steps()}


def test_checkpoints_carry_the_training_time_summed_over_sessions(straight_run, tmp_path):
  times = _train_times(straight_run)
  steps = sorted(times)
  assert all(times[a] < times[b] for a, b in zip(steps, steps[1:])) and times[0] > 0
  resumed = str(tmp_path / "timed")
  _copy_prefix(straight_run, resumed, keep_steps={0, 2, 4})
  start = time.time()
  loop.train(digits_config(8, **_EVERY), resumed)
  session = time.time() - start
  after = _train_times(resumed)
  # Checkpoint 8 of the resumed run: checkpoint 4's time plus (part of) the new session.
  assert after[4] == times[4] and times[4] < after[8] <= times[4] + session + 1e-3


def test_fallback_to_an_older_checkpoint_replays_exactly(straight_run, tmp_path):
  resumed = str(tmp_path / "fallback")
  _copy_prefix(straight_run, resumed, keep_steps={0, 2, 4, 6})
  state_dir = os.path.join(resumed, "checkpoints", "6", "state")
  for name in os.listdir(state_dir):  # damage checkpoint 6: the loop falls back to 4
    path = os.path.join(state_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  loop.train(digits_config(8, **_EVERY), resumed)
  _assert_same_state(_final_state(straight_run), _final_state(resumed))
  for step in range(5, 9):
    assert filecmp.cmp(_grid(straight_run, step), _grid(resumed, step), shallow=False)
  assert _ledger(resumed)["steps"] == 8


def test_two_runs_of_one_config_draw_different_batches_and_keys(tmp_path, monkeypatch):
  drawn, keys = [], []

  class Spy(loop.PoissonSampler):
    def sample(self, step):
      out = super().sample(step)
      drawn[-1].append(frozenset(out.indices[out.mask].tolist()))
      return out

  real_step_keys = loop.StepKeys

  class KeySpy(real_step_keys):
    def __call__(self, step):
      out = super().__call__(step)
      keys[-1].append(np.asarray(jax.random.key_data(out["noise"])))
      return out

  monkeypatch.setattr(loop, "PoissonSampler", Spy)
  monkeypatch.setattr(loop, "StepKeys", KeySpy)
  for run in ("a", "b"):
    drawn.append([])
    keys.append([])
    loop.train(digits_config(2), str(tmp_path / run))
  assert len(drawn[0]) == len(drawn[1]) == 2
  assert drawn[0] != drawn[1]  # same train.seed, different members (P(equal) ~ 1e-40)
  assert not np.array_equal(keys[0][0], keys[1][0])


def test_reproducible_mode_follows_the_seed_and_reports_no_epsilon(tmp_path, capsys):
  c = digits_config(2, **{"privacy.reproducible": True})
  summary = loop.train(c, str(tmp_path / "a"))
  loop.train(c, str(tmp_path / "b"))
  _assert_same_state(_final_state(str(tmp_path / "a")), _final_state(str(tmp_path / "b")))
  assert summary["epsilon"] is None and "train.seed" in summary["epsilon_caveat"]
  ledger = _ledger(str(tmp_path / "a"))
  assert ledger["epsilon"] is None and ledger["randomness"] == "public"
  assert "privacy.reproducible" in ledger["epsilon_caveat"]
  assert cli.run("privacy", c, None) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["epsilon"] is None and "privacy.reproducible" in report["epsilon_caveat"]
  assert report["if_randomness_were_secret"]["epsilon"] > 0
  assert all(v is None for k, v in report.items() if k.startswith("epsilon") and k != "epsilon_caveat")


def test_kill9_after_a_grid_and_before_the_next_checkpoint_replays_the_grid(tmp_path):
  """The grids written before a crash are written again, identically, on resume: no
  second noisy version of a step is ever released; the ledger charges each step once."""
  workdir = str(tmp_path / "run")
  script = textwrap.dedent(f"""
      from tests.training import test_loop as t
      from dpgen_jax.training import loop
      loop.train(t.digits_config(2000, **{{"train.checkpoint_every": 1000,
                                          "train.sample_every": 1}}), {workdir!r})
  """)
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=helpers.ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while not os.path.exists(_grid(workdir, 3)):
      assert time.time() < deadline, "no sample grid within 240 s"
      assert proc.poll() is None, "training exited before it was killed"
      time.sleep(0.05)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert Checkpointer(workdir, read_only=True).all_steps() == [0]  # after 0, before 1000
  written = sorted(int(f[5:13]) for f in os.listdir(os.path.join(workdir, "samples")))
  first = {s: open(_grid(workdir, s), "rb").read() for s in written if s <= 3}
  loop.train(digits_config(4, **{"train.checkpoint_every": 1000, "train.sample_every": 1}),
             workdir)
  for step, png in first.items():
    assert open(_grid(workdir, step), "rb").read() == png, f"grid {step} changed"
  ledger = _ledger(workdir)
  assert ledger["steps"] == 4 and [s["count"] for s in ledger["segments"]] == [4]


def test_resume_keeps_the_smaller_budget(tmp_path):
  workdir = str(tmp_path)
  loop.train(digits_config(2), workdir)
  spent = _ledger(workdir)["epsilon"]
  # A lower target on resume is honoured: two more steps would exceed it.
  with pytest.raises(errors.PrivacyBudgetExceeded, match="target_epsilon"):
    loop.train(digits_config(4, **{"privacy.target_epsilon": spent * 1.01}), workdir)
  # A higher one is not: the stored budget stays.
  loop.train(digits_config(4, **{"privacy.target_epsilon": 1e6}), workdir)
  assert _ledger(workdir)["budget_epsilon"] == 10.0


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  loop.train(digits_config(4, **{"train.checkpoint_every": 2}), workdir)
  # Resume with an absurd learning rate: D's parameters overflow within a few steps.
  bad = digits_config(12, **{"train.checkpoint_every": 2, "train.log_every": 1,
                             "dpgan.d_lr": 1e36})
  with pytest.raises(loop.TrainingDiverged, match="last good checkpoint is 4"):
    loop.train(bad, workdir)
  assert Checkpointer(workdir, read_only=True).latest_step() == 4
  ledger = _ledger(workdir)  # covers every step whose metrics were written
  assert ledger["checkpoint_step"] == 4 and ledger["steps"] == ledger["released_through_step"]
  assert ledger["steps"] >= 4


def test_non_private_run_uses_the_same_sampling_and_reports_no_epsilon(tmp_path):
  c = helpers.config("mnist_nonpriv", "smoke", **{"data.name": "digits", "data.image_size": 28})
  summary = loop.train(c, str(tmp_path))
  assert summary["epsilon"] is None
  ledger = _ledger(str(tmp_path))
  assert ledger["private"] is False and ledger["epsilon"] is None and ledger["steps"] == 6
  assert ledger["sampling"]["scheme"] == "poisson"
  # Without privacy there is nothing to protect: every metric is logged.
  assert {"d_loss", "batch/real_size"} <= helpers.written_tags(str(tmp_path))


def test_default_logs_hold_only_public_metrics(straight_run, caplog):
  helpers.assert_only_public_tags(straight_run, dpgan.DPGAN)
  assert "private_diagnostics" not in _ledger(straight_run)


def test_private_metrics_only_with_the_switch_and_recorded(tmp_path, caplog):
  workdir = str(tmp_path)
  with caplog.at_level("INFO", logger="dpgen_jax"):
    loop.train(digits_config(2, **{"train.log_private_metrics": True, "train.log_every": 1}),
               workdir)
  tags = helpers.written_tags(workdir)
  assert {"private/d_loss", "private/d_acc_real", "private/batch/real_size"} <= tags
  assert "d_loss" not in tags
  assert "NOT covered by epsilon" in _ledger(workdir)["private_diagnostics"]
  lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
  assert lines and all("private/d_loss" in line for line in lines)


def test_default_progress_line_shows_no_private_metric(tmp_path, caplog):
  with caplog.at_level("INFO", logger="dpgen_jax"):
    loop.train(digits_config(2, **{"train.log_every": 1}), str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
  assert lines
  for line in lines:
    assert "eps " in line and "g_loss=" in line
    for private in ("d_loss", "d_acc_real", "d_clip_fraction", "real_size"):
      assert private not in line


def test_an_old_checkpoint_without_a_root_is_one_clear_error(tmp_path):
  workdir = str(tmp_path)
  loop.train(digits_config(2), workdir)
  for step in Checkpointer(workdir, read_only=True).all_steps():
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step), "secret"))
  with pytest.raises(errors.UserError, match="no secret root"):
    loop.train(digits_config(4), workdir)


def test_replaying_released_steps_under_another_config_is_refused(straight_run, tmp_path):
  """Steps 5..8 of the straight run are out (grids, logs, checkpoints). Resuming from
  checkpoint 4 with another learning rate would apply another function to the same
  noise: refused. A change that does not alter the steps (log cadence) is fine."""
  resumed = str(tmp_path / "changed")
  _copy_prefix(straight_run, resumed, keep_steps={0, 2, 4})
  assert _ledger(resumed)["released_through_step"] == 8
  with pytest.raises(errors.UserError, match="released outputs of steps 5..8"):
    loop.train(digits_config(8, **_EVERY, **{"dpgan.g_lr": 1e-3}), resumed)
  loop.train(digits_config(8, **_EVERY, **{"train.log_every": 1}), resumed)
  _assert_same_state(_final_state(straight_run), _final_state(resumed))


def test_privacy_json_covers_released_steps_before_the_next_checkpoint(straight_run):
  ledger = _ledger(straight_run)
  assert ledger["released_through_step"] == ledger["steps"] == 8
  assert ledger["checkpoint_step"] == 8


def test_a_long_run_on_a_cpu_warns_with_its_estimate_and_the_cpu_preset(caplog):
  c = helpers.config("mnist_eps10")  # the paper preset
  assert c.config_file.endswith("configs/mnist_eps10.py") and c.preset == "paper"
  with caplog.at_level("INFO", logger="dpgen_jax"):
    progress.warn_if_slow(c, steps_done=5, seconds=10.0, steps_total=450_000)  # 2 s per step
  text = caplog.text
  assert "Estimated wall time for the 450000 steps of this run: 250h00m" in text
  assert "configs/mnist_eps10.py:cpu instead" in text and "no GPU or TPU" in text
  caplog.clear()
  with caplog.at_level("INFO", logger="dpgen_jax"):
    progress.warn_if_slow(c, steps_done=5, seconds=1.0, steps_total=1000)
  assert "Estimated wall time" in caplog.text and "instead" not in caplog.text


def test_the_wall_time_estimate_leaves_compilation_out_of_the_rate(caplog):
  """First step 10 s (compilation), the next four 0.5 s each: 10 s + 999 x 0.5 s =
  509.5 s = 8m29s for 1,000 steps (counting the first step's 10 s in the rate would say
  2,400 s)."""
  c = helpers.config("mnist_eps10", "cpu")
  with caplog.at_level("INFO", logger="dpgen_jax"):
    progress.warn_if_slow(c, steps_done=5, seconds=12.0, steps_total=1000,
                          first_step_seconds=10.0)
  assert "Estimated wall time for the 1000 steps of this run: 8m29s" in caplog.text


def test_progress_lines_come_between_metric_logs(tmp_path, caplog):
  """With metrics logged only every 1000 steps, the run still prints its rate and ETA
  (here after every step: progress_every_secs = 0)."""
  with caplog.at_level("INFO", logger="dpgen_jax"):
    loop.train(digits_config(4, **{"train.log_every": 1000,
                                   "train.progress_every_secs": 0.0}), str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
  assert any(line.startswith("step 1/4") and "ETA" in line for line in lines)
  assert any("Estimated wall time for the 4 steps" in r.getMessage() for r in caplog.records)
