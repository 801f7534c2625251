"""DP-GAN end to end: chunking equivalence, smoke training (resumption, divergence and logs
of the generic loop: tests/training/test_loop.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax import methods
from dpgen_jax import parallel, rng
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.methods import dpgan
from dpgen_jax.training import loop
from dpgen_jax.checkpoints import Checkpointer
from tests import helpers

SPEC = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)


def test_chunked_d_step_equals_one_pass():
  mesh = parallel.make_mesh()
  one = helpers.config("mnist_eps10", "smoke", **{"privacy.max_physical_bsz": 0})
  chunked = helpers.config("mnist_eps10", "smoke", **{"privacy.max_physical_bsz": 16})
  a, b = methods.build(one, SPEC, mesh), methods.build(chunked, SPEC, mesh)
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
  c = helpers.config("mnist_eps10", "smoke", **{"data.name": "digits", "data.image_size": 28})
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
  helpers.assert_only_public_tags(workdir, dpgan.DPGAN)


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
