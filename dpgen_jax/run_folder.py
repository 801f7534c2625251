"""A run folder (the --workdir): one object for every mode that reads or writes it.

    WORKDIR/config.json        the resolved config of the run (train writes, others check)
    WORKDIR/plan.json          the resolved PrivacyPlan (train writes; eval, generate,
                               audit build the method with it)
    WORKDIR/privacy.json       the ledger: every charged step, epsilon, what was released
    WORKDIR/checkpoints/<s>/   Orbax: state, meta (ledger, counters), secret (the root)
    WORKDIR/stages/<name>/     outputs of a method's stages (e.g. pretrained critics)
    WORKDIR/samples/           sample grids written during training
    WORKDIR/synthetic/         --mode=generate
    WORKDIR/eval/              --mode=eval: metrics.jsonl (metrics_quick.jsonl), grids
    WORKDIR/events.out.*       TensorBoard scalars of training

Private artefacts (never publish): checkpoints/, stages/, and everything a run writes
with train.log_private_metrics. The rest is a function of released outputs.
"""

import json
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dpgen_jax import errors
from dpgen_jax.cache import write_bytes_atomic
from dpgen_jax.checkpoints import Checkpointer
from dpgen_jax.privacy import accounting
from dpgen_jax.privacy.ledger import PrivacyLedger, scrub_epsilons, write_ledger_file

PyTree = Any
_ITEMS = re.compile(r"^items_(\d+)_(\d+)$")


class RunFolder:
  """Paths and the files of one run folder (module docstring)."""

  def __init__(self, workdir: str):
    self.workdir = workdir

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  @property
  def exists(self) -> bool:
    return os.path.isdir(self.workdir)

  def require_exists(self) -> None:
    errors.require(self.exists, f"--workdir {self.workdir} does not exist; train first (or "
                                f"start the eval job beside the training job on the same "
                                f"workdir).")

  # -- config.json --------------------------------------------------------------------

  def _read_json(self, name: str) -> dict | None:
    path = self.path(name)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def _write_json(self, name: str, data: dict) -> None:
    """Atomically (a reader never sees a partial file)."""
    os.makedirs(self.workdir, exist_ok=True)
    write_bytes_atomic(self.path(name), json.dumps(data, indent=2, sort_keys=True,
                                                   default=str).encode())

  def stored_config(self) -> dict | None:
    return self._read_json("config.json")

  def check_config(self, config) -> None:
    """The folder holds (or will hold) a run of this config's method and dataset."""
    old = self.stored_config()
    if old is None:
      return
    for dotted in ("method", "data.name"):
      section, _, key = dotted.partition(".")
      was = old.get(section, {}).get(key) if key else old.get(section)
      now = config[section][key] if key else config[section]
      errors.require(was is None or was == now,
                     f"{self.workdir} holds a run with {dotted} = {was!r}, but this config has "
                     f"{now!r}. Use a new --workdir (or remove the old one) to start a "
                     f"different run.")

  def write_config(self, config) -> None:
    self._write_json("config.json", config.to_dict())

  # -- plan.json ----------------------------------------------------------------------

  def write_plan(self, plan) -> None:
    data = plan_to_json(plan)
    if plan.reproducible:  # public randomness: no epsilon shown anywhere (privacy.json too)
      data["fields"] = scrub_epsilons(data["fields"])
    self._write_json("plan.json", data)

  def load_plan(self):
    """The stored PrivacyPlan, or None for a run trained before plan.json existed."""
    data = self._read_json("plan.json")
    return None if data is None else plan_from_json(data)

  # -- privacy.json -------------------------------------------------------------------

  def write_ledger(self, ledger: PrivacyLedger, extra: dict | None = None) -> dict:
    return write_ledger_file(ledger, self.workdir, extra=extra)

  def privacy_record(self) -> dict | None:
    return self._read_json("privacy.json")

  # -- checkpoints --------------------------------------------------------------------

  def checkpointer(self, *, max_to_keep: int | None = 3, read_only: bool = False) -> Checkpointer:
    return Checkpointer(self.workdir, max_to_keep=max_to_keep, read_only=read_only)

  # -- outputs ------------------------------------------------------------------------

  def sample_grid(self, step: int) -> str:
    return self.path("samples", f"step_{step:08d}.png")

  def synthetic_prefix(self, step: int) -> str:
    return self.path("synthetic", f"step_{step:08d}")

  def eval_dir(self) -> str:
    path = self.path("eval")
    os.makedirs(path, exist_ok=True)
    return path

  def stage_dir(self, name: str) -> str:
    return self.path("stages", name)

  def stage_store(self, stage) -> "StageStore":
    return StageStore(stage.directory(self), stage.recipe())


