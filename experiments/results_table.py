"""The results table of experiments/reproduce.py: reads finished runs, writes RUNS/results.md.

Numbers come from the runs' own files only: privacy.json (the ledger: epsilon, accountant,
delta), eval/metrics.jsonl (one line per evaluated checkpoint), reproduce.json (wall time
and load average, written by reproduce.py) and eval/samples_<step>.png. The upstream
columns are the published numbers of docs/results.md (published numbers) and docs/methods/*.md.
"""

import glob
import json
import os
import shutil
import sys

from dpgen_jax.evaluation import metrics_log  # no JAX import

METHOD_NAMES = {"dpgan": "DP-GAN (Private GANs, revisited)", "dpcgan": "DP-CGAN",
                "dp_sinkhorn": "DP-Sinkhorn", "gswgan": "GS-WGAN", "cslgan": "CSL-GAN",
                "dp_merf": "DP-MERF", "dp_ntk": "DP-NTK"}
EXTRACTORS = {"fid_lenet": "LeNet", "fid_inception": "Inception-v3"}
# Upstream numbers (FID, accuracy % or AUROC, source), from docs/results.md (published
# numbers) and docs/methods/*.md; keyed by config name. Protocols differ per source (see there).
UPSTREAM = {
    "mnist_eps10": ("19.4", "CNN 93.0", "dpgan-revisit README, n_D = 50, 1 V100, ~8 h"),
    "mnist_eps10_adaptive": ("13.3", "CNN 94.4", "dpgan-revisit README, adaptive n_D"),
    "mnist_nonpriv": ("3.4", "CNN 97.1", "dpgan-revisit README, non-private"),
    "dpcgan_mnist_eps10": ("179.2 (GS-WGAN protocol)",
                           "AUROC LR 0.8642, MLP 0.8858 (eps 9.6)",
                           "DP-CGAN TF2 report Table 1; FID from the DPDM table"),
    "dpcgan_thyroid": ("-", "AUROC 0.9746 (eps 3.7, unverified)", "DP-CGAN report Table 2"),
    "sinkhorn_mnist_m1": ("61.2", "CNN 83.2", "DP-Sinkhorn submission Table 1 (m = 1)"),
    "sinkhorn_mnist_m3": ("55.56", "CNN 79.1", "DP-Sinkhorn submission Table 1 (m = 3)"),
    "sinkhorn_fashion_mnist_m1": ("145.1", "CNN 69.3", "DP-Sinkhorn submission Table 1"),
    "sinkhorn_fashion_mnist_m3": ("129.4", "CNN 64.2", "DP-Sinkhorn submission Table 1"),
    "sinkhorn_celeba": ("168.4", "MLP 76.2, CNN 75.8", "DP-Sinkhorn submission Table 3"),
    "gswgan_mnist_eps10": ("61.3", "LogReg 79, MLP 79, CNN 80", "GS-WGAN paper (DPDM table)"),
    "gswgan_fashion_mnist_eps10": ("131.3", "LogReg 68, MLP 65, CNN 65",
                                   "GS-WGAN paper (DPDM table)"),
}
NO_UPSTREAM = ("-", "-", "no published result")
CURVE_METRICS = (("acc_cnn", "CNN accuracy (%)", "acc"), ("fid_lenet", "FID (LeNet)", "fid"))


def read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_metrics(workdir: str, protocol: str = "full") -> list[dict]:
  """The eval rows of `workdir` for `protocol` (eval/metrics.jsonl or metrics_<protocol>.jsonl)."""
  return metrics_log.read_rows(workdir, protocol)


def train_done(workdir: str) -> bool:
  ledger = read_json(os.path.join(workdir, "privacy.json"))
  cfg = read_json(os.path.join(workdir, "config.json"))
  if ledger is None or cfg is None:
    return False
  return int(ledger.get("steps", -1)) >= int(cfg.get("train", {}).get("num_steps", 1 << 62))


def final_step(workdir: str) -> int | None:
  ledger = read_json(os.path.join(workdir, "privacy.json"))
  if ledger is None:
    return None
  return int(ledger.get("checkpoint_step", ledger.get("steps")))


