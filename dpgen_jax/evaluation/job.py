"""The evaluation job: `python main.py --config=C --workdir=W --mode=eval`.

Runs beside (or after) training as its own process. It watches WORKDIR/checkpoints,
evaluates every checkpoint once (or only eval.checkpoint), and stops when the final
checkpoint of the run (train.num_steps, as recorded by training) is evaluated, or
after eval.idle_timeout_secs without a new checkpoint. For each checkpoint it

  1. generates eval.num_samples samples from the released generator (labels uniform
     at random, or balanced; images quantised to multiples of 1/255 as upstream);
  2. computes eval.metrics (see evaluation/metrics.py);
  3. appends one JSON line to WORKDIR/eval/metrics.jsonl with the step, the epsilon
     and delta of the checkpoint's ledger and every metric, and writes the metrics to
     TensorBoard (WORKDIR/eval, tag eval/<metric>);
  4. optionally exports WORKDIR/eval/gen_data_<step>.npz (data_x, data_y: the format
     GS-WGAN's evaluation scripts read), a PNG grid, and for tabular data
     WORKDIR/eval/gen_table_<step>.csv and .npz (eval.export_csv; data/tabular.py).

A checkpoint that cannot be restored is reported and skipped, never fatal.
"""

import json
import os
import time

import jax
import numpy as np

from dpgen_jax import errors, images
from dpgen_jax.evaluation import metrics as metrics_lib, metrics_log
from dpgen_jax.evaluation.synthetic import generate
from dpgen_jax.log import get_logger
from dpgen_jax.run_folder import RunFolder, open_trained

# The quick protocol (monitoring, sweeps): fewer samples and classifier epochs, its own
# file, so a checkpoint scored quickly is still scored in full by a later full job.
PROTOCOLS = ("full", "quick")
# The LeNet of fid_lenet is the full protocol's (trained once, cached): FIDs of both
# protocols use the same features, the quick one on fewer samples.
QUICK = {"num_samples": 10_000, "cnn_epochs": 3, "max_epochs": 30}


def apply_protocol(eval_config) -> None:
  """eval.protocol = 'quick': at most QUICK's samples and epochs (a copy of the
  reported 'full' protocol's code path, just smaller); 'full' changes nothing."""
  errors.require(eval_config.get("protocol", "full") in PROTOCOLS,
                 f"eval.protocol must be one of {PROTOCOLS}, got {eval_config.get('protocol')!r}.")
  if eval_config.get("protocol", "full") != "quick":
    return
  eval_config.num_samples = min(int(eval_config.num_samples), QUICK["num_samples"])
  eval_config.cnn_epochs = min(int(eval_config.cnn_epochs), QUICK["cnn_epochs"])
  eval_config.max_epochs = min(int(eval_config.max_epochs or QUICK["max_epochs"]),
                               QUICK["max_epochs"])


def evaluated_steps(workdir: str, protocol: str = "full") -> set[int]:
  return {int(r["step"]) for r in metrics_log.read_rows(workdir, protocol) if "step" in r}


def _validate(config, workdir: str, kind: str) -> None:
  e = config.eval
  errors.require(e.num_samples > 0, f"eval.num_samples must be positive, got {e.num_samples}.")
  errors.require(len(e.seeds) > 0, "eval.seeds must name at least one seed.")
  metrics_lib.validate_metrics(tuple(e.metrics), kind, e)
  check_workdir(config, workdir)


def check_workdir(config, workdir: str) -> None:
  """The workdir exists and was trained with this config's method and dataset."""
  run = RunFolder(workdir)
  run.require_exists()
  run.check_config(config)


