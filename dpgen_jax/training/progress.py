"""Logging during training: which metrics are written, progress lines, time estimates.

By default a private run writes only what the method declares public
(`Method.public_metrics`) and epsilon; `train.log_private_metrics` adds the rest under
'private/' (privacy.json then says so). A progress line (rate, ETA, epsilon) appears at
least once a minute, and after the first steps an estimate of the wall time, with a
pointer to the config's `:cpu` preset when a long run has no accelerator.
"""

import math
import time

import jax
import numpy as np

from dpgen_jax.log import get_logger

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


def all_finite(metrics: dict) -> tuple[bool, str]:
  for name, value in metrics.items():
    if not np.all(np.isfinite(np.asarray(value))):
      return False, name
  return True, ""


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step, total_steps, steps_at_start, t_start, ledger, host) -> float:
  """Logs one progress line (metrics if given); returns the time it was printed."""
  now = time.time()
  rate = (step - steps_at_start) / max(now - t_start, 1e-9)
  privacy_text = (" | " + ledger.describe_epsilon().replace("epsilon", "eps", 1)
                  if ledger.private else "")
  metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(host.items())
                     if not k.startswith("privacy/"))
  get_logger().info("step %d/%d (%.1f%%) | %.2f steps/s | ETA %s%s%s", step, total_steps,
                    100.0 * step / total_steps, rate,
                    format_eta((total_steps - step) / max(rate, 1e-9)), privacy_text,
                    f" | {metrics}" if metrics else "")
  return now


# Above this estimated wall time on a machine without an accelerator, the run warns and
# points to the config's `cpu` preset.
SLOW_RUN_WARNING_SECS = 2 * 3600.0


def warn_if_slow(config, steps_done: int, seconds: float, steps_total: int,
                 first_step_seconds: float = 0.0) -> None:
  """After the first steps: the estimated wall time, and on a CPU-only machine running
  a long preset, the `:cpu` preset to use instead. The first step (`first_step_seconds`
  of the `seconds`) includes compilation, so the rate comes from the steps after it: the
  estimate is the first step plus the remaining steps at that rate (without
  `first_step_seconds`, the mean over all `steps_done`)."""
  if steps_done <= 0:
    return
  if steps_done > 1 and first_step_seconds > 0:
    rate_s = (seconds - first_step_seconds) / (steps_done - 1)
    estimate = first_step_seconds + rate_s * (steps_total - 1)
  else:
    estimate = seconds / steps_done * steps_total
  log = get_logger()
  log.info("Estimated wall time for the %d steps of this run: %s (from the first %d).",
           steps_total, format_eta(estimate), steps_done)
  if jax.default_backend() != "cpu" or estimate < SLOW_RUN_WARNING_SECS:
    return
  source = config.get("config_file") or "the config file"
  preset = config.get("preset") or "paper"
  hint = (f" Use {source}:cpu instead: the same target epsilon, scaled to about 30 minutes "
          f"on a 2-core CPU." if preset != "cpu" else "")
  log.warning("This run (%s preset) needs about %s on this machine, which has no GPU or "
              "TPU.%s", preset, format_eta(estimate), hint)