def wall_time(workdir: str) -> str:
  if not train_done(workdir):
    cfg = read_json(os.path.join(workdir, "config.json")) or {}
    return (f"incomplete: step {final_step(workdir)} of "
            f"{cfg.get('train', {}).get('num_steps', '?')}")
  rec = read_json(os.path.join(workdir, "reproduce.json")) or {}
  if "train" in rec:
    t = rec["train"]
    return f"{t['wall_time_s'] / 60:.1f} min (load {t['load_before']} -> {t['load_after']})"
  start, end = (os.path.join(workdir, f) for f in ("config.json", "privacy.json"))
  if os.path.exists(start) and os.path.exists(end):
    return f"~{max(0.0, os.path.getmtime(end) - os.path.getmtime(start)) / 60:.1f} min " \
           f"(file times)"
  return "-"


def _pct(v) -> str:
  return f"{100 * v:.1f}" if v <= 1.0 else f"{v:.1f}"


def collect(entry: dict) -> dict:
  """One results row from the run's privacy.json and eval/metrics.jsonl."""
  w = entry["workdir"]
  ledger = read_json(os.path.join(w, "privacy.json")) or {}
  records = read_metrics(w)
  last = max(records, key=lambda r: int(r["step"])) if records else {}
  row = dict(name=entry["name"], method=METHOD_NAMES.get(entry["method"], entry["method"]),
             dataset=entry["dataset"], workdir=w, step=last.get("step"),
             steps=ledger.get("steps"))
  if not ledger:
    row["epsilon"] = "not trained"
  elif not ledger.get("private", True):
    row["epsilon"] = "inf (non-private)"
  else:
    eps = last.get("epsilon", ledger.get("epsilon"))
    row["epsilon"] = (f"{eps:.3f} ({ledger.get('accountant', '?')}, delta "
                      f"{ledger.get('delta', 0):g})" if eps is not None else "?")
    if last.get("epsilon_caveat") or ledger.get("epsilon_caveat"):
      row["epsilon"] += f" [{last.get('epsilon_caveat') or ledger.get('epsilon_caveat')}]"
  fids = [f"{last[k]:.1f} ({x})" for k, x in EXTRACTORS.items() if k in last]
  row["fid"] = "; ".join(fids) or "-"
  cnn = last.get("acc_cnn", last.get("acc_cnn_sinkhorn"))
  row["cnn"] = _pct(cnn) if cnn is not None else "-"
  row["logreg"] = _pct(last["acc_logreg"]) if "acc_logreg" in last else "-"
  row["mlp"] = _pct(last["acc_mlp"]) if "acc_mlp" in last else "-"
  auroc = [f"{k[len('auroc_'):]} {last[k]:.4f}" for k in ("auroc_lr", "auroc_mlp",
                                                          "auroc_thyroid") if k in last]
  row["auroc"] = ", ".join(auroc) or "-"
  row["wall"] = wall_time(w)
  rec = read_json(os.path.join(w, "reproduce.json")) or {}
  row["hardware"] = rec.get("train", {}).get("hardware", "as above (run by hand)")
  row["upstream"] = UPSTREAM.get(entry["name"], NO_UPSTREAM)
  return row


def results_table(rows: list[dict], machine: str) -> str:
  head = ("| method | config | dataset | epsilon (accountant, delta) | step | FID (extractor) "
          "| CNN acc % | LogReg acc % | MLP acc % | AUROC | train wall time | hardware "
          "| upstream FID | upstream acc / AUROC | upstream source |")
  lines = [f"Measured on: {machine}", "", head, "|" + "---|" * head.count(" | ")
           + "---|"]
  for r in rows:
    up = r["upstream"]
    lines.append("| " + " | ".join(str(x) for x in (
        r["method"], r["name"], r["dataset"], r["epsilon"],
        "-" if r["step"] is None else r["step"], r["fid"], r["cnn"], r["logreg"], r["mlp"],
        r["auroc"], r["wall"], r["hardware"], up[0], up[1], up[2])) + " |")
  return "\n".join(lines) + "\n"


