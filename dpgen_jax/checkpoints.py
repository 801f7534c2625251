"""Orbax checkpoints of (state, metadata), where metadata holds the privacy ledger.

Layout: WORKDIR/checkpoints/<step>/{state, meta, secret}. `state` is the method's pytree
(StandardSave); `meta` is JSON: the ledger, the sampling plan, the loop's counters;
`secret` is the run's secret root of randomness (privacy/randomness.py), so that a
resumed run replays the same batches, choices and noise. Checkpoints are private
artefacts: never publish them (only the released generator, e.g. the files of
`--mode=generate`, is covered by epsilon).
Saves are synchronous so that privacy.json, written right after a save, never
describes a checkpoint that does not exist yet. Orbax writes each step to a temporary
folder and renames it when complete, so a process killed mid-save leaves the previous
checkpoints intact.
"""

from dpgen_jax.log import get_logger
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dpgen_jax.privacy.randomness import ROOT_WORDS as _ROOT_WORDS

PyTree = Any


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """A thin wrapper over ocp.CheckpointManager for (state, meta) pairs."""

  def __init__(self, workdir: str, *, max_to_keep: int | None = 3, read_only: bool = False):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False)
    self.directory = checkpoint_dir(workdir)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    self._manager.reload()
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree, meta: dict, secret: np.ndarray | None = None) -> None:
    items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if secret is not None:
      items["secret"] = ocp.args.StandardSave({"root": np.asarray(secret)})
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
    """Restores `step` into the structure/shardings of `abstract_state`."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return out.state, dict(out.meta)

  def restore_secret(self, step: int) -> np.ndarray | None:
    """The secret root stored with `step` (None for a checkpoint saved without one)."""
    if not os.path.isdir(os.path.join(self.directory, str(step), "secret")):
      return None
    target = {"root": jax.ShapeDtypeStruct((_ROOT_WORDS,), np.uint32)}
    out = self._manager.restore(step, args=ocp.args.Composite(
        secret=ocp.args.StandardRestore(target)))
    return np.asarray(out.secret["root"])

  def restore_meta(self, step: int) -> dict:
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out.meta)

  def restore_latest_valid(self, abstract_state: PyTree) -> tuple[int, PyTree, dict] | None:
    """The newest checkpoint that restores; unreadable ones are reported and skipped.

    Falling back to an older checkpoint is exact: the training loop restores the
    secret root stored with the checkpoint it resumes from, and every batch, choice and
    noise draw of step t is a function of (root, t), so the steps after the fallback
    point are replayed with the same randomness (and the same released outputs) as the
    first time; the ledger restored with that checkpoint charges each of them once.
    The unreadable newer checkpoints are deleted (their steps are about to be replayed
    and saved again).
    """
    unreadable = []
    for step in reversed(self.all_steps()):
      try:
        state, meta = self.restore(step, abstract_state)
        for bad in unreadable:  # replayed (identically) from `step`, then saved again
          self._manager.delete(bad)
        return step, state, meta
      except Exception as e:  # orbax raises many types for a damaged checkpoint
        get_logger().warning("Checkpoint %d in %s cannot be restored (%s: %s); trying an older one.",
                        step, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
        unreadable.append(step)
    return None

  def close(self) -> None:
    self._manager.close()