def open_trained(config, workdir: str, *, recorded_config: bool = False):
  """(run, method, dataset, abstract state) for a mode that reads a trained run (eval,
  generate, audit): the method is built with the run's own plan.json.

  recorded_config: build from the run's config.json (it says exactly which examples were
  the training set, as the audit needs) instead of `config`."""
  import ml_collections
  from dpgen_jax import parallel, rng
  from dpgen_jax.data import load_dataset
  from dpgen_jax.methods import get_definition
  run = RunFolder(workdir)
  run.require_exists()
  run.check_config(config)
  if recorded_config:
    stored = run.stored_config()
    errors.require(stored is not None, f"{workdir} has no config.json: not a training workdir.")
    config = ml_collections.ConfigDict(stored)
  definition = get_definition(config.method)
  dataset = load_dataset(config.data)
  plan = run.load_plan()
  if plan is None:  # a run from before plan.json: resolve the plan of its recorded config
    from dpgen_jax import planning
    stored = run.stored_config()
    errors.require(stored is not None, f"{workdir} has no config.json: not a training workdir.")
    _, plan, _ = planning.plan_for(ml_collections.ConfigDict(stored), dataset.spec)
  method = definition.build(plan, config, dataset.spec, parallel.make_mesh())
  abstract = jax.eval_shape(lambda: method.init(rng.make_key(0, config.train.prng_impl)))
  return run, method, dataset, abstract


class StageStore:
  """The outputs of one stage, saved chunk by chunk (items_<start>_<end>/, Orbax), with
  the recipe they were computed under (meta.json). A chunk is renamed into place only
  when complete, so an interrupted stage resumes at the first missing item."""

  def __init__(self, directory: str, recipe: dict):
    self.directory = os.path.abspath(directory)
    self.recipe = json.loads(json.dumps(recipe, sort_keys=True, default=str))  # as stored

  def _path(self, name: str) -> str:
    return os.path.join(self.directory, name)

  def exists(self) -> bool:
    return os.path.exists(self._path("meta.json"))

  def check_or_create(self) -> None:
    if self.exists():
      self.check_recipe()
      return
    os.makedirs(self.directory, exist_ok=True)
    with open(self._path("meta.json"), "w") as f:
      json.dump(self.recipe, f, indent=2, sort_keys=True)

  def check_recipe(self) -> None:
    with open(self._path("meta.json")) as f:
      saved = json.load(f)
    diff = [f"{k}: saved {saved.get(k)!r}, config {v!r}" for k, v in self.recipe.items()
            if saved.get(k) != v]
    errors.require(not diff, f"{self.directory} holds outputs of another recipe "
                             f"({'; '.join(diff)}). Use another folder (or --workdir), or "
                             f"delete that one to compute them again.")

  def finished(self) -> list[tuple[int, int]]:
    if not os.path.isdir(self.directory):
      return []
    found = [m for m in map(_ITEMS.match, os.listdir(self.directory)) if m]
    return sorted((int(m.group(1)), int(m.group(2))) for m in found)

  def missing(self, total: int, chunk_size: int) -> list[tuple[int, int]]:
    """Ranges of items not computed yet, cut into chunks of chunk_size."""
    todo, pos = [], 0
    for start, end in self.finished() + [(total, total)]:
      todo += [(s, min(s + chunk_size, start)) for s in range(pos, start, chunk_size)]
      pos = max(pos, end)
    return todo

  def save(self, start: int, end: int, output: PyTree) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(self._path(f"items_{start:05d}_{end:05d}"), output)
    checkpointer.wait_until_finished()
    checkpointer.close()

  def load(self, total: int, item_structure: PyTree) -> PyTree:
    """All items' outputs stacked; UserError if missing, of another recipe or partial."""
    errors.require(self.exists(), f"No stage outputs in {self.directory}: run the stage first.")
    self.check_recipe()
    chunks, pos = self.finished(), 0
    for start, end in chunks:
      errors.require(start == pos, f"{self.directory} is incomplete: items {pos}..{start - 1} "
                                   f"are missing; run the stage again to complete it.")
      pos = end
    errors.require(pos == total, f"{self.directory} is incomplete: {pos} of {total} items "
                                 f"are done; run the stage again to complete it.")
    checkpointer = ocp.StandardCheckpointer()
    parts = []
    for start, end in chunks:
      abstract = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct((end - start,) + tuple(a.shape), a.dtype),
          item_structure)
      parts.append(jax.device_get(checkpointer.restore(
          self._path(f"items_{start:05d}_{end:05d}"), abstract)))
    checkpointer.close()
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)

  def log(self, record: dict) -> None:
    with open(self._path("log.jsonl"), "a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")


# -- the plan as JSON (events through accounting's event JSON) --------------------------

_EVENT_FIELDS = ("step_event", "bound_event")


def plan_to_json(plan) -> dict:
  import dataclasses
  data = dataclasses.asdict(plan)
  for key in _EVENT_FIELDS:
    value = getattr(plan, key)
    data[key] = None if value is None else accounting.event_to_json(value)
  data["one_time"] = [[accounting.event_to_json(e), int(c)] for e, c in plan.one_time]
  return data


def plan_from_json(data: dict):
  from dpgen_jax.planning import PrivacyPlan
  data = dict(data)
  for key in _EVENT_FIELDS:
    data[key] = None if data.get(key) is None else accounting.event_from_json(data[key])
  data["one_time"] = tuple((accounting.event_from_json(e), int(c)) for e, c in data["one_time"])
  return PrivacyPlan(**data)
