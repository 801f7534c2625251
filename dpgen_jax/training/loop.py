"""The generic training loop: any method, Poisson batches, ledger, checkpoints, logs.

    train(config, workdir)

1. validates the config and loads the data (clear errors, no compute yet);
2. resolves the privacy plan (calibrated sigma or steps) and refuses a run whose
   planned steps exceed privacy.target_epsilon;
3. restores the newest readable checkpoint (state + ledger) or initialises;
4. runs `method.train_step` once per accounted step on a padded Poisson batch,
   charging the ledger for every step;
5. writes TensorBoard scalars and progress lines, PNG sample grids, Orbax
   checkpoints and WORKDIR/privacy.json (at every checkpoint).

Secret randomness (privacy/randomness.py): the batch, the model key and the noise key
of step t are functions of (secret root, t). The root is OS entropy (or, with
privacy.reproducible, derived from train.seed: then no epsilon is reported) and is
stored in every checkpoint, so a resumed run, even one that falls back to an older
checkpoint after a crash, replays exactly the steps the first attempt took: a sample
grid or scalar written again is identical, and the ledger restored with the checkpoint
charges each step once.

Logs (TensorBoard, the progress line) hold only what each method declares public
(`Method.public_metrics`: functions of released outputs or public data) and epsilon,
unless train.log_private_metrics, which adds the rest under 'private/'.
"""

import functools
import json
from dpgen_jax.log import get_logger
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax import errors, parallel, rng
from dpgen_jax.data import PoissonSampler, load_dataset
from dpgen_jax.methods import get_method
from dpgen_jax.privacy import plan as privacy_plan
from dpgen_jax.privacy.ledger import PrivacyLedger, write_ledger_file
from dpgen_jax.privacy.randomness import SecretRoot, StepKeys
from dpgen_jax.training import images
from dpgen_jax.training.checkpoint import Checkpointer


class TrainingDiverged(errors.UserError):
  """A loss or parameter became NaN/inf; the last good checkpoint is kept."""


def _validate_common(config) -> None:
  t = config.train
  for key in ("log_every", "checkpoint_every", "sample_every"):
    errors.require(int(t[key]) > 0, f"train.{key} must be a positive integer, got {t[key]}.")
  errors.require(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}.")
  errors.require(t.keep_checkpoints > 0,
                 f"train.keep_checkpoints must be positive, got {t.keep_checkpoints}.")


def prepare(config):
  """Config checks, data, and the resolved privacy plan: everything before compute.

  Returns (method module, dataset, resolved config, calibration notes).
  """
  method_mod = get_method(config.method)
  _validate_common(config)
  dataset = load_dataset(config.data)
  method_mod.validate(config, dataset.spec)
  config, notes = privacy_plan.resolve(config, dataset.spec.num_train, method_mod)
  return method_mod, dataset, config, notes


def _check_workdir_matches(workdir: str, config) -> None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  for dotted in ("method", "data.name"):
    section, _, key = dotted.partition(".")
    was = old.get(section, {}).get(key) if key else old.get(section)
    now = config[section][key] if key else config[section]
    if was is not None and was != now:
      raise errors.ConfigError(
          f"{workdir} holds a run with {dotted} = {was!r}, but this config has {now!r}. "
          f"Use a new --workdir (or remove the old one) to start a different run.")


def _device_data(dataset, mesh):
  """The training set on the devices (uint8 when the images are 8-bit, to save memory)."""
  x = dataset.train_x
  if dataset.kind == "image":
    scaled = x * 255.0
    if np.array_equal(scaled, np.round(scaled)):
      x = np.round(scaled).astype(np.uint8)
  replicated = parallel.replicated(mesh)
  return {"x": jax.device_put(x, replicated), "y": jax.device_put(dataset.train_y, replicated)}


def make_gather(mesh):
  """A jitted (data, indices, mask) -> batch placed along the mesh's 'data' axis."""
  sharding = parallel.data_sharding(mesh)

  @functools.partial(jax.jit, out_shardings=sharding)
  def gather(data, indices, mask):
    x = data["x"][indices]
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 255.0
    return {"x": x, "y": data["y"][indices], "mask": mask}

  return gather


PRIVATE_PREFIX = "private/"
PRIVATE_DIAGNOSTICS_NOTE = (
    "train.log_private_metrics was on: un-noised statistics of the private data were "
    "written to TensorBoard and the logs under 'private/'. They are NOT covered by epsilon; "
    "treat those files as private.")


def split_metrics(metrics: dict, public: frozenset, *, private_run: bool,
                  log_private: bool) -> dict:
  """The metrics to write: all of them for a non-private run; else the declared public
  ones, plus (with log_private) the rest renamed 'private/<name>'."""
  if not private_run:
    return dict(metrics)
  out = {k: v for k, v in metrics.items() if k in public}
  if log_private:
    out.update({PRIVATE_PREFIX + k: v for k, v in metrics.items() if k not in public})
  return out


