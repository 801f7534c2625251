"""The on-disk cache shared by accounting and evaluation, and its atomic writes.

Slow, deterministic results (dp-accounting RDP curves, the LeNet feature extractor, real
statistics) live under `$DPGEN_CACHE_DIR`, default `~/.cache/dpgen_jax`. Several
processes may fill it at once (eval jobs, pytest-xdist workers), so every file is
written under a per-process temporary name and renamed into place.
"""

import os

import numpy as np


def cache_root() -> str:
  return (os.environ.get("DPGEN_CACHE_DIR")
          or os.path.join(os.path.expanduser("~"), ".cache", "dpgen_jax"))


def write_bytes_atomic(path: str, blob: bytes) -> None:
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    f.write(blob)
  os.replace(tmp, path)


def savez_atomic(path: str, **arrays) -> None:
  """np.savez to `path` (which should end in .npz), never leaving a partial file there."""
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