def copy_samples(rows: list[dict], runs_dir: str) -> dict:
  out = {}
  for r in rows:
    grids = glob.glob(os.path.join(r["workdir"], "eval", "samples_*.png"))
    steps = [(int(os.path.basename(p)[len("samples_"):-4]), p) for p in grids
             if os.path.basename(p)[len("samples_"):-4].isdigit()]
    if steps:
      os.makedirs(os.path.join(runs_dir, "samples"), exist_ok=True)
      dest = os.path.join(runs_dir, "samples", f"{r['name']}.png")
      shutil.copyfile(max(steps)[1], dest)
      out[r["name"]] = dest
  return out


def plot_curves(records: list[dict], out_dir: str, name: str,
                protocol: str = "full") -> list[str]:
  """metric vs epsilon and vs training wall time PNGs from the checkpoints of one run
  (wall time: the checkpoints' train_wall_time_s); [] without matplotlib."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("note: matplotlib is not installed; skipping plots "
          "(pip install -e \".[plots]\").", file=sys.stderr)
    return []
  paths = []
  points = sorted(records, key=lambda r: r["step"])
  axes = (("epsilon", "epsilon spent", "epsilon", 1.0),
          ("train_wall_time_s", "training wall time (min)", "wall_time", 1 / 60))
  for key, label, short in CURVE_METRICS:
    for x_key, x_label, x_short, scale in axes:
      xy = [(r[x_key] * scale, (100 * r[key] if key.startswith("acc") and r[key] <= 1
                                else r[key]))
            for r in points if key in r and r.get(x_key) is not None]
      if not xy:
        continue
      fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
      ax.plot([x for x, _ in xy], [y for _, y in xy], "o-")
      ax.set_xlabel(f"{x_label} (checkpoints of one run)")
      ax.set_ylabel(label)
      ax.set_title(f"{name}: {label} vs {x_short.replace('_', ' ')} ({protocol} eval)",
                   fontsize=9)
      ax.grid(alpha=0.3)
      fig.tight_layout()
      os.makedirs(out_dir, exist_ok=True)
      path = os.path.join(out_dir, f"{name}_{short}_vs_{x_short}.png")
      fig.savefig(path)
      plt.close(fig)
      paths.append(path)
  return paths


def write_results(entries: list[dict], runs_dir: str, curve: str, machine: str,
                  curve_protocol: str = "full") -> str:
  missing = [e["name"] for e in entries
             if not os.path.exists(os.path.join(e["workdir"], "privacy.json"))]
  entries = [e for e in entries if e["name"] not in missing]
  rows = [collect(e) for e in entries]
  text = ["# Results (experiments/reproduce.py)", "", results_table(rows, machine)]
  if missing:
    text += [f"Not run yet (no privacy.json): {', '.join(missing)}.", ""]
  samples = copy_samples(rows, runs_dir)
  curve_rows = [e for e in entries if e["name"] == curve]
  plots = plot_curves(read_metrics(curve_rows[0]["workdir"], curve_protocol),
                      os.path.join(runs_dir, "plots"), curve,
                      curve_protocol) if curve_rows else []
  if plots:
    text += ["## Curves over the checkpoints of one run", "",
             f"`{curve}`, every kept checkpoint evaluated with the {curve_protocol!r} "
             "protocol.", ""] + [f"![{os.path.basename(p)}]"
                                         f"({os.path.relpath(p, runs_dir)})" for p in plots] + [""]
  if samples:
    text += ["## Samples (newest evaluated checkpoint)", ""]
    text += [f"{n}: ![{n}]({os.path.relpath(p, runs_dir)})" for n, p in samples.items()] + [""]
  text += ["Commands: `python main.py --config=configs/NAME.py:cpu --workdir=RUNS/RUN "
           "--mode=train`, then `--mode=eval`; workdirs: " +
           ", ".join(f"{r['name']} -> {r['workdir']}" for r in rows), ""]
  path = os.path.join(runs_dir, "results.md")
  os.makedirs(runs_dir, exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(text))
  return path
