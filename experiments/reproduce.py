"""Trains and evaluates the `cpu` preset of every method config, then writes the results.

    python experiments/reproduce.py [--runs-dir RUNS] [--only NAME ...] [--dry-run]

For every config in configs/ that has a `cpu` preset (DP-GAN: the four configurations of
its results table, `mnist_eps10` (the headline), `fashion_mnist_eps10`, `mnist_eps1` and
`mnist_nonpriv`, unless --all-dpgan; every dpcgan_*, sinkhorn_*, gswgan_*, cslgan_*,
merf_*, ntk_* config that exists) it runs, in RUNS/<run name> (`dpgan_mnist_eps10_cpu`,
`dpcgan_mnist_eps10_cpu`, `sinkhorn_mnist_m1_cpu`, ...):

  1. python main.py --config=configs/NAME.py:cpu --workdir=W --mode=train
     (skipped when W/privacy.json already covers W's train.num_steps);
  2. python main.py ... --mode=eval --config.eval.checkpoint=FINAL, the final checkpoint
     (skipped when W/eval/metrics.jsonl has it); for the --curve config (default
     mnist_eps10) then every kept checkpoint with --curve-protocol (default 'quick':
     10,000 samples, 3 CNN epochs; docs/results.md measures its agreement with 'full'),
     for the curves against epsilon and against training wall time.

A run made by hand is reused: when RUNS/<run name> does not exist, a directory of RUNS
whose config.json has the same method, dataset and target epsilon is used (ties broken
by the number of equal method settings), or give --workdir NAME=DIR.

It then writes RUNS/results.md (one row per config: method, dataset, epsilon with its
accountant and delta, FID with its feature extractor, CNN / LogReg / MLP accuracy or
AUROC, wall time, hardware, and the upstream paper numbers in the next columns), and
with matplotlib (`pip install -e ".[plots]"`) RUNS/plots/*_vs_epsilon.png and
*_vs_wall_time.png from the checkpoints of the curve run, plus RUNS/samples/<run name>.png, the newest
eval/samples_<step>.png of each run (experiments/results_table.py). Numbers are read from
the runs' files only.
Wall times come from RUNS/<run>/reproduce.json (written here, with the load average
before and after) or, for runs made by hand, from file times (marked '~').
"""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position
from results_table import (final_step, read_json as _read_json, read_metrics,  # noqa: E402
                           train_done, write_results)


# ------------------------------------------------------------------ discovery

# The DP-GAN configurations run by default (the others with --all-dpgan).
DPGAN_TABLE = ("mnist_eps10", "fashion_mnist_eps10", "mnist_eps1", "mnist_nonpriv")

def run_name(name: str, method: str) -> str:
  prefixed = name if name.startswith(method.split("_")[-1]) or name.startswith(method) \
      else f"{method}_{name}"
  return prefixed + "_cpu"


def discover(configs_dir: str, all_dpgan: bool = False) -> list[dict]:
  """Configs with a `cpu` preset: [{name, path, method, dataset, run, config}]."""
  from dpgen_jax import errors
  from dpgen_jax.config_file import load_config_file
  found = []
  for path in sorted(glob.glob(os.path.join(configs_dir, "*.py"))):
    name = os.path.splitext(os.path.basename(path))[0]
    if name.startswith("_"):
      continue
    try:
      config = load_config_file(path + ":cpu")
    except errors.ConfigError:
      continue  # no cpu preset
    method = str(config.method)
    if method == "dpgan" and not all_dpgan and name not in DPGAN_TABLE:
      continue
    found.append(dict(name=name, path=path, method=method, dataset=str(config.data.name),
                      run=run_name(name, method), config=config.to_dict()))
  return found


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out




def resolve_workdirs(entries: list[dict], runs_dir: str, explicit: dict) -> None:
  """Sets entry['workdir']: explicit, RUNS/<run>, or a matching run made by hand."""
  candidates = {}
  if os.path.isdir(runs_dir):
    for d in sorted(os.listdir(runs_dir)):
      cfg = _read_json(os.path.join(runs_dir, d, "config.json"))
      if cfg is not None:
        candidates[os.path.join(runs_dir, d)] = _flatten(cfg)
  default = {os.path.join(runs_dir, e["run"]) for e in entries}

  def key(flat):
    return (flat.get("method"), flat.get("data.name"), flat.get("privacy.enabled"),
            flat.get("privacy.target_epsilon"))

  claims: dict[str, list] = {}
  for e in entries:
    e["workdir"] = explicit.get(e["name"]) or os.path.join(runs_dir, e["run"])
    e["reused"] = False
    if e["name"] in explicit or os.path.isdir(e["workdir"]):
      continue
    flat = _flatten(e["config"])
    skip = ("train.", "eval.", "privacy.noise_multiplier")
    for path, cand in candidates.items():
      if path in default or key(cand) != key(flat):
        continue
      score = sum(1 for k, v in flat.items() if not k.startswith(skip) and cand.get(k) == v)
      claims.setdefault(path, []).append((score, e))
  assigned: dict[str, list[str]] = {}
  for path, scored in claims.items():
    scored.sort(key=lambda se: -se[0])
    if len(scored) > 1 and scored[0][0] == scored[1][0]:
      print(f"note: {path} matches {[e['name'] for _, e in scored]} equally; "
            f"use --workdir NAME={path}", file=sys.stderr)
      continue
    assigned.setdefault(scored[0][1]["name"], []).append(path)

  def preference(path):  # evaluated, then trained to the end, then the newest
    ledger = os.path.join(path, "privacy.json")
    return (final_step(path) in {int(r["step"]) for r in read_metrics(path)},
            train_done(path), os.path.getmtime(ledger) if os.path.exists(ledger) else 0.0)

  for e in entries:
    paths = sorted(assigned.get(e["name"], []), key=preference, reverse=True)
    if paths:
      e["workdir"], e["reused"] = paths[0], True
      if len(paths) > 1:
        print(f"note: {e['name']}: using {paths[0]} of the matching runs {paths}",
              file=sys.stderr)


