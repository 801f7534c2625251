"""GS-WGAN: the cost of the critic selections and schedules, side by side.

    python experiments/bench_gswgan_selection.py [--preset cpu|paper] [--steps 20]
        [--critic-chunk 1 ...]

Builds GS-WGAN from configs/gswgan_mnist_eps10.py with randomly initialised (not
pretrained) discriminators on random 28x28 data (the cost does not depend on the values),
times `train_step` (one generator iteration) after compilation for upstream's algorithm
(selection 'per_step', schedule 'drawn': one critic drawn, trained and used for all B
rows), the library's default (selection 'per_row', schedule 'round_robin': one critic
trained per step in a public order, B drawn critics applied, one per row) and per-row
selection with every drawn critic trained (schedule 'drawn': B critics trained per step),
each with every --critic-chunk (lax.map batch: 1 = one critic after another, larger =
vmapped), and prints seconds per iteration and the ratio to upstream's, interleaving
the runs so that all see the same machine load.
"""

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def build(preset: str, selection: str, schedule: str, chunk: int):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from dpgen_jax import parallel, rng
  from dpgen_jax.config_file import load_config_file
  from dpgen_jax.data.dataset import DataSpec
  from dpgen_jax import methods
  from dpgen_jax.privacy import randomness

  c = load_config_file(os.path.join(REPO, "configs", "gswgan_mnist_eps10.py") + f":{preset}")
  c.gswgan.selection, c.gswgan.critic_schedule, c.gswgan.critic_chunk = selection, schedule, chunk
  c.privacy.noise_multiplier = c.privacy.noise_multiplier or 1.0
  k = int(c.gswgan.num_discriminators)
  spec = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)
  method = methods.build(c, spec, parallel.make_mesh())
  n = 60_000 // k
  r = np.random.default_rng(0)
  method._shards = {"x": jnp.asarray(r.integers(0, 256, (k, n, 28, 28, 1), dtype=np.uint8)),
                    "y": jnp.asarray(r.integers(0, 10, (k, n)), jnp.int32)}
  root = randomness.SecretRoot.from_seed(0)
  method._shard_key = root.key("gswgan/shards")
  state = method.init(rng.make_key(0))
  keys = randomness.StepKeys(root)
  return method, state, keys, c


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--critic-chunk", type=int, action="append", default=None)
  args = parser.parse_args(argv)
  import jax
  chunks = args.critic_chunk or [1]
  variants = [("per_step", "drawn", 1)] + [(sel, sch, c) for c in chunks for sel, sch in
                                            (("per_row", "round_robin"), ("per_row", "drawn"))]
  built = {}
  for selection, schedule, chunk in variants:
    method, state, keys, config = build(args.preset, selection, schedule, chunk)
    state, _ = method.train_step(state, None, keys(0))  # compile
    jax.block_until_ready(state)
    built[(selection, schedule, chunk)] = [method, state, keys, 0.0]
  print(f"GS-WGAN {args.preset} preset: K = {config.gswgan.num_discriminators}, "
        f"B = {config.train.batch_size}, critic_iters = {config.gswgan.critic_iters}; "
        f"{args.steps} iterations each, interleaved; load {os.getloadavg()[0]:.2f}")
  for t in range(1, args.steps + 1):
    for key, entry in built.items():
      method, state, keys, total = entry
      start = time.perf_counter()
      state, _ = method.train_step(state, None, keys(t))
      jax.block_until_ready(state)
      entry[1], entry[3] = state, total + time.perf_counter() - start
  base = built[("per_step", "drawn", 1)][3] / args.steps
  print("| selection | critic schedule | critic_chunk | s / iteration | x upstream |")
  print("|---|---|---|---|---|")
  for (selection, schedule, chunk), entry in built.items():
    per = entry[3] / args.steps
    print(f"| {selection} | {schedule} | {chunk} | {per:.3f} | {per / base:.1f} |")
  print(f"load after: {os.getloadavg()[0]:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
