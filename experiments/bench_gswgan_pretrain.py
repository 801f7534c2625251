"""GS-WGAN warm start: discriminators pretrained per minute, vmapped vs one at a time.

Both ways run in this process, side by side, on the same discriminators (ids 0..num-1
of the config's partition) and the same number of pretraining iterations:

  one at a time  `Pretrainer.run_chunk(i, i + 1)` for each i (upstream's loop: one
                 discriminator, its generator and optimisers at a time);
  vmapped        `Pretrainer.run_chunk(0, num)`: one jit-compiled vmap of the outer
                 iteration over all `num` stacked discriminators (sharded over the
                 devices when there are several).

Compilation is timed separately (one warm-up iteration per shape) and excluded from
the rate. Data: real MNIST shards if found (DPGEN_DATA_DIR), else uniform noise (the
speed does not depend on the pixels).

  python experiments/bench_gswgan_pretrain.py --num=8 --iterations=5
  python experiments/bench_gswgan_pretrain.py --preset=paper --num=4 --iterations=1
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from dpgen_jax import parallel  # noqa: E402
from dpgen_jax.config_file import load_config_file  # noqa: E402
from dpgen_jax.data.dataset import DataSpec  # noqa: E402
from dpgen_jax import methods  # noqa: E402
from dpgen_jax.methods.gswgan import pretrain as gswgan_pretrain  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "cpu", "Preset of configs/gswgan_mnist_eps10.py (network sizes).")
flags.DEFINE_integer("num", 8, "Discriminators to pretrain each way.")
flags.DEFINE_integer("iterations", 5, "Pretraining iterations per discriminator.")
flags.DEFINE_integer("repeats", 1, "Timed repetitions of each way (the best is reported).")
flags.DEFINE_string("out", "", "Optional JSON output path.")


def _shards(num_discriminators: int, shard_size: int):
  try:
    from dpgen_jax.data import load_dataset
    c = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs",
                                       "gswgan_mnist_eps10.py:smoke"))
    data = load_dataset(c.data)
    idx = gswgan_pretrain.partition(len(data.train_x), num_discriminators, 1)
    x = np.round(data.train_x[idx] * 255).astype(np.uint8)
    return x, data.train_y[idx].astype(np.int32), "mnist"
  except Exception:  # no MNIST here: the timing does not depend on the pixels
    rs = np.random.RandomState(0)
    x = rs.randint(0, 256, (num_discriminators, shard_size, 28, 28, 1)).astype(np.uint8)
    return x, rs.randint(0, 10, (num_discriminators, shard_size)).astype(np.int32), "noise"


def _timed(pretrainer, ranges, iterations: int) -> tuple[float, float]:
  """(compile-and-first-iteration seconds, seconds for `iterations` iterations)."""
  cfg = pretrainer.config.gswgan
  with cfg.unlocked():
    cfg.pretrain_iterations = 1
    t = time.time()
    jax.block_until_ready(pretrainer.run_chunk(*ranges[0])[0])
    warm = time.time() - t
    cfg.pretrain_iterations = iterations
  t = time.time()
  for start, end in ranges:
    jax.block_until_ready(pretrainer.run_chunk(start, end)[0])
  return warm, time.time() - t


def main(argv):
  del argv
  c = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs",
                                     f"gswgan_mnist_eps10.py:{FLAGS.preset}"))
  spec = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)
  mesh = parallel.make_mesh()
  method = methods.build(c, spec, mesh)
  k = int(c.gswgan.num_discriminators)
  num = min(FLAGS.num, k)
  x, y, source = _shards(k, 60_000 // k)
  results = {}
  pretrainer = gswgan_pretrain.Pretrainer(method.gan, c, mesh, x, y)
  for name, ranges in (("one_at_a_time", [(i, i + 1) for i in range(num)]),
                       ("vmapped", [(0, num)])):
    best, warm = float("inf"), None
    for _ in range(FLAGS.repeats):
      w, seconds = _timed(pretrainer, ranges, FLAGS.iterations)
      warm = w if warm is None else warm
      best = min(best, seconds)
    results[name] = dict(seconds=best, compile_and_first_iteration_s=warm,
                         discriminators_per_minute=60.0 * num / best,
                         discriminator_iterations_per_s=num * FLAGS.iterations / best)
    print(f"{name:>14}: {best:8.1f} s for {num} discriminators x {FLAGS.iterations} "
          f"iterations -> {results[name]['discriminators_per_minute']:.2f} per minute "
          f"(compile + first iteration {warm:.1f} s)", flush=True)
  g = c.gswgan
  summary = dict(preset=FLAGS.preset, num=num, iterations=FLAGS.iterations, data=source,
                 gen_arch=g.gen_arch, model_dim=g.model_dim, d_model_dim=g.d_model_dim,
                 critic_iters=g.critic_iters, batch_size=c.train.batch_size,
                 devices=mesh.size, backend=jax.default_backend(),
                 load_average=os.getloadavg(),
                 vmapped_speedup=results["one_at_a_time"]["seconds"] / results["vmapped"]["seconds"],
                 **results)
  print(json.dumps(summary, indent=2))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(summary, f, indent=2)


if __name__ == "__main__":
  app.run(main)