class Evaluator:
  """Evaluates the checkpoints of one workdir (used by the job and by scripts)."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    apply_protocol(config.eval)
    self.protocol = config.eval.get("protocol", "full")
    self.metrics_file = metrics_log.metrics_file(self.protocol)
    from dpgen_jax.data import registry
    _validate(config, workdir, registry.dataset_info(config.data.name).kind)
    self.folder, self.method, self.dataset, self.abstract = open_trained(config, workdir)
    self.ctx = metrics_lib.EvalContext(self.dataset, config.eval)
    self.checkpointer = self.folder.checkpointer(read_only=True)
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    self._writer = None

  def writer(self):
    if self._writer is None:
      from clu import metric_writers  # imports TensorFlow
      self._writer = metric_writers.create_default_writer(
          os.path.join(self.workdir, "eval"), just_logging=jax.process_index() > 0)
    return self._writer

  def evaluate_step(self, step: int) -> dict | None:
    """Evaluates checkpoint `step`; returns the JSON record (None if unreadable)."""
    log = get_logger()
    e = self.config.eval
    try:
      state, meta = self.checkpointer.restore(step, self.abstract)
    except Exception as exc:  # a damaged or vanished checkpoint must not end the job
      log.warning("Checkpoint %d cannot be restored (%s: %s); skipping it.", step,
                  type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
      return None
    t0 = time.time()
    ledger = meta.get("ledger", {})
    caveat = ledger.get("epsilon_caveat")  # e.g. CSL-GAN's 'is': "approximate, not formally DP"
    log.info("Evaluating checkpoint %d (epsilon %s%s): generating %d samples.", step,
             ledger.get("epsilon"), f" [{caveat}]" if caveat else "", e.num_samples)
    gen_x, gen_y = generate(self.method, state, int(e.num_samples), self.dataset.num_classes,
                            seed=int(self.config.train.seed), batch_size=int(e.batch_size),
                            labels=e.labels, quantize=bool(e.quantize) and
                            self.dataset.kind == "image", prng_impl=self.config.train.prng_impl)
    if e.get("threshold_background", False):
      from dpgen_jax.evaluation.postprocessing import threshold_background
      gen_x = np.asarray(threshold_background(gen_x))
    record = {"step": int(step), "epsilon": ledger.get("epsilon"),
              "delta": ledger.get("delta"), "private": ledger.get("private"),
              "num_samples": int(e.num_samples), "labels": e.labels, "protocol": self.protocol}
    if caveat:
      record["epsilon_caveat"] = caveat
    if "train_wall_time_s" in meta:  # training time up to this checkpoint
      record["train_wall_time_s"] = float(meta["train_wall_time_s"])
    trained_on_private = [m for m in e.metrics if m in metrics_lib.USES_PRIVATE_MODEL]
    if trained_on_private:  # the LeNet behind these is trained on the private split
      record["not_covered_by_epsilon"] = trained_on_private
    if "epsilon_bound" in ledger:  # the shown epsilon is not a bound (GS-WGAN 'upstream')
      record["epsilon_bound"] = ledger["epsilon_bound"]
    for name in e.metrics:
      t = time.time()
      values = metrics_lib.compute(name, self.ctx, gen_x, gen_y)
      record.update(values)
      log.info("  %s = %s (%.1f s)", name, ", ".join(f"{k}={v:.4f}" for k, v in values.items()),
               time.time() - t)
    record["eval_time_s"] = time.time() - t0
    if e.export_npz:
      path = os.path.join(self.workdir, "eval", f"gen_data_{step}.npz")
      np.savez_compressed(path, data_x=gen_x, data_y=gen_y)
      record["gen_data"] = path
    if e.get("export_csv", False) and self.dataset.kind == "tabular":
      from dpgen_jax.data import tabular
      schema = tabular.schema_for(self.dataset.name, int(np.prod(gen_x.shape[1:])))
      record["gen_table"] = tabular.write_table(
          os.path.join(self.workdir, "eval", f"gen_table_{step}"), gen_x, gen_y, schema)["csv"]
    if e.export_grid and self.dataset.kind == "image":
      per = 10
      order = np.concatenate([np.flatnonzero(gen_y == k)[:per]
                              for k in range(min(self.dataset.num_classes, 10))])
      images.save_grid(os.path.join(self.workdir, "eval", f"samples_{step}.png"),
                       gen_x[order], rows=-(-len(order) // per), cols=per, scale=2)
    scalars = {f"eval/{k}": v for k, v in record.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
    self.writer().write_scalars(int(step), scalars)
    self.writer().flush()
    with open(os.path.join(self.workdir, self.metrics_file), "a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")
    return record

  def final_step(self) -> int:
    return int(self.config.train.num_steps)

  def run(self) -> list[dict]:
    """Watches the workdir until the final checkpoint is evaluated (or idle timeout)."""
    log = get_logger()
    e = self.config.eval
    done = evaluated_steps(self.workdir, self.protocol)
    failed: set[int] = set()
    records = []
    only = e.get("checkpoint")
    last_activity = time.time()
    while True:
      available = self.checkpointer.all_steps()
      if only is not None:
        todo = [only] if only in available and only not in done else []
        if only in done:
          log.info("Checkpoint %d is already in %s.", only, self.metrics_file)
          return records
      else:  # checkpoint 0 (the untrained state, kept for exact replay) only on request
        todo = [s for s in available if s not in done and s not in failed and s > 0]
      for step in todo:
        record = self.evaluate_step(step)
        (failed if record is None else done).add(step)
        if record is not None:
          records.append(record)
        last_activity = time.time()
      if only is not None and (only in done or only in failed):
        return records
      final = self._final_step_from_checkpoints(available)
      if final is not None and final in done | failed:
        log.info("The final checkpoint (%d) is evaluated; results in %s.", final,
                 os.path.join(self.workdir, self.metrics_file))
        return records
      if time.time() - last_activity > float(e.idle_timeout_secs):
        log.info("No new checkpoint for %.0f s; stopping (eval.idle_timeout_secs).",
                 float(e.idle_timeout_secs))
        return records
      time.sleep(float(e.poll_secs))

  def _final_step_from_checkpoints(self, available: list[int]) -> int | None:
    """The run's last step if its checkpoint exists (from the checkpoint's metadata)."""
    if not available:
      return None
    newest = available[-1]
    try:
      planned = int(self.checkpointer.restore_meta(newest).get("num_steps", -1))
    except Exception:
      planned = self.final_step()
    return newest if newest >= planned else None


def evaluate_workdir(config, workdir: str) -> list[dict]:
  return Evaluator(config, workdir).run()
