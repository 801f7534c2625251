"""Mean and spread of eval metrics over independent training runs (e.g. DP-CGAN's 3 runs).

DP-CGAN's report averages 3 independent GAN trainings (dpcgan.md §5.1). Train the same
config with train.seed = 0, 1, 2 in three workdirs, run `--mode=eval` on each, then

  python experiments/average_runs.py RUN0 RUN1 RUN2 [--metrics auroc_lr,auroc_mlp]

prints one JSON object: for every metric, the mean, the population std and the per-run
values of each workdir's final evaluated checkpoint (the largest step in
WORKDIR/eval/metrics.jsonl), plus each run's step and epsilon. Runs must have been
evaluated at the same step with the same epsilon, else the average would mix budgets.
"""

import argparse
import json
import math
import os
import sys


def _fail(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def final_record(workdir: str) -> dict:
  path = os.path.join(workdir, "eval", "metrics.jsonl")
  if not os.path.isfile(path):
    _fail(f"{path} does not exist; run --mode=eval on {workdir} first.")
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not records:
    _fail(f"{path} holds no evaluated checkpoint.")
  return max(records, key=lambda r: r["step"])


def average(records: list[dict], metrics: list[str] | None = None) -> dict:
  """{metric: {mean, std, runs}} over records, for metrics every record has."""
  steps = {r["step"] for r in records}
  epsilons = {None if r.get("epsilon") is None else round(r["epsilon"], 9) for r in records}
  if len(steps) > 1 or len(epsilons) > 1:
    _fail(f"the runs were evaluated at different steps {sorted(steps)} or "
                     f"epsilons {sorted(epsilons, key=str)}; average like with like.")
  if metrics is None:
    shared = set.intersection(*(set(r) for r in records))
    metrics = sorted(k for k in shared
                     if (k.startswith(("auroc_", "acc_", "fid_", "is_")) and not k.endswith("_std")
                         and all(isinstance(r[k], (int, float)) for r in records)))
  out = {"num_runs": len(records), "step": records[0]["step"], "epsilon": records[0].get("epsilon")}
  for name in metrics:
    values = [float(r[name]) for r in records]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    out[name] = {"mean": mean, "std": std, "runs": values}
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--metrics", default="", help="comma-separated (default: all shared)")
  args = parser.parse_args(argv)
  metrics = [m for m in args.metrics.split(",") if m] or None
  result = average([final_record(w) for w in args.workdirs], metrics)
  result["workdirs"] = args.workdirs
  print(json.dumps(result, indent=2, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
