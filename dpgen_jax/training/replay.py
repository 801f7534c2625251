"""Exact replay on resume: the secret root comes back from the checkpoints, and a resume
that would replay released steps under another computation is refused.

A step's batch and noise are functions of (secret root, step). Replaying step t after a
crash with the same computation writes the same outputs again (nothing new is released);
replaying it with another function of the same noise would release the difference
without noise. `replay_fingerprint` hashes everything that decides the computation;
`check_replay` compares it with the fingerprint stored in the checkpoint a run resumes
from whenever outputs past that checkpoint are already out (privacy.json's
released_through_step).
"""

import hashlib
import json
import os

import jax

from dpgen_jax import errors
from dpgen_jax.checkpoints import Checkpointer
from dpgen_jax.privacy.randomness import SecretRoot


# Config fields that do not change what a step computes: a resumed run may change them
# even after outputs past its checkpoint were written (see `replay_fingerprint`).
REPLAY_INDEPENDENT = {
    "train": {"num_steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every",
              "progress_every_secs", "log_private_metrics"},
    "data": {"data_dir", "tfds_data_dir", "download"},
    "privacy": {"target_epsilon", "accountant", "rdp_orders"},
    "gswgan": {"stage", "pretrained_dir", "accounting"},
    "eval": None, "generate": None, "distributed": None,  # None: the whole section
}


def replay_fingerprint(config) -> str:
  """A hash of everything that decides what a step computes from its batch and noise:
  the resolved config (calibrated sigma included) minus REPLAY_INDEPENDENT, the JAX
  version and the devices. Replaying a released step under another fingerprint would
  apply another function to the same noise and release the difference noise-free."""
  data = config.to_dict()
  for section, keys in REPLAY_INDEPENDENT.items():
    if section in data:
      if keys is None:
        data.pop(section)
      else:
        for key in keys:
          data[section].pop(key, None)
  devices = jax.devices()
  data["__runtime__"] = dict(jax=jax.__version__, platform=devices[0].platform,
                             device_kind=devices[0].device_kind, devices=len(devices),
                             xla_flags=os.environ.get("XLA_FLAGS", ""))
  blob = json.dumps(data, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def check_replay(run, start_step: int, meta: dict | None, fingerprint: str) -> None:
  """Refuses to replay steps whose outputs are already out under another fingerprint
  (`run`: the RunFolder, whose privacy.json says which steps were released)."""
  record = run.privacy_record() if meta is not None else None
  if record is None:
    return
  workdir = run.workdir
  released = int(record.get("released_through_step", start_step))
  stored = meta.get("replay_fingerprint")
  if released > start_step and stored is not None and stored != fingerprint:
    raise errors.UserError(
        f"{workdir} released outputs of steps {start_step + 1}..{released} (sample grids, "
        f"logged metrics or checkpoints) after the checkpoint it resumes from ({start_step}), "
        f"and this configuration (or the JAX version / devices) computes those steps "
        f"differently: replaying them with the same noise would release the difference "
        f"without noise. Resume with the run's own configuration (its config.json) on the "
        f"same kind of machine, or start a new --workdir.")


def restore_root(checkpointer: Checkpointer, steps: list[int]) -> SecretRoot | None:
  """The run's secret root from its newest checkpoint that has a readable one (every
  checkpoint of a run holds the same root); None when there are no checkpoints."""
  if not steps:
    return None
  for step in reversed(steps):
    try:
      words = checkpointer.restore_secret(step)
      meta = checkpointer.restore_meta(step)
    except Exception:  # a damaged checkpoint: try an older one
      continue
    if words is None:
      raise errors.UserError(
          f"Checkpoint {step} in {checkpointer.directory} holds no secret root of randomness "
          f"(it was written by an older dpgen-jax), so the run cannot be resumed exactly. "
          f"Start a new run in a new --workdir.")
    return SecretRoot.from_array(words, public=meta.get("ledger", {}).get("randomness") ==
                                 "public")
  return None
