"""experiments/reproduce.py: discovery, stage skipping and the results table on a fake runs dir."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
import reproduce  # noqa: E402  pylint: disable=wrong-import-position

CONFIGS = os.path.join(reproduce.REPO, "configs")


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    if isinstance(obj, (dict, list)):
      json.dump(obj, f)
    else:
      f.write(obj)


def _run(runs, name, config, ledger, records, grids=()):
  w = os.path.join(runs, name)
  _write(os.path.join(w, "config.json"), config)
  _write(os.path.join(w, "privacy.json"), ledger)
  _write(os.path.join(w, "eval", "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
  for step, content in grids:
    _write(os.path.join(w, "eval", f"samples_{step}.png"), content)
  for step in sorted({r["step"] for r in records}):
    os.makedirs(os.path.join(w, "checkpoints", str(step)), exist_ok=True)
  return w


def _entry(name, method, config):
  return dict(name=name, path=os.path.join(CONFIGS, name + ".py"), method=method,
              dataset=config["data"]["name"], run=reproduce.run_name(name, method),
              config=config)


DPGAN_CFG = {"method": "dpgan", "data": {"name": "mnist"}, "train": {"num_steps": 200},
             "privacy": {"enabled": True, "target_epsilon": 10.0}}
DPCGAN_CFG = {"method": "dpcgan", "data": {"name": "mnist"}, "train": {"num_steps": 50},
              "privacy": {"enabled": True, "target_epsilon": 9.6}, "dpcgan": {"m": 1}}


@pytest.fixture()
def runs(tmp_path):
  runs = str(tmp_path / "runs")
  ledger = {"private": True, "accountant": "rdp", "delta": 1e-5, "epsilon": 9.99,
            "steps": 200, "checkpoint_step": 200}
  w = _run(runs, "dpgan_mnist_eps10_cpu", DPGAN_CFG, ledger,
           [{"step": 100, "epsilon": 5.125, "acc_cnn": 0.5, "fid_lenet": 80.0,
             "train_wall_time_s": 900.0},
            {"step": 200, "epsilon": 9.99, "acc_cnn": 0.81234, "fid_lenet": 42.42,
             "train_wall_time_s": 1800.0}],
           grids=[(100, "old grid"), (200, "newest grid")])
  _write(os.path.join(w, "reproduce.json"), {"train": {
      "wall_time_s": 1800.0, "load_before": "2.00 1.00 0.50", "load_after": "2.10 1.90 1.00",
      "hardware": "test cpu, 2 cores; jax 1 x cpu:cpu"}})
  # A DP-CGAN run made by hand under another name (no reproduce.json).
  w2 = _run(runs, "dpcgan_by_hand", DPCGAN_CFG,
            {"private": True, "accountant": "rdp", "delta": 1e-5, "epsilon": 9.6, "steps": 50},
            [{"step": 50, "epsilon": 9.6, "auroc_lr": 0.8, "auroc_mlp": 0.85,
              "auroc_mlp_std": 0.01}])
  os.utime(os.path.join(w2, "config.json"), (1000.0, 1000.0))
  # A newer but unfinished, unevaluated copy of it must not be preferred.
  _run(runs, "dpcgan_by_hand_seed1", DPCGAN_CFG,
       {"private": True, "accountant": "rdp", "delta": 1e-5, "epsilon": 3.0, "steps": 20}, [])
  os.utime(os.path.join(w2, "privacy.json"), (1600.0, 1600.0))
  return runs


def test_discover_finds_cpu_presets_and_only_the_dpgan_table_configs():
  names = {e["name"]: e for e in reproduce.discover(CONFIGS)}
  dpgan_names = {n for n, e in names.items() if e["method"] == "dpgan"}
  assert dpgan_names == {"mnist_eps10", "fashion_mnist_eps10", "mnist_eps1", "mnist_nonpriv"}
  assert {"merf_mnist_eps1", "ntk_mnist_eps10", "sinkhorn_mnist_m1"} <= set(names)
  assert names["mnist_eps10"]["run"] == "dpgan_mnist_eps10_cpu"
  assert names["mnist_eps10"]["method"] == "dpgan"
  assert "mnist_eps10_adaptive" in {e["name"] for e in reproduce.discover(CONFIGS, all_dpgan=True)}


def test_stages_are_skipped_when_their_outputs_exist(runs):
  entries = [_entry("mnist_eps10", "dpgan", DPGAN_CFG)]
  reproduce.resolve_workdirs(entries, runs, {})
  assert reproduce.commands(entries[0], "py", curve="mnist_eps10", curve_protocol="full") == []
  # The quick curve (the default) still has its checkpoints to evaluate.
  assert [s for s, _ in reproduce.commands(entries[0], "py", curve="mnist_eps10")] == ["eval_all"]
  # Without the final step's record: only its evaluation, then the curve's remaining steps.
  w = entries[0]["workdir"]
  with open(os.path.join(w, "eval", "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 100, "epsilon": 5.1}) + "\n")
  stages = reproduce.commands(entries[0], "py", curve="mnist_eps10", curve_protocol="full")
  assert [s for s, _ in stages] == ["eval", "eval_all"]
  assert "--config.eval.checkpoint=200" in stages[0][1]
  assert "--config.eval.protocol=full" in stages[1][1]
  # The curve's checkpoints with the quick protocol: its own rows decide what is left.
  quick = reproduce.commands(entries[0], "py", curve="mnist_eps10")
  assert "--config.eval.protocol=quick" in quick[1][1]
  with open(os.path.join(w, "eval", "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 200, "epsilon": 9.99}) + "\n")
  with open(os.path.join(w, "eval", "metrics_quick.jsonl"), "w") as f:
    f.write(json.dumps({"step": 100, "epsilon": 5.1}) + "\n")
  assert reproduce.commands(entries[0], "py", curve="mnist_eps10") == []
  # A fresh workdir: train first.
  fresh = _entry("mnist_eps10", "dpgan", DPGAN_CFG)
  fresh["workdir"] = os.path.join(runs, "nothing_here")
  assert [s for s, _ in reproduce.commands(fresh, "py", curve="none")] == ["train", "eval"]


def test_results_table_plots_and_samples(runs):
  entries = [_entry("mnist_eps10", "dpgan", DPGAN_CFG),
             _entry("dpcgan_mnist_eps10", "dpcgan", DPCGAN_CFG)]
  reproduce.resolve_workdirs(entries, runs, {})
  assert entries[1]["workdir"] == os.path.join(runs, "dpcgan_by_hand") and entries[1]["reused"]
  path = reproduce.write_results(entries, runs, "mnist_eps10", "test machine")
  text = open(path).read()
  rows = [line for line in text.splitlines() if line.startswith("| DP")]
  dpgan_row = next(r for r in rows if "| mnist_eps10 |" in r)
  for expected in ("9.990 (rdp, delta 1e-05)", "| 200 |", "42.4 (LeNet)", "| 81.2 |",
                   "30.0 min (load 2.00 1.00 0.50 -> 2.10 1.90 1.00)", "test cpu, 2 cores",
                   "| 19.4 |", "CNN 93.0"):
    assert expected in dpgan_row, expected
  dpcgan_row = next(r for r in rows if "dpcgan_mnist_eps10" in r)
  assert "lr 0.8000, mlp 0.8500" in dpcgan_row and "~10.0 min (file times)" in dpcgan_row
  assert "AUROC LR 0.8642" in dpcgan_row and "std" not in dpcgan_row
  assert "Measured on: test machine" in text
  # A config without a run is listed, not tabulated; an unfinished run says so.
  entries.append(_entry("mnist_eps1", "dpgan", DPGAN_CFG))
  entries[-1]["workdir"] = os.path.join(runs, "absent")
  _run(runs, "dpcgan_by_hand", DPCGAN_CFG, {"private": True, "accountant": "rdp",
                                            "delta": 1e-5, "epsilon": 4.0, "steps": 20}, [])
  text = open(reproduce.write_results(entries, runs, "mnist_eps10", "m")).read()
  assert "Not run yet (no privacy.json): mnist_eps1." in text
  assert "incomplete: step 20 of 50" in text and "| mnist_eps1 |" not in text
  with open(os.path.join(runs, "samples", "mnist_eps10.png")) as f:
    assert f.read() == "newest grid"
  try:
    import matplotlib  # noqa: F401  pylint: disable=unused-import
  except ImportError:
    pytest.skip("matplotlib (the [plots] extra) is not installed: plots not checked")
  for short in ("acc", "fid"):
    for x in ("epsilon", "wall_time"):
      png = os.path.join(runs, "plots", f"mnist_eps10_{short}_vs_{x}.png")
      assert os.path.getsize(png) > 1000 and f"({os.path.relpath(png, runs)})" in text


def test_unknown_only_name_is_an_error(runs, capsys):
  assert reproduce.main(["--runs-dir", runs, "--only", "no_such_config", "--dry-run"]) == 2
  assert "no_such_config" in capsys.readouterr().err
