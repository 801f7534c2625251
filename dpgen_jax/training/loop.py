"""The generic training loop: any method, its stages, Poisson batches, the ledger,
checkpoints, logs.

    train(config, workdir)

1. checks the config, loads the data and resolves the privacy plan once (planning.py);
   a run whose planned steps exceed privacy.target_epsilon is refused before any compute;
2. restores the secret root and the newest readable checkpoint (state + ledger) from the
   run folder, or starts fresh (checkpoint 0 holds the root before any step), and checks
   that a resume replays the same computation, before anything is computed;
3. runs the method's stages (training/stages.py), then `method.prepare`;
4. runs `method.train_step` once per accounted step, on a padded Poisson batch when the
   method reads them, charging the ledger for every step;
5. writes TensorBoard scalars and progress lines (training/progress.py), PNG sample
   grids, Orbax checkpoints and privacy.json (before every output).

Secret randomness (privacy/randomness.py): the batch, the model key and the noise key
of step t are functions of (secret root, t), and the root is in every checkpoint, so a
resumed run, even one that falls back to an older checkpoint after a crash, replays
exactly the steps the first attempt took (training/replay.py refuses a resume that
would replay released steps under another computation).
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax import errors, images, parallel, planning, rng
from dpgen_jax.data import PoissonSampler, load_dataset
from dpgen_jax.log import get_logger
from dpgen_jax.methods import get_definition
from dpgen_jax.privacy.ledger import PrivacyLedger
from dpgen_jax.privacy.randomness import SecretRoot, StepKeys
from dpgen_jax.run_folder import RunFolder
from dpgen_jax.training import progress, replay, stages as stages_lib


class TrainingDiverged(errors.UserError):
  """A loss or parameter became NaN/inf; the last good checkpoint is kept."""


def prepare(config):
  """Config checks, data, and the resolved privacy plan: everything before compute.

  Returns (method definition, dataset, plan, resolved config).
  """
  get_definition(config.method)  # unknown names and common mistakes fail before the data
  planning.check_common(config)
  dataset = load_dataset(config.data)
  definition, plan, config = planning.plan_for(config, dataset.spec)
  return definition, dataset, plan, config


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


@jax.jit
def _tree_all_finite(tree) -> jax.Array:
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def save_sample_grid(method, state, spec, step: int, run: RunFolder, seed: int, writer=None):
  """A grid of samples of the released generator (one row per class), latents from the
  public seed."""
  if spec.kind != "image":
    return None
  per_class = 10
  labels = images.class_grid_labels(spec.num_classes, per_class)
  key = jax.random.fold_in(rng.make_key(seed, method.config.train.prng_impl), 0x6A1D)
  samples = np.asarray(method.sample(state, key, jnp.asarray(labels)))
  rows = len(labels) // per_class
  path = images.save_grid(run.sample_grid(step), samples, rows=rows, cols=per_class, scale=2)
  if writer is not None:
    grid = images.image_grid(samples, rows, per_class)
    writer.write_images(step, {"samples": (grid[..., None] if grid.ndim == 2 else grid)[None]})
  return path


def _ledger_from(plan, meta) -> PrivacyLedger:
  if meta is None:
    return plan.new_ledger()
  ledger = PrivacyLedger.from_json(meta["ledger"])
  ledger.tighten_budget(plan.target_epsilon)  # a resumed run keeps the smaller budget
  return ledger


def _log_plan(ledger, plan, total_steps: int, start_step: int, planned_bound: float) -> None:
  log = get_logger()
  if not ledger.private:
    log.info("Privacy plan: non-private run.")
    return
  planned = ledger.epsilon((plan.step_event, max(0, total_steps - start_step)))
  shown = "null" if ledger.randomness == "public" else f"{planned:.4f}"
  caveat = ledger.caveat()
  extra = ""
  if plan.bound_event is not None and ledger.randomness != "public":
    extra = "; bound for this algorithm " + ("none proven" if np.isinf(planned_bound)
                                            else f"{planned_bound:.4g}")
  log.info("Privacy plan: epsilon %s at delta %g after %d steps (%s)%s%s", shown, ledger.delta,
           total_steps, ledger.accountant, f" [{caveat}]" if caveat else "", extra)


def train(config, workdir: str) -> dict:
  """Trains `config.method` in `workdir`; returns a summary (steps, epsilon, time)."""
  session_start = time.time()
  parallel.initialize_distributed(config.get("distributed"))
  definition, dataset, plan, config = prepare(config)
  from clu import metric_writers, periodic_actions  # imports TensorFlow: after the checks
  spec = dataset.spec
  run = RunFolder(workdir)
  run.check_config(config)
  total_steps, seed = plan.steps, int(config.train.seed)
  checkpointer = run.checkpointer(max_to_keep=config.train.keep_checkpoints)

  def check_budget(ledger, start):
    return ledger.plan(plan.step_event, max(0, total_steps - start), plan.bound_event)

  # The budget check needs only the ledger: do it before building anything.
  latest = checkpointer.latest_step()
  try:
    latest_meta = checkpointer.restore_meta(latest) if latest is not None else None
  except Exception:  # a damaged checkpoint; restore_latest_valid below reports it
    latest_meta = None
  check_budget(_ledger_from(plan, latest_meta), latest or 0)

  # The secret root: restored with the checkpoints (exact replay), else a fresh one.
  root = replay.restore_root(checkpointer, checkpointer.all_steps())
  if root is None:
    root = SecretRoot.for_run(seed, plan.reproducible)
  elif root.public != plan.reproducible:
    get_logger().warning(
        "privacy.reproducible = %s, but this run's checkpoints hold a %s root of randomness; "
        "it is kept so that the run resumes exactly.", plan.reproducible,
        "public" if root.public else "secret")
  mesh = parallel.make_mesh()
  method = definition.build(plan, config, spec, mesh)
  state = method.init(rng.make_key(seed, config.train.prng_impl))
  restored = checkpointer.restore_latest_valid(state)
  if restored is not None:
    start_step, state, meta = restored
    get_logger().info("Resumed from checkpoint %d (epsilon so far %s).", start_step,
                      meta["ledger"].get("epsilon"))
  else:
    start_step, meta = 0, None
  # Before anything is computed (stages included): a resume must replay the same
  # computation.
  fingerprint = replay.replay_fingerprint(config)
  replay.check_replay(run, start_step, meta, fingerprint)
  run.write_config(config)
  run.write_plan(plan)
  stage_summary = stages_lib.run_stages(method.stages(run, dataset, root), run)
  if method.stop_after_stages:  # a stage-only run (e.g. GS-WGAN pretraining alone)
    checkpointer.close()
    summary = dict(stages=stage_summary)
    get_logger().info("Done: %s", summary)
    return summary
  method.prepare(run, dataset, root)
  get_logger().info("Initialising %s on %s (%d train examples from %s) over %d device(s).",
                    config.method, spec.name, spec.num_train, dataset.source, mesh.size)
  if restored is None:
    state = method.start(state)
  ledger = _ledger_from(plan, meta)
  planned_bound = check_budget(ledger, start_step)
  meta = meta or {}
  # Replicated on the mesh, as the step's outputs are: the step then compiles once.
  state = jax.device_put(state, parallel.replicated(mesh))
  if start_step >= total_steps:
    get_logger().info("Checkpoint %d already reaches train.num_steps = %d; nothing to do.",
                      start_step, total_steps)

  sampler = None
  if method.data_use == "poisson":
    sampler = PoissonSampler(spec.num_train, plan.sampling_rate,
                             lambda t: root.numpy_generator("poisson", t),
                             overflow_probability=config.data.poisson_overflow_probability,
                             multiple=method.padded_batch_multiple())
    ledger.info["sampling"] = sampler.describe()
  log_private = bool(config.train.log_private_metrics)
  if log_private and ledger.private:
    ledger.info["private_diagnostics"] = progress.PRIVATE_DIAGNOSTICS_NOTE
  _log_plan(ledger, plan, total_steps, start_step, planned_bound)

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
    run.write_ledger(ledger, extra={"checkpoint_step": released["checkpoint"],
                                    "released_through_step": released["step"],
                                    "replay_fingerprint": fingerprint})

  # Wall time of `train` up to a checkpoint (data loading, compilation and stages
  # included), summed over every session of the run; eval rows carry it, for
  # accuracy-against-time curves.
  time_before_session = float(meta.get("train_wall_time_s", 0.0))

  def train_clock() -> float:
    return time_before_session + time.time() - session_start

  def save(step, state):
    # Only the released part is checked: stopping on a hidden (private) value would
    # itself be an un-noised output. A non-finite hidden value reaches the released
    # generator through the mechanism within a step anyway.
    if not bool(_tree_all_finite(method.released(state))):
      raise TrainingDiverged(
          f"Parameters became non-finite by step {step}; not saving. The last good checkpoint "
          f"is {checkpointer.latest_step()}. Try a lower learning rate.")
    ledger_json = ledger.to_json()
    mark_released(step)  # the eval job may read the checkpoint as soon as it exists
    checkpointer.save(step, state, {"ledger": ledger_json, "step": step,
                                    "poisson_overflows": overflows, "num_steps": total_steps,
                                    "replay_fingerprint": fingerprint,
                                    "train_wall_time_s": train_clock()},
                      secret=root.to_array())
    released["checkpoint"] = step
    mark_released(step)
    if ledger_json["epsilon"] is not None:
      writer.write_scalars(step, {"privacy/epsilon": ledger_json["epsilon"]})

  if restored is None and total_steps > 0:
    # Checkpoint 0 holds the secret root before any step: a crash before the first
    # regular checkpoint then also resumes with the same randomness (exact replay).
    save(0, state)
  step = start_step
  t_start, last_print, steps_at_start = time.time(), time.time(), start_step
  estimate_warned, batch, first_step_s = False, None, 0.0
  try:
    while step < total_steps:
      if sampler is not None:
        drawn = sampler.sample(step)
        if drawn.overflowed:  # a function of the (private) batch size: not logged
          overflows += 1
        batch = gather(device_data, drawn.indices, drawn.mask)
      state, metrics = method.train_step(state, batch, step_keys(step))
      ledger.charge(plan.step_event, bound_event=plan.bound_event)
      step += 1
      if step == steps_at_start + 1:
        jax.block_until_ready(state)
        first_step_s = time.time() - t_start  # includes compilation
      report(step)
      last = step == total_steps
      if step % config.train.log_every == 0 or last:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if sampler is not None:
          values["batch/real_size"] = float(drawn.size)  # the Poisson count: private
        host = progress.split_metrics(values, public, private_run=ledger.private,
                                      log_private=log_private)
        ok, bad = progress.all_finite({k: v for k, v in host.items()
                                       if not k.startswith(progress.PRIVATE_PREFIX)})
        if not ok:
          raise TrainingDiverged(
              f"{bad} became {host[bad]} at step {step}; stopping. The last good checkpoint is "
              f"{checkpointer.latest_step()} (kept). Try a lower learning rate.")
        mark_released(step)
        eps = ledger.reported_epsilon()
        if eps is not None:
          host["privacy/epsilon"] = eps
        writer.write_scalars(step, host)
        if time.time() - last_print >= config.train.progress_every_secs or last or step == \
            start_step + config.train.log_every:
          last_print = progress.progress_line(step, total_steps, steps_at_start, t_start,
                                              ledger, host)
      elif time.time() - last_print >= min(60.0, config.train.progress_every_secs):
        # No metrics at this step (they are computed every log_every steps), but the user
        # hears from the run at least once a minute: rate, ETA and epsilon.
        last_print = progress.progress_line(step, total_steps, steps_at_start, t_start,
                                            ledger, {})
      if not estimate_warned and (step - steps_at_start >= 5 or last):
        estimate_warned = True
        jax.block_until_ready(state)
        progress.warn_if_slow(config, step - steps_at_start, time.time() - t_start,
                              total_steps - start_step, first_step_s)
      if step % config.train.sample_every == 0 or last:
        mark_released(step)
        save_sample_grid(method, state, spec, step, run, seed, writer)
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
  if stage_summary:
    summary["stages"] = stage_summary
  if not ledger.private or log_private:  # the overflow count depends on batch sizes
    summary["poisson_overflows" if not ledger.private else "private/poisson_overflows"] = \
        overflows
  if ledger.private and ledger.caveat():
    summary["epsilon_caveat"] = ledger.caveat()
  if ledger.private and ledger.has_bound:
    summary["epsilon_bound"] = ledger.to_json().get("epsilon_bound")
  get_logger().info("Done: %s", summary)
  return summary
