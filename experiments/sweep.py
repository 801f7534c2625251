"""A re-runnable hyperparameter sweep: train a grid of config overrides, evaluate each
with the quick protocol, and write one table.

    python experiments/sweep.py --grid experiments/sweeps/dpgan_cpu.json --root runs/sweep
    python experiments/sweep.py --grid ... --root ... --only NAME [--only NAME ...]
    python experiments/sweep.py --grid ... --root ... --table   # print the table only

A grid file is JSON:

    {"base": "configs/fashion_mnist_eps10.py:cpu",      # config[:preset] every trial starts from
     "common": {"train.checkpoint_every": 500},          # overrides of every trial (optional)
     "eval": {"eval.num_samples": 10000, ...},           # eval overrides (optional; default:
                                                         #   the quick protocol below)
     "trials": [{"name": "hinge_b512", "overrides": {"dpgan.loss": "hinge", ...}}, ...]}

Each trial runs `python main.py --config=BASE --workdir=ROOT/NAME` with the overrides
(resuming when ROOT/NAME already has checkpoints), then `--mode=eval` on its final
checkpoint, and appends one row to ROOT/results.jsonl: the overrides, epsilon, the
metrics, training and evaluation wall time and the load average. A trial already in
results.jsonl is skipped, so an interrupted sweep continues where it stopped.
ROOT/results.md is rewritten after every trial, sorted by the first metric.

Hyperparameters chosen by a sweep on the private data itself are tuned outside the
privacy budget (as in every paper this library reproduces); sweep on a public proxy
(Fashion-MNIST for MNIST, scikit-learn's digits) when that matters, and say which.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from results_table import read_metrics  # experiments/ (this script's folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The quick evaluation protocol (docs/results.md: agreement with the full protocol).
QUICK_EVAL = {"eval.protocol": "quick", "eval.export_grid": True}


def _flag(key: str, value) -> str:
  if isinstance(value, (list, tuple)):
    value = "(" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in value) + \
            ("," if len(value) == 1 else "") + ")"
  elif value is None:
    value = "None"
  return f"--config.{key}={value}"


def _load_rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _final_metrics(workdir: str, protocol: str = "full") -> dict | None:
  rows = read_metrics(workdir, protocol)
  if not rows:
    return None
  return max(rows, key=lambda r: int(r["step"]))


def _run(cmd: list[str], log_path: str) -> tuple[int, float]:
  start = time.time()
  with open(log_path, "a") as log:
    log.write("\n$ " + " ".join(cmd) + "\n")
    log.flush()
    code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
  return code, time.time() - start


def run_trial(grid: dict, trial: dict, root: str, python: str) -> dict:
  name = trial["name"]
  workdir = os.path.join(root, name)
  os.makedirs(workdir, exist_ok=True)
  overrides = dict(grid.get("common", {}), **trial.get("overrides", {}))
  base = trial.get("base", grid["base"])
  config_flags = [_flag(k, v) for k, v in overrides.items()]
  log_path = os.path.join(workdir, "sweep.log")
  load_before = os.getloadavg()
  code, train_s = _run([python, "main.py", f"--config={base}", f"--workdir={workdir}",
                        *config_flags], log_path)
  row = dict(name=name, base=base, overrides=overrides, train_exit=code,
             train_wall_s=round(train_s, 1), load_before=[round(v, 2) for v in load_before])
  if code != 0:
    row["error"] = f"training exited with {code}; see {log_path}"
    return row
  eval_overrides = dict(grid.get("eval", QUICK_EVAL), **trial.get("eval", {}))
  eval_flags = [_flag(k, v) for k, v in eval_overrides.items()]
  with open(os.path.join(workdir, "privacy.json")) as f:
    ledger = json.load(f)
  final = int(ledger.get("checkpoint_step", ledger.get("steps", 0)))
  code, eval_s = _run([python, "main.py", f"--config={base}", f"--workdir={workdir}",
                       "--mode=eval", *config_flags, *eval_flags,
                       f"--config.eval.checkpoint={final}",
                       "--config.eval.idle_timeout_secs=5"], log_path)
  row.update(eval_exit=code, eval_wall_s=round(eval_s, 1), eval_overrides=eval_overrides,
             load_after=[round(v, 2) for v in os.getloadavg()],
             epsilon=ledger.get("epsilon"), delta=ledger.get("delta"), steps=ledger.get("steps"))
  metrics = _final_metrics(workdir, eval_overrides.get("eval.protocol", "full"))
  if code != 0 or metrics is None:
    row["error"] = f"evaluation exited with {code}; see {log_path}"
    return row
  row["metrics"] = {k: v for k, v in metrics.items()
                    if isinstance(v, (int, float)) and k not in ("step",)}
  return row


def write_table(rows: list[dict], path: str) -> str:
  names = sorted({k for r in rows for k in r.get("metrics", {})
                  if k.startswith(("acc_", "fid_"))})
  key = next((n for n in names if n.startswith("acc_")), names[0] if names else None)
  ordered = sorted(rows, key=lambda r: -(r.get("metrics", {}).get(key) or -1e9)
                   if key and key.startswith("acc_") else (r.get("metrics", {}).get(key) or 1e9))
  lines = ["| trial | overrides | epsilon | " + " | ".join(names) +
           " | train min | eval min | load |",
           "|---" * (6 + len(names)) + "|"]
  for r in ordered:
    m = r.get("metrics", {})
    eps = r.get("epsilon")
    cells = [r["name"], ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["overrides"].items()),
             "-" if eps is None else f"{eps:.3f}"]
    cells += [("-" if m.get(n) is None else f"{m[n]:.4g}") for n in names]
    cells += [f"{r.get('train_wall_s', 0) / 60:.1f}", f"{r.get('eval_wall_s', 0) / 60:.1f}",
              "/".join(str(v) for v in r.get("load_before", [])[:1] + r.get("load_after", [])[:1])]
    if r.get("error"):
      cells[0] += " (failed)"
    lines.append("| " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n"
  with open(path, "w") as f:
    f.write(text)
  return text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grid", required=True, help="JSON grid file")
  parser.add_argument("--root", required=True, help="folder of the trials' workdirs")
  parser.add_argument("--only", action="append", default=[], help="run only these trials")
  parser.add_argument("--table", action="store_true", help="print the table and exit")
  parser.add_argument("--python", default=sys.executable)
  args = parser.parse_args(argv)
  with open(args.grid) as f:
    grid = json.load(f)
  os.makedirs(args.root, exist_ok=True)
  results = os.path.join(args.root, "results.jsonl")
  table = os.path.join(args.root, "results.md")
  if args.table:
    print(write_table(_load_rows(results), table))
    return 0
  names = [t["name"] for t in grid["trials"]]
  unknown = [n for n in args.only if n not in names]
  if unknown:
    print(f"error: no trial named {', '.join(unknown)} in {args.grid}", file=sys.stderr)
    return 2
  for trial in grid["trials"]:
    if args.only and trial["name"] not in args.only:
      continue
    done = {r["name"] for r in _load_rows(results) if not r.get("error")}
    if trial["name"] in done:
      print(f"[sweep] {trial['name']}: done already", flush=True)
      continue
    print(f"[sweep] {trial['name']}: training ...", flush=True)
    row = run_trial(grid, trial, args.root, args.python)
    with open(results, "a") as f:
      f.write(json.dumps(row, sort_keys=True) + "\n")
    print(f"[sweep] {trial['name']}: {row.get('error') or row.get('metrics')}", flush=True)
    write_table(_load_rows(results), table)
  print(write_table(_load_rows(results), table))
  return 0


if __name__ == "__main__":
  sys.exit(main())
