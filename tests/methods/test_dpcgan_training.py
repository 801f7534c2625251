"""DP-CGAN end to end through main.py's dispatcher (cli.run): smoke presets on MNIST and
Thyroid, train then eval; the tabular head; non-private runs; ghost = vmap."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax import methods
from dpgen_jax import cli, parallel, rng
from dpgen_jax.data import tabular
from dpgen_jax.data.dataset import DataSpec
from dpgen_jax.methods import dpcgan
from dpgen_jax.privacy import sums
from dpgen_jax.training import loop
from dpgen_jax.checkpoints import Checkpointer
from tests import helpers

THYROID = DataSpec("thyroid", "tabular", (21,), 3, 3772, 3428)


def thyroid_dir() -> str:
  """The folder holding ann-train.data / ann-test.data, or skip with the reason."""
  candidates = [os.path.join(os.environ["DPGEN_DATA_DIR"], "thyroid")] \
      if os.environ.get("DPGEN_DATA_DIR") else []
  candidates.append(os.path.join(helpers.SHARED_DATA, "thyroid"))
  for path in candidates:
    if os.path.isfile(os.path.join(path, "ann-train.data")):
      return path
  pytest.skip(f"UCI Thyroid not found in {candidates} (set DPGEN_DATA_DIR to a folder "
              f"with thyroid/ann-train.data and ann-test.data)")


def _ledger(workdir):
  with open(os.path.join(workdir, "privacy.json")) as f:
    return json.load(f)


def _eval_records(workdir):
  with open(os.path.join(workdir, "eval", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_main_smoke_mnist_trains_then_evaluates(tmp_path, monkeypatch):
  """`main.py --config=configs/dpcgan_mnist_eps10.py:smoke` then `--mode=eval`."""
  monkeypatch.setenv("DPGEN_DATA_DIR", os.path.dirname(helpers.mnist_dir()))
  c = helpers.config("dpcgan_mnist_eps10", "smoke", **{
      "train.num_steps": 4, "train.checkpoint_every": 4, "train.sample_every": 4,
      "eval.num_samples": 200})
  workdir = str(tmp_path)
  assert cli.run("train", c, workdir) == 0
  assert Checkpointer(workdir, read_only=True).all_steps() == [0, 4]  # 0: the secret root before any step
  ledger = _ledger(workdir)
  assert ledger["steps"] == 4 and 0 < ledger["epsilon"] < ledger["budget_epsilon"]
  assert ledger["sampling"]["scheme"] == "poisson"
  assert ledger["per_example_clipping"] and ledger["microbatch_sensitivity_factor"] == 1
  assert any(p.endswith(".png") for p in os.listdir(tmp_path / "samples"))
  helpers.assert_only_public_tags(workdir, dpcgan.DPCGAN)
  assert cli.run("eval", c, workdir) == 0
  (record,) = _eval_records(workdir)
  assert record["step"] == 4 and record["epsilon"] == pytest.approx(ledger["epsilon"])
  assert record["labels"] == "balanced" and record["num_samples"] == 200
  for name in ("auroc_lr", "auroc_mlp"):
    assert 0.0 <= record[name] <= 1.0


@pytest.fixture(scope="module")
def thyroid_run(tmp_path_factory):
  """`main.py --config=configs/dpcgan_thyroid.py:smoke` with m = 4 < B microbatches."""
  workdir = str(tmp_path_factory.mktemp("thyroid"))
  c = helpers.config("dpcgan_thyroid", "smoke", **{"dpcgan.num_microbatches": 4,
                                                    "data.data_dir": thyroid_dir(),
                                                    "eval.num_samples": 150})
  assert cli.run("train", c, workdir) == 0
  return c, workdir


def test_main_smoke_thyroid_trains_with_microbatches(thyroid_run):
  c, workdir = thyroid_run
  ledger = _ledger(workdir)
  assert ledger["steps"] == 6 and ledger["microbatch_sensitivity_factor"] == 2
  assert ledger["accounted_noise_multiplier"] == pytest.approx(1.15 / 2)
  assert Checkpointer(workdir, read_only=True).all_steps()[-1] == 6


def test_main_thyroid_eval_writes_metrics_and_the_synthetic_table(thyroid_run):
  c, workdir = thyroid_run
  assert cli.run("eval", c, workdir) == 0
  last = _eval_records(workdir)[-1]
  assert last["step"] == 6 and 0.0 <= last["auroc_thyroid"] <= 1.0
  assert {"auroc_thyroid_proba", "auroc_thyroid_acc", "auroc_lr", "auroc_mlp"} <= set(last)
  columns, x, codes = tabular.read_table_csv(last["gen_table"])
  assert columns == list(tabular.THYROID.columns) and x.shape == (150, 21)
  assert [int(np.sum(codes == k)) for k in (1, 2, 3)] == [50, 50, 50]  # uniform mix
  assert 0.0 <= x.min() and x.max() <= 1.0  # data units
  with np.load(last["gen_table"][:-4] + ".npz") as f:
    np.testing.assert_allclose(f["data_x"], x, rtol=1e-6)


def test_tabular_head_trains_and_releases_binary_columns(tmp_path):
  c = helpers.config("dpcgan_thyroid", "smoke", **{"data.data_dir": thyroid_dir(),
                                                    "dpcgan.g_head": "tabular",
                                                    "dpcgan.binary_mode": "gumbel",
                                                    "train.num_steps": 3})
  loop.train(c, str(tmp_path))
  method = methods.build(c, THYROID, parallel.make_mesh())
  state, _ = Checkpointer(str(tmp_path), read_only=True).restore(
      3, jax.eval_shape(lambda: method.init(rng.make_key(0))))
  x = np.asarray(method.sample(state, rng.make_key(1), jnp.arange(30) % 3))
  binary = np.array([k == tabular.BINARY for k in tabular.THYROID.kinds])
  assert set(np.unique(x[:, binary])) <= {0.0, 1.0}
  assert np.all((x[:, ~binary] > 0) & (x[:, ~binary] < 1))


def test_non_private_run_reports_no_epsilon(tmp_path):
  c = helpers.config("dpcgan_thyroid", "smoke", **{"data.data_dir": thyroid_dir(),
                                                    "privacy.enabled": False,
                                                    "train.num_steps": 3})
  assert loop.train(c, str(tmp_path))["epsilon"] is None


@pytest.mark.skipif("ghost" not in sums.STRATEGIES, reason="no ghost clipping strategy")
def test_ghost_strategy_gives_the_vmap_d_step():
  """The cpu preset's 'ghost' clipping computes the same per-example clipped sum."""
  spec = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)
  a = methods.build(helpers.config("dpcgan_mnist_eps10", "smoke"), spec, parallel.make_mesh())
  b = methods.build(helpers.config("dpcgan_mnist_eps10", "smoke",
                                  **{"privacy.clipping_strategy": "ghost"}),
                   spec, parallel.make_mesh())
  state = a.init(rng.make_key(0))
  r = np.random.default_rng(0)
  batch = {"x": jnp.asarray(r.uniform(size=(24, 28, 28, 1)), jnp.float32),
           "y": jnp.asarray(r.integers(0, 10, 24), jnp.int32), "mask": jnp.arange(24) < 17}
  keys = {"model": rng.make_key(1), "noise": rng.make_key(2)}
  sa, ma = jax.jit(a._step)(state, batch, keys)
  sb, mb = jax.jit(b._step)(state, batch, keys)
  for x, y in zip(jax.tree.leaves(sa.d_params), jax.tree.leaves(sb.d_params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
  assert float(ma["d_clip_fraction"]) == pytest.approx(float(mb["d_clip_fraction"]))


def test_generator_labels_are_uniform_and_never_the_real_labels():
  """G gets B labels drawn uniformly from the model key, whatever the real batch's labels
  (upstream's Thyroid notebook fed it the real labels; dpcgan.md §7 #2)."""
  spec = DataSpec("thyroid", "tabular", (21,), 3, 3772, 3428)
  c = helpers.config("dpcgan_thyroid", "smoke", **{"train.batch_size": 600,
                                                    "dpcgan.num_microbatches": 600})
  method = methods.build(c, spec, parallel.make_mesh())
  seen = []
  generate = method._generate

  def recording(g_params, z, labels, key, train):
    jax.debug.callback(lambda l: seen.append(np.asarray(l)), labels)
    return generate(g_params, z, labels, key, train)

  method._generate = recording
  state = method.init(rng.make_key(0))
  keys = {"model": rng.make_key(1), "noise": rng.make_key(2)}
  r = np.random.default_rng(0)
  x = jnp.asarray(r.uniform(size=(8, 21)), jnp.float32)
  step = jax.jit(method._step)
  for real_labels in (jnp.zeros(8, jnp.int32), jnp.full(8, 2, jnp.int32)):
    jax.block_until_ready(step(state, {"x": x, "y": real_labels, "mask": jnp.ones(8, bool)},
                               keys))
  assert len(seen) == 4  # D-fake term and G step, twice
  assert all(np.array_equal(s, seen[0]) for s in seen)  # same labels; real labels unused
  counts = np.bincount(seen[0], minlength=3)
  assert seen[0].shape == (600,) and np.all(np.abs(counts - 200) < 4 * np.sqrt(600 * 2 / 9))
