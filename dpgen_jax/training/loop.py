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

Resumption is exact: the batch, model key and noise key of step t depend only on
(seed, t) (the noise root is OS entropy unless privacy.reproducible_noise), and all
other state is in the checkpoint.
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
from dpgen_jax.privacy import noise
from dpgen_jax.privacy import plan as privacy_plan
from dpgen_jax.privacy.ledger import PrivacyLedger, write_ledger_file
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


@jax.jit
def _step_keys(model_base, noise_base, step):
  return {"model": jax.random.fold_in(model_base, step),
          "noise": jax.random.fold_in(noise_base, step)}


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

  def ledger_from(meta):
    if meta is None:
      return privacy_plan.new_ledger(config, num_train, method_mod, notes)
    return PrivacyLedger.from_json(meta["ledger"])

  def plan(ledger, start):
    return ledger.plan(event, max(0, total_steps - start))

  # The budget check needs only the ledger: do it before building anything.
  latest = checkpointer.latest_step()
  try:
    latest_meta = checkpointer.restore_meta(latest) if latest is not None else None
  except Exception:  # a damaged checkpoint; restore_latest_valid below reports it
    latest_meta = None
  planned_eps = plan(ledger_from(latest_meta), latest or 0)

  mesh = parallel.make_mesh()
  method = method_mod.build(config, spec, mesh)
  stage_summary = method.setup(workdir, dataset)
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
    sampler = PoissonSampler(num_train, q, seed,
                             overflow_probability=config.data.poisson_overflow_probability,
                             multiple=method.padded_batch_multiple())
    ledger.info["sampling"] = sampler.describe()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  caveat = ledger.info.get("epsilon_caveat")  # e.g. "approximate, not formally DP"
  caveat_text = f" [{caveat}]" if caveat else ""
  get_logger().info("Privacy plan: %s", "non-private run" if not ledger.private else
               f"epsilon {planned_eps:.4f} at delta {ledger.delta:g} after {total_steps} steps "
               f"({ledger.accountant}){caveat_text}")

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_secs=config.train.progress_every_secs)
  device_data = _device_data(dataset, mesh) if sampler is not None else None
  gather = make_gather(mesh)
  model_base = jax.random.fold_in(rng.make_key(seed, config.train.prng_impl), 0x3E1)
  noise_base = noise.noise_base_key(seed, reproducible=config.privacy.reproducible_noise,
                                    impl=config.train.prng_impl)
  overflows = int(meta.get("poisson_overflows", 0))

  def save(step, state):
    if not _tree_finite(state):
      raise TrainingDiverged(
          f"Parameters became non-finite by step {step}; not saving. The last good checkpoint "
          f"is {checkpointer.latest_step()}. Try a lower learning rate.")
    ledger_json = ledger.to_json()
    checkpointer.save(step, state, {"ledger": ledger_json, "step": step,
                                    "poisson_overflows": overflows,
                                    "num_steps": total_steps})
    write_ledger_file(ledger, workdir, extra={"checkpoint_step": step})
    if ledger_json["epsilon"] is not None:
      writer.write_scalars(step, {"privacy/epsilon": ledger_json["epsilon"]})
    return ledger_json

  step = start_step
  t_start, last_print, steps_at_start = time.time(), 0.0, start_step
  batch = None
  try:
    while step < total_steps:
      if sampler is not None:
        drawn = sampler.sample(step)
        if drawn.overflowed:
          overflows += 1
          get_logger().warning("Step %d: Poisson batch of %d exceeds the padded size %d; growing the "
                          "batch for this step (exact, one recompilation).", step, drawn.size,
                          sampler.padded_size)
        batch = gather(device_data, drawn.indices, drawn.mask)
      rngs = _step_keys(model_base, noise_base, step)
      state, metrics = method.train_step(state, batch, rngs)
      ledger.charge(event)
      step += 1
      report(step)
      last = step == total_steps
      if step % config.train.log_every == 0 or last:
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        ok, bad = _all_finite(host)
        if not ok:
          raise TrainingDiverged(
              f"{bad} became {host[bad]} at step {step}; stopping. The last good checkpoint is "
              f"{checkpointer.latest_step()} (kept). Try a lower learning rate.")
        if sampler is not None:
          host["batch/real_size"] = float(drawn.size)
        if ledger.private and ledger.accountant == "rdp":
          host["privacy/epsilon"] = ledger.epsilon()
        writer.write_scalars(step, host)
        now = time.time()
        if now - last_print >= config.train.progress_every_secs or last or step == \
            start_step + config.train.log_every:
          rate = (step - steps_at_start) / max(now - t_start, 1e-9)
          eps = host.get("privacy/epsilon")
          get_logger().info("step %d/%d (%.1f%%) | %.2f steps/s | ETA %s%s | %s", step, total_steps,
                       100.0 * step / total_steps, rate,
                       _format_eta((total_steps - step) / max(rate, 1e-9)),
                       f" | eps {eps:.3f}{caveat_text}" if eps is not None else "",
                       " ".join(f"{k}={v:.4g}" for k, v in sorted(host.items())
                                if not k.startswith(("privacy/", "batch/"))))
          last_print = now
      if step % config.train.sample_every == 0 or last:
        save_sample_grid(method, state, spec, step, workdir, seed, writer)
      if step % config.train.checkpoint_every == 0 or last:
        save(step, state)
    if start_step >= total_steps and not os.path.exists(os.path.join(workdir, "privacy.json")):
      write_ledger_file(ledger, workdir, extra={"checkpoint_step": start_step})
  finally:
    writer.flush()
    checkpointer.close()

  eps = ledger.epsilon()
  summary = dict(steps=ledger.steps, epsilon=None if math.isinf(eps) else eps,
                 delta=ledger.delta if ledger.private else None,
                 wall_time_s=time.time() - t_start, poisson_overflows=overflows)
  if caveat and ledger.private:
    summary["epsilon_caveat"] = caveat
  get_logger().info("Done: %s", summary)
  return summary
