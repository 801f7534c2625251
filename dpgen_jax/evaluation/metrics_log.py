"""Where an eval job writes its rows, and how they are read back (no JAX import, so the
file-only result scripts in experiments/ use it too).

    WORKDIR/eval/metrics.jsonl            the full (reported) protocol
    WORKDIR/eval/metrics_<protocol>.jsonl any other protocol (e.g. 'quick')

One JSON object per line, one line per evaluated checkpoint.
"""

import json
import os

METRICS_FILE = os.path.join("eval", "metrics.jsonl")


def metrics_file(protocol: str = "full") -> str:
  """The rows' path relative to the workdir."""
  return METRICS_FILE if protocol == "full" else os.path.join("eval", f"metrics_{protocol}.jsonl")


def read_rows(workdir: str, protocol: str = "full") -> list[dict]:
  """The rows of `workdir` for `protocol`; a line cut short by an interrupted job is
  skipped."""
  path = os.path.join(workdir, metrics_file(protocol))
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        line = line.strip()
        if line:
          try:
            rows.append(json.loads(line))
          except ValueError:
            pass
  return rows
