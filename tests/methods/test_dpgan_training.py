"""DP-GAN end to end: chunking equivalence, smoke training, resumption."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax import parallel, rng
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.methods import dpgan
from dpgen_jax.training import loop
from dpgen_jax.training.checkpoint import Checkpointer
from tests import helpers

SPEC = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)


def test_chunked_d_step_equals_one_pass():
  mesh = parallel.make_mesh()
  one = helpers.config("mnist_eps10", "smoke", **{"privacy.max_physical_bsz": 0})
  chunked = helpers.config("mnist_eps10", "smoke", **{"privacy.max_physical_bsz": 16})
  a, b = dpgan.build(one, SPEC, mesh), dpgan.build(chunked, SPEC, mesh)
  rows, microbatch = b._row_layout(40)
  assert microbatch is not None and rows % microbatch == 0 and rows >= 32 + 40
  state = a.init(rng.make_key(0))
  data = np.random.default_rng(0)
  batch = {"x": jnp.asarray(data.uniform(size=(40, 28, 28, 1)), jnp.float32),
           "y": jnp.asarray(data.integers(0, 10, 40), jnp.int32),
           "mask": jnp.asarray(np.arange(40) < 29)}
  keys = (rng.make_key(1), rng.make_key(2))
  pa, _, ma = jax.jit(a._d_update)(state, batch, *keys)
  pb, _, mb = jax.jit(b._d_update)(state, batch, *keys)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)
  assert float(ma["d_loss"]) == pytest.approx(float(mb["d_loss"]), rel=1e-5)


def _digits_config(workdir_steps=6, **overrides):
  c = helpers.config("mnist_eps10", "smoke", **{"data.name": "digits", "data.image_size": 28,
                                                "privacy.reproducible_noise": True})
  c.train.num_steps = workdir_steps
  for dotted, value in overrides.items():
    section, key = dotted.split(".")
    c[section][key] = value
  return c


def _assert_run_outputs(workdir, steps):
  assert Checkpointer(workdir, read_only=True).all_steps()[-1] == steps
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  ledger = json.loads(open(os.path.join(workdir, "privacy.json")).read())
  assert ledger["steps"] == steps and ledger["epsilon"] > 0
  assert ledger["sampling"]["scheme"] == "poisson"
  pngs = os.listdir(os.path.join(workdir, "samples"))
  assert any(p.endswith(".png") for p in pngs)


def test_smoke_trains_on_digits_and_writes_everything(tmp_path):
  summary = loop.train(_digits_config(), str(tmp_path))
  assert summary["steps"] == 6
  _assert_run_outputs(str(tmp_path), 6)


def test_smoke_trains_on_real_mnist(tmp_path, monkeypatch):
  monkeypatch.setenv("DPGEN_DATA_DIR", os.path.dirname(helpers.mnist_dir()))
  c = helpers.config("mnist_eps10", "smoke")
  c.train.num_steps = 4
  c.train.checkpoint_every = 2
  summary = loop.train(c, str(tmp_path))
  assert summary["steps"] == 4
  _assert_run_outputs(str(tmp_path), 4)


def _final_state(workdir):
  ck = Checkpointer(workdir, read_only=True)
  step = ck.latest_step()
  c = _digits_config()
  method = dpgan.build(c, DataSpec("digits", "image", (28, 28, 1), 10, 1437, 360),
                       parallel.make_mesh())
  state, meta = ck.restore(step, jax.eval_shape(lambda: method.init(rng.make_key(0))))
  return state, meta


_RESUME = {"train.checkpoint_every": 2}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """An uninterrupted 8-step run (reproducible noise): the reference final state."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  loop.train(_digits_config(8, **_RESUME), workdir)
  return _final_state(workdir)


def _assert_same_final_state(reference, workdir):
  a, meta_a = reference
  b, meta_b = _final_state(workdir)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert meta_a["ledger"]["steps"] == meta_b["ledger"]["steps"] == 8
  assert meta_a["ledger"]["epsilon"] == pytest.approx(meta_b["ledger"]["epsilon"], rel=1e-12)
  assert meta_a["ledger"]["segments"] == meta_b["ledger"]["segments"]


def test_resumed_run_ends_in_the_same_state_as_an_uninterrupted_one(tmp_path, straight_run):
  resumed = str(tmp_path)
  loop.train(_digits_config(4, **_RESUME), resumed)  # stops at step 4
  loop.train(_digits_config(8, **_RESUME), resumed)  # resumes from 4
  _assert_same_final_state(straight_run, resumed)


def test_run_killed_with_sigkill_resumes_to_the_same_state(tmp_path, straight_run):
  """kill -9 while training (after at least one checkpoint), then run again."""
  workdir = str(tmp_path)
  script = textwrap.dedent(f"""
      from tests.methods import test_dpgan_training as t
      from dpgen_jax.training import loop
      c = t._digits_config(2000, **t._RESUME)  # would run far past the kill
      loop.train(c, {workdir!r})
  """)
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=helpers.ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while time.time() < deadline:
      steps = Checkpointer(workdir, read_only=True).all_steps() \
          if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
      if len(steps) >= 2:
        break
      assert proc.poll() is None, "training exited before it was killed"
      time.sleep(0.2)
    else:
      pytest.fail("no checkpoint within 240 s")
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  killed_at = Checkpointer(workdir, read_only=True).latest_step()
  assert 2 <= killed_at < 2000
  if killed_at >= 8:
    pytest.skip(f"the run reached step {killed_at} before the kill; cannot compare at 8")
  loop.train(_digits_config(8, **_RESUME), workdir)
  _assert_same_final_state(straight_run, workdir)


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  loop.train(_digits_config(4, **{"train.checkpoint_every": 2}), workdir)
  # Resume with an absurd learning rate: D's parameters overflow within a few steps.
  bad = _digits_config(12, **{"train.checkpoint_every": 2, "train.log_every": 1,
                              "dpgan.d_lr": 1e36})
  with pytest.raises(loop.TrainingDiverged, match="last good checkpoint is 4"):
    loop.train(bad, workdir)
  ck = Checkpointer(workdir, read_only=True)
  assert ck.latest_step() == 4
  assert json.loads(open(os.path.join(workdir, "privacy.json")).read())["steps"] == 4


def test_non_private_run_uses_the_same_sampling_and_reports_no_epsilon(tmp_path):
  c = helpers.config("mnist_nonpriv", "smoke", **{"data.name": "digits", "data.image_size": 28})
  summary = loop.train(c, str(tmp_path))
  assert summary["epsilon"] is None
  ledger = json.loads(open(os.path.join(str(tmp_path), "privacy.json")).read())
  assert ledger["private"] is False and ledger["epsilon"] is None and ledger["steps"] == 6
  assert ledger["sampling"]["scheme"] == "poisson"
