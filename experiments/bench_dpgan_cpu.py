"""Seconds per DP-GAN D step (G steps amortised) for candidate CPU sizes.

    python experiments/bench_dpgan_cpu.py --config configs/mnist_eps10.py:cpu \
        --set dpgan.d_width=32 --set train.batch_size=1024 --cycles 4

Builds the method exactly as training does (same padded Poisson batch size, the
config's clipping strategy), feeds random images of the data's shape (the cost does
not depend on pixel values), compiles, then times `--cycles` full n_D cycles
(n_D D steps + one G step each) and reports seconds per D step, per cycle, and the
estimated wall time of the config's train.num_steps. Process CPU time is reported
too: CPU-s / wall-s shows how many cores XLA kept busy.
"""

import argparse
import ast
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dpgen_jax import parallel, rng  # noqa: E402
from dpgen_jax.config_file import load_config_file  # noqa: E402
from dpgen_jax.data.dataset import DataSpec  # noqa: E402
from dpgen_jax.data.sampling import padded_batch_size  # noqa: E402
from dpgen_jax import methods  # noqa: E402


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--set", action="append", default=[], help="section.key=value")
  parser.add_argument("--cycles", type=int, default=3)
  parser.add_argument("--num-train", type=int, default=60_000)
  args = parser.parse_args(argv)
  config = load_config_file(args.config)
  for item in args.set:
    dotted, _, value = item.partition("=")
    section, key = dotted.split(".")
    config[section][key] = _parse_value(value)
  if config.privacy.enabled and config.privacy.noise_multiplier is None:
    config.privacy.noise_multiplier = 1.0  # the cost does not depend on sigma
  spec = DataSpec("mnist", "image", (28, 28, 1), 10, args.num_train, 10_000)
  mesh = parallel.make_mesh()
  method = methods.build(config, spec, mesh)
  padded = padded_batch_size(args.num_train, method.sampling_rate(),
                             overflow_probability=config.data.poisson_overflow_probability,
                             multiple=method.padded_batch_multiple())
  data = np.random.default_rng(0)
  expected = int(round(method.sampling_rate() * args.num_train))
  batch = {"x": jnp.asarray(data.uniform(size=(padded, 28, 28, 1)), jnp.float32),
           "y": jnp.asarray(data.integers(0, 10, padded), jnp.int32),
           "mask": jnp.asarray(np.arange(padded) < expected)}
  state = method.init(rng.make_key(0))
  n_d = int(config.dpgan.d_steps_per_g_step)

  def keys(step):
    k = jax.random.fold_in(rng.make_key(1), step)
    return {"model": jax.random.fold_in(k, 0), "noise": jax.random.fold_in(k, 1)}

  t0 = time.time()
  for step in range(n_d):  # one full cycle: compiles and runs both branches
    state, metrics = method.train_step(state, batch, keys(step))
  jax.block_until_ready(metrics)
  compile_s = time.time() - t0
  steps = n_d * args.cycles
  t0, c0 = time.time(), time.process_time()
  for step in range(steps):
    state, metrics = method.train_step(state, batch, keys(n_d + step))
  jax.block_until_ready(metrics)
  wall, cpu = time.time() - t0, time.process_time() - c0
  total = int(config.train.num_steps)
  row = dict(config=args.config, overrides=args.set, padded_batch=padded,
             expected_real=expected, fakes=method.num_fakes, n_d=n_d,
             private=bool(config.privacy.enabled),
             strategy=config.privacy.clipping_strategy,
             compile_and_first_cycle_s=round(compile_s, 1),
             s_per_d_step=round(wall / steps, 4), s_per_cycle=round(wall * n_d / steps, 3),
             cpu_over_wall=round(cpu / wall, 2),
             est_min_for_num_steps=round(total * wall / steps / 60, 1), num_steps=total,
             load=[round(v, 2) for v in os.getloadavg()],
             cores=len(os.sched_getaffinity(0)))
  print(json.dumps(row))
  return 0


if __name__ == "__main__":
  sys.exit(main())
