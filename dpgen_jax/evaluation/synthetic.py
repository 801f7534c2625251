"""Synthetic data from a run's released generator: `--mode=generate`, and the samples
the eval job scores (one code path for both).

    python main.py --config=C --workdir=W --mode=generate [--config.generate.num_samples=N]

writes, for the newest checkpoint (or generate.checkpoint),

  W/synthetic/step_<S>.npz   x: uint8 (N, H, W, C) images (float32 (N, F) rows for
                             tabular data), y: int64 (N,) labels with balanced classes
                             (counts differ by at most one), epsilon, delta, step;
  W/synthetic/step_<S>.json  the same metadata: epsilon, delta, accountant, steps,
                             the caveat if any, class counts, method, dataset;
  W/synthetic/step_<S>.csv   tabular methods only (data/tabular.py's columns).

These files are the release: functions of the released generator and public
randomness only, covered by the checkpoint's epsilon. The generation key comes from
train.seed (public: it only picks latents), so the same checkpoint always gives the
same dataset.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax import errors, rng
from dpgen_jax.log import get_logger

SYNTHETIC_DIR = "synthetic"


def balanced_labels(num_samples: int, num_classes: int) -> np.ndarray:
  """0, 1, ..., K-1, 0, 1, ...: every class num_samples // K or one more times."""
  return (np.arange(num_samples) % num_classes).astype(np.int64)


def generate(method, state, num_samples: int, num_classes: int, *, seed: int,
             batch_size: int = 500, labels: str = "uniform", quantize: bool = True,
             prng_impl: str = rng.DEFAULT_IMPL) -> tuple[np.ndarray, np.ndarray]:
  """`num_samples` samples of the released generator with their labels.

  labels='uniform': i.i.d. uniform labels (dpgan-revisit); 'balanced': 0..K-1 repeated
  (GS-WGAN, DP-CGAN, the synthetic datasets). quantize: round(255 x) / 255, as images
  are saved (and as upstream evaluates them).
  """
  key = jax.random.fold_in(rng.make_key(seed, prng_impl), 0xE7A1)
  if labels == "uniform":
    y = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (num_samples,), 0,
                                      num_classes), np.int32)
  elif labels == "balanced":
    y = balanced_labels(num_samples, num_classes).astype(np.int32)
  else:
    raise errors.ConfigError(f"eval.labels must be 'uniform' or 'balanced', got {labels!r}.")
  chunks = []
  padded = -(-num_samples // batch_size) * batch_size
  y_pad = np.concatenate([y, np.zeros((padded - num_samples,), np.int32)])
  for i in range(0, padded, batch_size):  # one jitted call per batch of `batch_size`
    chunk = method.sample(state, jax.random.fold_in(key, 2 + i // batch_size),
                          jnp.asarray(y_pad[i:i + batch_size]))
    chunks.append(np.asarray(chunk))
  x = np.concatenate(chunks)[:num_samples].astype(np.float32)
  if quantize:
    x = np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0
  return x.astype(np.float32), y


def write_synthetic(workdir: str, step: int, x: np.ndarray, y: np.ndarray, ledger: dict,
                    *, kind: str, method: str, dataset: str, schema=None) -> dict:
  """Writes W/synthetic/step_<S>.{npz,json[,csv]}; returns the metadata written."""
  folder = os.path.join(workdir, SYNTHETIC_DIR)
  os.makedirs(folder, exist_ok=True)
  prefix = os.path.join(folder, f"step_{step:08d}")
  meta = {"step": int(step), "epsilon": ledger.get("epsilon"), "delta": ledger.get("delta"),
          "private": ledger.get("private"), "accountant": ledger.get("accountant"),
          "method": method, "dataset": dataset, "num_samples": int(len(y)),
          "class_counts": np.bincount(y).astype(int).tolist(),
          "files": {"npz": prefix + ".npz", "json": prefix + ".json"}}
  for key in ("epsilon_caveat", "epsilon_bound"):
    if key in ledger:
      meta[key] = ledger[key]
  eps = np.nan if meta["epsilon"] is None else float(meta["epsilon"])
  delta = np.nan if meta["delta"] is None else float(meta["delta"])
  if kind == "image":
    data_x = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
  else:
    data_x = np.asarray(x, np.float32).reshape(len(x), -1)
  tmp = prefix + f".{os.getpid()}.tmp.npz"
  np.savez_compressed(tmp, x=data_x, y=np.asarray(y, np.int64), epsilon=eps, delta=delta,
                      step=int(step))
  os.replace(tmp, prefix + ".npz")
  if kind == "tabular" and schema is not None:
    from dpgen_jax.data import tabular
    meta["files"]["csv"] = tabular.write_table(prefix, data_x, y, schema)["csv"]
  with open(prefix + ".json.tmp", "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(prefix + ".json.tmp", prefix + ".json")
  return meta


def generate_workdir(config, workdir: str) -> dict:
  """`--mode=generate`: the synthetic dataset of the newest (or the chosen) checkpoint."""
  from dpgen_jax.run_folder import open_trained
  g = config.generate
  errors.require(int(g.num_samples) > 0,
                 f"generate.num_samples must be positive, got {g.num_samples}.")
  run, method, dataset, abstract = open_trained(config, workdir)
  checkpointer = run.checkpointer(read_only=True)
  steps = [s for s in checkpointer.all_steps() if s > 0]
  errors.require(steps, f"{workdir} has no trained checkpoint yet; train first.")
  step = int(g.checkpoint) if g.get("checkpoint") is not None else steps[-1]
  errors.require(step in steps, f"{workdir} has no checkpoint {step}; it has {steps}.")
  state, meta = checkpointer.restore(step, abstract)
  ledger = meta.get("ledger", {})
  n = int(g.num_samples)
  get_logger().info("Generating %d samples from checkpoint %d (epsilon %s).", n, step,
                    ledger.get("epsilon"))
  x, y = generate(method, state, n, dataset.num_classes, seed=int(config.train.seed),
                  batch_size=int(g.batch_size), labels="balanced",
                  quantize=dataset.kind == "image", prng_impl=config.train.prng_impl)
  schema = None
  if dataset.kind == "tabular":
    from dpgen_jax.data import tabular
    schema = tabular.schema_for(dataset.name, int(np.prod(x.shape[1:])))
  out = write_synthetic(workdir, step, x, y, ledger, kind=dataset.kind, method=config.method,
                        dataset=dataset.name, schema=schema)
  get_logger().info("Wrote %s", ", ".join(out["files"].values()))
  return out