# Config fields that do not change what a step computes: a resumed run may change them
# even after outputs past its checkpoint were written (see `replay_fingerprint`).
REPLAY_INDEPENDENT = {
    "train": {"num_steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every",
              "progress_every_secs", "log_private_metrics"},
    "data": {"data_dir", "tfds_data_dir", "download"},
    "privacy": {"target_epsilon", "accountant", "rdp_orders"},
    "gswgan": {"stage", "pretrained_dir", "pretrain_log_every", "accounting"},
    "eval": None, "generate": None, "distributed": None,  # None: the whole section
}


def replay_fingerprint(config) -> str:
  """A hash of everything that decides what a step computes from its batch and noise:
  the resolved config (calibrated sigma included) minus REPLAY_INDEPENDENT, the JAX
  version and the devices. Replaying a released step under another fingerprint would
  apply another function to the same noise and release the difference noise-free."""
  import hashlib
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


def check_replay(workdir: str, start_step: int, meta: dict | None, fingerprint: str) -> None:
  """Refuses to replay steps whose outputs are already out under another fingerprint."""
  path = os.path.join(workdir, "privacy.json")
  if meta is None or not os.path.exists(path):
    return
  with open(path) as f:
    released = int(json.load(f).get("released_through_step", start_step))
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


def _all_finite(metrics: dict) -> tuple[bool, str]:
  for name, value in metrics.items():
    if not np.all(np.isfinite(np.asarray(value))):
      return False, name
  return True, ""


@jax.jit
def _tree_all_finite(tree) -> jax.Array:
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def _tree_finite(tree) -> bool:
  return bool(_tree_all_finite(tree))


def _format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _progress_line(step, total_steps, steps_at_start, t_start, ledger, host) -> float:
  """Logs one progress line (metrics if given); returns the time it was printed."""
  now = time.time()
  rate = (step - steps_at_start) / max(now - t_start, 1e-9)
  privacy_text = (" | " + ledger.describe_epsilon().replace("epsilon", "eps", 1)
                  if ledger.private else "")
  metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(host.items())
                     if not k.startswith("privacy/"))
  get_logger().info("step %d/%d (%.1f%%) | %.2f steps/s | ETA %s%s%s", step, total_steps,
                    100.0 * step / total_steps, rate,
                    _format_eta((total_steps - step) / max(rate, 1e-9)), privacy_text,
                    f" | {metrics}" if metrics else "")
  return now


# Above this estimated wall time on a machine without an accelerator, the run warns and
# points to the config's `cpu` preset.
SLOW_RUN_WARNING_SECS = 2 * 3600.0


def _warn_if_slow(config, steps_done: int, seconds: float, steps_total: int) -> None:
  """After the first steps: the estimated wall time, and on a CPU-only machine running
  a long preset, the `:cpu` preset to use instead. (The first steps include compilation,
  so this overestimates a little.)"""
  if steps_done <= 0:
    return
  estimate = seconds / steps_done * steps_total
  log = get_logger()
  log.info("Estimated wall time for the %d steps of this run: %s (from the first %d).",
           steps_total, _format_eta(estimate), steps_done)
  if jax.default_backend() != "cpu" or estimate < SLOW_RUN_WARNING_SECS:
    return
  source = config.get("config_file") or "the config file"
  preset = config.get("preset") or "paper"
  hint = (f" Use {source}:cpu instead: the same target epsilon, scaled to about 30 minutes "
          f"on a 2-core CPU." if preset != "cpu" else "")
  log.warning("This run (%s preset) needs about %s on this machine, which has no GPU or "
              "TPU.%s", preset, _format_eta(estimate), hint)


def save_sample_grid(method, state, spec, step: int, workdir: str, seed: int, writer=None):
  if spec.kind != "image":
    return None
  per_class = 10
  labels = images.class_grid_labels(spec.num_classes, per_class)
  key = jax.random.fold_in(rng.make_key(seed, method.config.train.prng_impl), 0x6A1D)
  samples = np.asarray(method.sample(state, key, jnp.asarray(labels)))
  rows = len(labels) // per_class
  path = images.save_grid(os.path.join(workdir, "samples", f"step_{step:08d}.png"), samples,
                          rows=rows, cols=per_class, scale=2)
  if writer is not None:
    grid = images.image_grid(samples, rows, per_class)
    writer.write_images(step, {"samples": (grid[..., None] if grid.ndim == 2 else grid)[None]})
  return path