# ------------------------------------------------------------------ stages

def checkpoint_steps(workdir: str) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def commands(entry: dict, python: str, curve: str,
             curve_protocol: str = "quick") -> list[tuple[str, list[str]]]:
  """The (stage, argv) still to run for `entry` (train, eval final, eval all)."""
  w = entry["workdir"]
  base = [python, os.path.join(REPO, "main.py"), f"--config={entry['path']}:cpu",
          f"--workdir={w}"]
  todo = []
  trained = train_done(w)
  if not trained and entry.get("reused") and final_step(w) is not None:
    print(f"note: {w} (made by hand) has not reached its train.num_steps; evaluating it as "
          f"it is, not extending it", file=sys.stderr)
    trained = True
  if not trained:
    todo.append(("train", base + ["--mode=train"]))
  done = {int(r["step"]) for r in read_metrics(w)}
  final = final_step(w) if trained else int(entry["config"]["train"]["num_steps"])
  if final is None or final not in done:
    todo.append(("eval", base + ["--mode=eval", f"--config.eval.checkpoint={final}"]))
  curve_done = done if curve_protocol == "full" else \
      {int(r["step"]) for r in read_metrics(w, curve_protocol)}
  if entry["name"] == curve and (todo or set(checkpoint_steps(w)) - curve_done - {final}):
    todo.append(("eval_all", base + ["--mode=eval", f"--config.eval.protocol={curve_protocol}"]))
    # (the job skips evaluated steps)
  return todo


def _load() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "?"


def hardware() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  try:
    import jax
    devices = ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
    n = len(jax.devices())
  except Exception as exc:  # pylint: disable=broad-except
    devices, n = f"jax unavailable ({type(exc).__name__})", 0
  return f"{cpu}, {os.cpu_count()} cores; jax {n} x {devices}"


def run_stages(entry: dict, python: str, curve: str, dry_run: bool, env: dict,
               curve_protocol: str = "quick") -> None:
  for stage, argv in commands(entry, python, curve, curve_protocol):
    print(("[dry-run] " if dry_run else "") + " ".join(argv), flush=True)
    if dry_run:
      continue
    os.makedirs(entry["workdir"], exist_ok=True)
    record_path = os.path.join(entry["workdir"], "reproduce.json")
    record = _read_json(record_path) or {}
    start, load = time.time(), _load()
    status = subprocess.call(argv, cwd=REPO, env=env)
    record[stage] = dict(command=" ".join(argv), wall_time_s=time.time() - start,
                         load_before=load, load_after=_load(), exit_status=status,
                         hardware=hardware(), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    with open(record_path, "w") as f:
      json.dump(record, f, indent=2)
    if status != 0:
      print(f"warning: {stage} of {entry['name']} exited with {status}", file=sys.stderr)
      return



def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs-dir", default=os.environ.get("RUNS_DIR", os.path.join(REPO, "runs")))
  p.add_argument("--configs-dir", default=os.path.join(REPO, "configs"))
  p.add_argument("--only", action="append", default=[], help="config name (repeatable)")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  p.add_argument("--collect-only", action="store_true", help="only write results.md/plots")
  p.add_argument("--all-dpgan", action="store_true", help="all 13 DP-GAN configs")
  p.add_argument("--curve", default="mnist_eps10", help="config whose checkpoints are all "
                 "evaluated and plotted against epsilon")
  p.add_argument("--curve-protocol", default="quick", choices=("quick", "full"),
                 help="evaluation protocol of the curve run's checkpoints (default quick)")
  p.add_argument("--workdir", action="append", default=[], metavar="NAME=DIR")
  p.add_argument("--python", default=sys.executable)
  args = p.parse_args(argv)
  entries = discover(args.configs_dir, args.all_dpgan)
  if args.only:
    unknown = set(args.only) - {e["name"] for e in entries}
    if unknown:
      print(f"error: no config with a cpu preset named {sorted(unknown)}; found "
            f"{[e['name'] for e in entries]}", file=sys.stderr)
      return 2
    entries = [e for e in entries if e["name"] in args.only]
  explicit = dict(item.split("=", 1) for item in args.workdir)
  resolve_workdirs(entries, args.runs_dir, explicit)
  for e in entries:
    print(f"{e['name']} ({e['method']}, {e['dataset']}) -> {e['workdir']}"
          f"{' (reused run)' if e['reused'] else ''}", flush=True)
  env = dict(os.environ)  # DPGEN_DATA_DIR etc. pass through to main.py
  if not args.collect_only:
    for e in entries:
      run_stages(e, args.python, args.curve, args.dry_run, env, args.curve_protocol)
  if args.dry_run:
    return 0
  path = write_results(entries, args.runs_dir, args.curve, hardware(), args.curve_protocol)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