def train(config, workdir: str) -> dict:
  """Trains `config.method` in `workdir`; returns a summary (steps, epsilon, time)."""
  parallel.initialize_distributed(config.get("distributed"))
  method_mod, dataset, config, notes = prepare(config)
  from clu import metric_writers, periodic_actions  # imports TensorFlow: after the checks
  spec, num_train = dataset.spec, dataset.spec.num_train
  os.makedirs(workdir, exist_ok=True)
  _check_workdir_matches(workdir, config)
  total_steps = int(config.train.num_steps)
  event = privacy_plan.step_event(config, num_train, method_mod)

  checkpointer = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
  seed = int(config.train.seed)

  bound_event = privacy_plan.bound_step_event(config, num_train, method_mod)
  p = config.privacy

  def ledger_from(meta):
    if meta is None:
      ledger = privacy_plan.new_ledger(config, num_train, method_mod, notes)
      ledger.randomness = "public" if p.reproducible else "secret"
      return ledger
    ledger = PrivacyLedger.from_json(meta["ledger"])
    # A resumed run keeps the smaller of the stored budget and today's.
    ledger.tighten_budget(p.target_epsilon if p.enabled else None)
    return ledger

  def plan(ledger, start):
    return ledger.plan(event, max(0, total_steps - start), bound_event)

  # The budget check needs only the ledger: do it before building anything.
  latest = checkpointer.latest_step()
  try:
    latest_meta = checkpointer.restore_meta(latest) if latest is not None else None
  except Exception:  # a damaged checkpoint; restore_latest_valid below reports it
    latest_meta = None
  planned_eps = plan(ledger_from(latest_meta), latest or 0)

  # The secret root: restored with the checkpoints (exact replay), else a fresh one.
  root = restore_root(checkpointer, checkpointer.all_steps())
  if root is None:
    root = SecretRoot.for_run(seed, bool(p.reproducible))
  elif root.public != bool(p.reproducible):
    get_logger().warning(
        "privacy.reproducible = %s, but this run's checkpoints hold a %s root of randomness; "
        "it is kept so that the run resumes exactly.", p.reproducible,
        "public" if root.public else "secret")
  mesh = parallel.make_mesh()
  method = method_mod.build(config, spec, mesh)
  stage_summary = method.setup(workdir, dataset, root)
  if stage_summary is not None:  # the method ran a separate stage only (e.g. pretraining)
    checkpointer.close()
    get_logger().info("Done: %s", stage_summary)
    return stage_summary
  get_logger().info("Initialising %s on %s (%d train examples from %s) over %d device(s).",
                    config.method, spec.name, num_train, dataset.source, mesh.size)
  state = method.init(rng.make_key(seed, config.train.prng_impl))
  restored = checkpointer.restore_latest_valid(state)
  if restored is not None:
    start_step, state, meta = restored
    get_logger().info("Resumed from checkpoint %d (epsilon so far %s).", start_step,
                      meta["ledger"].get("epsilon"))
  else:
    start_step, meta = 0, None
  fingerprint = replay_fingerprint(config)
  check_replay(workdir, start_step, meta, fingerprint)
  ledger = ledger_from(meta)
  planned_eps = plan(ledger, start_step)
  meta = meta or {}
  # Replicated on the mesh, as the step's outputs are: the step then compiles once.
  state = jax.device_put(state, parallel.replicated(mesh))
  if start_step >= total_steps:
    get_logger().info("Checkpoint %d already reaches train.num_steps = %d; nothing to do.",
                      start_step, total_steps)

  q = method.sampling_rate()
  sampler = None
  if q is not None:
    sampler = PoissonSampler(num_train, q, lambda t: root.numpy_generator("poisson", t),
                             overflow_probability=config.data.poisson_overflow_probability,
                             multiple=method.padded_batch_multiple())
    ledger.info["sampling"] = sampler.describe()
  log_private = bool(config.train.log_private_metrics)
  if log_private and ledger.private:
    ledger.info["private_diagnostics"] = PRIVATE_DIAGNOSTICS_NOTE
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  if not ledger.private:
    get_logger().info("Privacy plan: non-private run.")
  else:
    planned = ledger.epsilon((event, max(0, total_steps - start_step)))
    shown = "null" if ledger.randomness == "public" else f"{planned:.4f}"
    caveat = ledger.caveat()
    extra = ""
    if bound_event is not None and ledger.randomness != "public":
      extra = "; bound for this algorithm " + ("none proven" if math.isinf(planned_eps)
                                              else f"{planned_eps:.4g}")
    get_logger().info("Privacy plan: epsilon %s at delta %g after %d steps (%s)%s%s", shown,
                      ledger.delta, total_steps, ledger.accountant,
                      f" [{caveat}]" if caveat else "", extra)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_secs=config.train.progress_every_secs)
  device_data = _device_data(dataset, mesh) if sampler is not None else None
  gather = make_gather(mesh)
  step_keys = StepKeys(root, config.train.prng_impl)
  overflows = int(meta.get("poisson_overflows", 0))
  public = frozenset(method.public_metrics)

  released = {"step": start_step, "checkpoint": start_step if restored else None}

  def mark_released(step):
    """Before any output of `step` (scalars, progress line, grid, checkpoint): privacy.json
    covers every step charged so far, so whatever is out is accounted for even if the run
    then dies and is never resumed."""
    released["step"] = max(released["step"], step)
    write_ledger_file(ledger, workdir, extra={"checkpoint_step": released["checkpoint"],
                                              "released_through_step": released["step"],
                                              "replay_fingerprint": fingerprint})

  def save(step, state):
    # Only the released part is checked: stopping on a hidden (private) value would
    # itself be an un-noised output. A non-finite hidden value reaches the released
    # generator through the mechanism within a step anyway.
    if not _tree_finite(method.released(state)):
      raise TrainingDiverged(
          f"Parameters became non-finite by step {step}; not saving. The last good checkpoint "
          f"is {checkpointer.latest_step()}. Try a lower learning rate.")
    ledger_json = ledger.to_json()
    mark_released(step)  # the eval job may read the checkpoint as soon as it exists
    checkpointer.save(step, state, {"ledger": ledger_json, "step": step,
                                    "poisson_overflows": overflows, "num_steps": total_steps,
                                    "replay_fingerprint": fingerprint},
                      secret=root.to_array())
    released["checkpoint"] = step
    mark_released(step)
    if ledger_json["epsilon"] is not None:
      writer.write_scalars(step, {"privacy/epsilon": ledger_json["epsilon"]})
    return ledger_json

  if restored is None and total_steps > 0:
    # Checkpoint 0 holds the secret root before any step: a crash before the first
    # regular checkpoint then also resumes with the same randomness (exact replay).
    save(0, state)
  step = start_step
  t_start, last_print, steps_at_start = time.time(), time.time(), start_step
  estimate_warned = False
  batch = None
  host = {}
  try:
    while step < total_steps:
      if sampler is not None:
        drawn = sampler.sample(step)
        if drawn.overflowed:  # a function of the (private) batch size: not logged
          overflows += 1
        batch = gather(device_data, drawn.indices, drawn.mask)
      rngs = step_keys(step)
      state, metrics = method.train_step(state, batch, rngs)
      ledger.charge(event, bound_event=bound_event)
      step += 1
      report(step)
      last = step == total_steps
      if step % config.train.log_every == 0 or last:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if sampler is not None:
          values["batch/real_size"] = float(drawn.size)  # the Poisson count: private
        host = split_metrics(values, public, private_run=ledger.private,
                             log_private=log_private)
        ok, bad = _all_finite({k: v for k, v in host.items()
                               if not k.startswith(PRIVATE_PREFIX)})
        if not ok:
          raise TrainingDiverged(
              f"{bad} became {host[bad]} at step {step}; stopping. The last good checkpoint is "
              f"{checkpointer.latest_step()} (kept). Try a lower learning rate.")
        mark_released(step)
        eps = ledger.reported_epsilon()
        if eps is not None:
          host["privacy/epsilon"] = eps
        writer.write_scalars(step, host)
        now = time.time()
        if now - last_print >= config.train.progress_every_secs or last or step == \
            start_step + config.train.log_every:
          last_print = _progress_line(step, total_steps, steps_at_start, t_start, ledger, host)
      elif time.time() - last_print >= min(60.0, config.train.progress_every_secs):
        # No metrics at this step (they are computed every log_every steps), but the user
        # hears from the run at least once a minute: rate, ETA and epsilon.
        last_print = _progress_line(step, total_steps, steps_at_start, t_start, ledger, {})
      if not estimate_warned and (step - steps_at_start >= 5 or last):
        estimate_warned = True
        _warn_if_slow(config, step - steps_at_start, time.time() - t_start,
                      total_steps - start_step)
      if step % config.train.sample_every == 0 or last:
        mark_released(step)
        save_sample_grid(method, state, spec, step, workdir, seed, writer)
      if step % config.train.checkpoint_every == 0 or last:
        save(step, state)
    if start_step >= total_steps:  # e.g. a finished run that died after its last save
      mark_released(start_step)
  finally:
    writer.flush()
    checkpointer.close()

  summary = dict(steps=ledger.steps, epsilon=ledger.reported_epsilon(),
                 delta=ledger.delta if ledger.private else None,
                 wall_time_s=time.time() - t_start)
  if not ledger.private or log_private:  # the overflow count depends on batch sizes
    summary["poisson_overflows" if not ledger.private else "private/poisson_overflows"] = \
        overflows
  if ledger.private and ledger.caveat():
    summary["epsilon_caveat"] = ledger.caveat()
  if ledger.private and ledger.has_bound:
    summary["epsilon_bound"] = ledger.to_json().get("epsilon_bound")
  get_logger().info("Done: %s", summary)
  return summary
