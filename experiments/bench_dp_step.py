"""Benchmark: one DP-GAN discriminator step, ours against non-private, Opacus, jax-privacy.

The step is the dpgan-revisit MNIST discriminator (DCGAN D, width 128: 1,724,289
parameters) on B rows (half real, half fake targets; every row counts, as in DP-GAN
where fakes are clipped too):

  ours:<strategy>  `dpgan.private_discriminator_grad` (per-example BCE, clipping to C=1
                   with that strategy of `sums.STRATEGIES`, one N(0, C^2) draw,
                   divided by B) then Adam(2e-4, 0.5, 0.999): DP-GAN's D update;
  nonprivate       grad of the mean BCE + Adam: no per-example work (the reference);
  opacus:hooks     the same D in PyTorch (Conv2d k/s/p of dpgan.md §1.2, label-image
  opacus:ghost     branch, LeakyReLU 0.2) under Opacus's PrivacyEngine with
                   grad_sample_mode 'hooks' / 'ghost' (fast gradient clipping), Adam;
  jax_privacy      jax_privacy.clipping.clipped_grad (vmap of grad) + noise + Adam.

Method. For each batch size the JAX steps are compiled ahead of time and the Opacus
steps are built in a persistent worker process (torch lives in its own venv). The
first (warm-up) step of each measures memory: freed heap is returned to the OS
(malloc_trim), the kernel's peak-RSS counter is reset (/proc/self/clear_refs) and
peak_mem_mb = VmHWM after the step - VmRSS before it, i.e. the extra resident memory
one step needs (buffers, per-example gradients, workspace), the same way in both
frameworks. (`--fresh-memory` repeats this in a fresh process per row, the compiled
step coming from a persistent compilation cache; it agrees within a few MB and costs
a process start per row.) JAX rows also report XLA's own temp-buffer size
(`xla_temp_mb`). Then repetitions are interleaved round-robin over all
implementations (one step each, blocking until the result is ready) so that the load
of this shared machine affects them alike; examples/s = B / median step time (rows
whose steps are slow get fewer repetitions, see --budget-s; `samples` in the JSON).
Implementations that materialise per-example gradients can be microbatched
(`--microbatch`, default ours:vmap and jax_privacy in chunks of 256 rows, which keeps
their memory bounded); Opacus runs each step as one batch.

Reproduce (the [bench] extra, torch in a separate venv keeps /work/venv torch-free):
  python3.11 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install torch==2.13.0 opacus numpy
  pip install --target /tmp/jp jax-privacy==2.0.0 chex pydantic toolz   # optional, (d)
  PYTHONPATH=.:/tmp/jp python experiments/bench_dp_step.py \
      --torch-python /tmp/bench-venv/bin/python --json bench.json [--quick] [--end-to-end]
The end-to-end D step of a preset (DPGAN.train_step with its real Poisson batch, every
clipping strategy beside the non-private step; examples/s and CPU-seconds per D step):
  python experiments/bench_dp_step.py --only-end-to-end --end-to-end-preset=cpu
Without --torch-python (or the DPGEN_BENCH_TORCH_PYTHON variable) torch is looked for in
this interpreter; rows whose library is missing are skipped with the reason printed.
Run with a plain interpreter: tests/conftest.py's XLA optimisation level 0 must not be
set (XLA_FLAGS is checked).
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES, SIZE = 10, 28


def _status_kb(field: str) -> int:
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _one_step_peak_mb(step) -> float:
  """Extra resident memory of one call of `step` (peak RSS during it minus RSS before)."""
  import ctypes
  ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap, so it is not reused unseen
  base = _status_kb("VmRSS")
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
  step()
  return (_status_kb("VmHWM") - base) / 1024.0


# ---------------------------------------------------------------- JAX implementations

def _jax_batch(batch_size: int):
  import numpy as np
  rng = np.random.default_rng(0)
  return {"x": rng.uniform(size=(batch_size, SIZE, SIZE, 1)).astype(np.float32),
          "y": rng.integers(0, NUM_CLASSES, size=batch_size).astype(np.int32),
          "t": (np.arange(batch_size) % 2).astype(np.float32),
          # An argument, as in DP-GAN: a constant all-True mask lets XLA fold it and
          # (measured) makes the vmap strategy's fusion twice slower on CPU.
          "mask": np.ones((batch_size,), bool)}


def jax_step(impl: str, batch_size: int, d_width: int, microbatch: int | None):
  """(step(params, opt, batch, key) -> (params, opt), example args) for a JAX impl."""
  import jax
  import jax.numpy as jnp
  import optax
  from dpgen_jax import rng
  from dpgen_jax.methods import dpgan
  from dpgen_jax.models import dcgan
  from dpgen_jax.privacy import clipping, mechanisms

  _, disc = dcgan.make_dcgan(SIZE, 1, NUM_CLASSES, d_width=d_width)
  params = jax.jit(disc.init)(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)),
                              jnp.zeros((1,), jnp.int32))["params"]
  tx = optax.adam(2e-4, b1=0.5, b2=0.999, eps=1e-8)
  apply = lambda p, x, y: disc.apply({"params": p}, x, y)
  mb = microbatch if microbatch and microbatch < batch_size else None

  if impl == "nonprivate":
    def grad_fn(params, batch, key):
      del key
      def loss(p):  # DPGAN._d_update's non-private branch
        losses = dpgan.bce_with_logits(apply(p, batch["x"], batch["y"]), batch["t"])
        return jnp.sum(jnp.where(batch["mask"], losses, 0.0)) / jnp.sum(batch["mask"])
      return jax.grad(loss)(params)
  elif impl == "jax_privacy":
    from jax_privacy import clipping as jp_clipping

    def loss(p, b):  # b: one example with a leading axis of 1 (keep_batch_dim)
      return jnp.mean(dpgan.bce_with_logits(apply(p, b["x"], b["y"]), b["t"]))
    clipped = jp_clipping.clipped_grad(loss, l2_clip_norm=1.0, batch_argnums=1,
                                       keep_batch_dim=True, microbatch_size=mb)

    def grad_fn(params, batch, key):
      batch = {k: v for k, v in batch.items() if k != "mask"}  # no masks: all rows real
      return mechanisms.GaussianSum(noise_multiplier=1.0, clip_norm=1.0,
                                    divisor=batch_size)(clipped(params, batch), key)
  elif impl.startswith("ours:"):
    strategy = impl.split(":", 1)[1]

    half = batch_size // 2

    def grad_fn(params, batch, key):  # the first half real (masked), the rest fakes
      real = {"x": batch["x"][:half], "y": batch["y"][:half], "mask": batch["mask"][:half]}
      fake = {"x": batch["x"][half:], "y": batch["y"][half:]}
      return dpgan.private_discriminator_grad(
          apply, params, real, fake, key, clip=clipping.ClippingSpec(clip_norm=1.0),
          mechanism=mechanisms.GaussianSum(noise_multiplier=1.0, clip_norm=1.0,
                                           divisor=batch_size),
          microbatch_size=mb, strategy=strategy)[0]
  else:
    raise ValueError(f"unknown JAX implementation {impl!r}")

  def step(params, opt, batch, key):
    updates, opt = tx.update(grad_fn(params, batch, key), opt, params)
    return optax.apply_updates(params, updates), opt

  return step, (params, tx.init(params), _jax_batch(batch_size), rng.make_key(1))


# -------------------------------------------------------------- PyTorch implementations

def torch_step(impl: str, batch_size: int, d_width: int):
  """A closure running one Opacus D step (forward, backward, clip, noise, Adam)."""
  import numpy as np
  import torch
  from opacus import PrivacyEngine
  from torch import nn

  class Discriminator(nn.Module):
    """dpgan-revisit's 28x28 DCGAN D (dpgan.md §1.2), NCHW."""

    def __init__(self, d: int):
      super().__init__()
      self.conv1_1 = nn.Conv2d(1, d // 2, 4, 2, 1)
      self.conv1_2 = nn.Conv2d(NUM_CLASSES, d // 2, 4, 2, 1)
      self.conv2 = nn.Conv2d(d, 2 * d, 4, 2, 1)
      self.conv3 = nn.Conv2d(2 * d, 4 * d, 3, 2, 1)
      self.conv4 = nn.Conv2d(4 * d, 1, 4, 1, 0)
      self.act = nn.LeakyReLU(0.2)

    def forward(self, x, labels):
      y = nn.functional.one_hot(labels, NUM_CLASSES).to(x.dtype)[:, :, None, None]
      y = y.expand(-1, -1, SIZE, SIZE)
      h = torch.cat([self.act(self.conv1_1(x)), self.act(self.conv1_2(y))], 1)
      h = self.act(self.conv3(self.act(self.conv2(h))))
      return self.conv4(h).view(-1)

  torch.manual_seed(0)
  model = Discriminator(d_width)
  batch = _jax_batch(batch_size)
  x = torch.from_numpy(np.ascontiguousarray(batch["x"].transpose(0, 3, 1, 2)))
  labels = torch.from_numpy(batch["y"].astype(np.int64))
  target = torch.from_numpy(batch["t"])
  optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch_size)
  mode = impl.split(":", 1)[1]
  made = PrivacyEngine().make_private(
      module=model, optimizer=optimizer, data_loader=loader, criterion=nn.BCEWithLogitsLoss(),
      noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
      grad_sample_mode=mode)
  if mode == "ghost":
    model, optimizer, criterion, _ = made
  else:
    (model, optimizer, _), criterion = made, nn.BCEWithLogitsLoss()

  def step():
    optimizer.zero_grad(set_to_none=True)
    criterion(model(x, labels), target).backward()
    optimizer.step()

  return step


def torch_worker() -> None:
  """Line protocol on stdin/stdout: {"setup"|"run": {...}} -> one JSON reply per line."""
  steps = {}
  for line in sys.stdin:
    request = json.loads(line)
    try:
      if "setup" in request:
        r = request["setup"]
        steps.pop(r["impl"], None)
        gc.collect()
        steps[r["impl"]] = torch_step(r["impl"], r["batch_size"], r["d_width"])
        reply = {"ok": True}
      elif "warmup" in request:  # the first step, measuring its memory
        start = time.perf_counter()
        reply = {"peak_mem_mb": _one_step_peak_mb(steps[request["warmup"]]),
                 "seconds": time.perf_counter() - start}
      else:
        step = steps[request["run"]]
        start = time.perf_counter()
        step()
        reply = {"seconds": time.perf_counter() - start}
    except Exception as e:  # the parent reports it and skips the row
      reply = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(reply), flush=True)


class TorchWorker:
  def __init__(self, python: str):
    env = dict(os.environ, PYTHONPATH=REPO)
    self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--torch-worker"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env)

  def call(self, request: dict) -> dict:
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    reply = self.proc.stdout.readline()
    return json.loads(reply) if reply else {"error": "worker exited"}

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def torch_python(requested: str | None) -> tuple[str | None, str]:
  """An interpreter with torch and opacus, or (None, reason)."""
  python = requested or os.environ.get("DPGEN_BENCH_TORCH_PYTHON") or sys.executable
  check = subprocess.run([python, "-c", "import torch, opacus; print(torch.__version__, "
                          "opacus.__version__)"], capture_output=True, text=True)
  if check.returncode:
    return None, (f"torch/opacus not importable by {python} (install the [bench] extra or "
                  "pass --torch-python)")
  return python, "torch %s, opacus %s" % tuple(check.stdout.split())


# ------------------------------------------------------------------------- measuring

def memory_probe(impl: str, batch_size: int, d_width: int, microbatch: int | None) -> dict:
  """Runs in a fresh process: the extra peak RSS of one step (see the module docstring)."""
  if impl.startswith("opacus:"):
    return {"peak_mem_mb": _one_step_peak_mb(torch_step(impl, batch_size, d_width))}
  import jax
  step, args = jax_step(impl, batch_size, d_width, microbatch)
  args = jax.device_put(args)
  compiled = jax.jit(step).lower(*args).compile()
  return {"peak_mem_mb": _one_step_peak_mb(lambda: jax.block_until_ready(compiled(*args)))}


def _median(xs):
  xs = sorted(xs)
  return 0.5 * (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2])


def bench_batch_size(batch_size, impls, args, worker, microbatch) -> list[dict]:
  """Rows for one batch size: interleaved timing; memory of the first (warm-up) step."""
  import jax
  gc.collect()
  runners, extra = {}, {}
  for impl in impls:
    if impl.startswith("opacus:"):
      reply = worker.call({"setup": {"impl": impl, "batch_size": batch_size,
                                     "d_width": args.d_width}})
      if "error" not in reply:
        reply = worker.call({"warmup": impl})
      if "error" in reply:
        print(f"  skip {impl}: {reply['error']}")
        continue
      extra[impl] = {"peak_mem_mb": reply["peak_mem_mb"], "warmup_s": reply["seconds"]}
      runners[impl] = lambda impl=impl: worker.call({"run": impl})["seconds"]
    else:
      step, step_args = jax_step(impl, batch_size, args.d_width, microbatch.get(impl))
      step_args = jax.device_put(step_args)
      start = time.perf_counter()
      compiled = jax.jit(step).lower(*step_args).compile()
      stats = compiled.memory_analysis()
      extra[impl] = {"compile_s": time.perf_counter() - start,
                     "xla_temp_mb": stats.temp_size_in_bytes / 2**20 if stats else None}

      def run(compiled=compiled, step_args=step_args):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*step_args))
        return time.perf_counter() - start
      runners[impl] = run
      start = time.perf_counter()
      extra[impl]["peak_mem_mb"] = _one_step_peak_mb(run)  # the warm-up
      extra[impl]["warmup_s"] = time.perf_counter() - start
  # Slow rows get fewer timed repetitions (at least one, or the warm-up itself when
  # that alone exceeds the budget), so that a full sweep stays within tens of minutes.
  times = {impl: [] for impl in runners}
  for impl, e in extra.items():
    warmup = e.pop("warmup_s")
    e["reps"] = min(args.reps, int(args.budget_s // max(warmup, 1e-3)))
    if not e["reps"]:
      times[impl].append(warmup)
  for r in range(args.reps):
    for impl, run in runners.items():
      if r < extra[impl]["reps"]:
        time.sleep(0.2)  # let the other runtime's spinning worker threads go idle
        times[impl].append(run())
  rows = []
  for impl, ts in times.items():
    t = _median(ts)
    rows.append(dict(impl=impl, batch_size=batch_size, examples_per_s=batch_size / t,
                     step_ms=1e3 * t, samples=len(ts),
                     microbatch=microbatch.get(impl) if microbatch.get(impl, batch_size)
                     < batch_size else None,
                     **extra.get(impl, {})))
    print(f"  {impl:14s} {batch_size / t:9.1f} ex/s  {1e3 * t:9.1f} ms/step", flush=True)
  return rows


def measure_memory(rows, args, microbatch, torch_py, cache_dir):
  for row in rows:
    impl = row["impl"]
    python = torch_py if impl.startswith("opacus:") else sys.executable
    cmd = [python, os.path.abspath(__file__), "--memory-probe", impl,
           str(row["batch_size"]), "--d-width", str(args.d_width)]
    if microbatch.get(impl):
      cmd += ["--microbatch", f"{impl}={microbatch[impl]}"]
    env = dict(os.environ, DPGEN_BENCH_JAX_CACHE=cache_dir,
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row["peak_mem_mb_in_process"] = row.get("peak_mem_mb")
    try:
      row["peak_mem_mb"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mem_mb"]
    except (IndexError, ValueError, KeyError):
      row["peak_mem_mb"] = None
      print(f"  memory probe of {impl} at {row['batch_size']} failed: {out.stderr[-300:]}")


def print_table(rows):
  print(f"\n{'batch':>5} {'impl':14s} {'ex/s':>9} {'ms/step':>9} {'peak MB':>8} "
        f"{'/nonpriv':>8} {'/opacus:hooks':>13}")
  for b in sorted({r["batch_size"] for r in rows}):
    here = {r["impl"]: r for r in rows if r["batch_size"] == b}
    ref = here.get("nonprivate", {}).get("examples_per_s")
    hooks = here.get("opacus:hooks", {}).get("examples_per_s")
    for r in here.values():
      ratio = lambda d: f"{r['examples_per_s'] / d:.2f}" if d else "-"
      mem = r.get("peak_mem_mb")
      print(f"{b:5d} {r['impl']:14s} {r['examples_per_s']:9.1f} {r['step_ms']:9.1f} "
            f"{'-' if mem is None else f'{mem:.0f}':>8} {ratio(ref):>8} {ratio(hooks):>13}")


def _cpu_s() -> float:
  t = os.times()
  return t.user + t.system


def end_to_end(strategies, steps: int, preset: str = "paper") -> list[dict]:
  """D steps/s of DPGAN.train_step for configs/mnist_eps10.py with `preset`, on a real
  Poisson batch, per clipping strategy and non-private ('nonprivate': privacy off, the
  same networks and batch): examples/s (real + fake rows per D step / D step time) and
  process CPU-seconds per D step, measured side by side in one process."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from dpgen_jax import methods, parallel, rng
  from dpgen_jax.config_file import load_config_file
  from dpgen_jax.data import dataset, sampling

  data = dataset.DataSpec("mnist", "image", (SIZE, SIZE, 1), NUM_CLASSES, 60_000, 10_000)
  results = []
  for strategy in strategies:
    config = load_config_file(os.path.join(REPO, "configs", "mnist_eps10.py") + ":" + preset)
    if strategy == "nonprivate":
      config.privacy.enabled = False
    else:
      config.privacy.clipping_strategy = strategy
    method = methods.build(config, data, parallel.make_mesh())
    sampler = sampling.PoissonSampler(data.num_train, method.plan.sampling_rate,
                                      lambda t: np.random.default_rng([0, t]),
                                      multiple=method.padded_batch_multiple())
    drawn = sampler.sample(0)
    images = np.random.default_rng(0).uniform(size=(drawn.indices.shape[0], SIZE, SIZE, 1))
    batch = {"x": images.astype(np.float32), "y": (drawn.indices % NUM_CLASSES).astype(np.int32),
             "mask": drawn.mask}
    rngs = {"model": rng.make_key(1), "noise": rng.make_key(2)}
    state = method.init(rng.make_key(0))
    start = time.perf_counter()
    state, _ = jax.block_until_ready(method.train_step(state, batch, rngs))
    compile_s = time.perf_counter() - start
    start, cpu0 = time.perf_counter(), _cpu_s()
    for _ in range(steps):
      state, _ = jax.block_until_ready(method.train_step(state, batch, rngs))
    d_step = (time.perf_counter() - start) / steps
    d_cpu = (_cpu_s() - cpu0) / steps
    n_d = config.dpgan.d_steps_per_g_step
    with_g = []
    for _ in range(2):  # the first may recompile for the edited state; keep the second
      state = state.replace(since_g=jnp.full_like(state.since_g, n_d - 1))  # G step next
      start, cpu0 = time.perf_counter(), _cpu_s()
      state, _ = jax.block_until_ready(method.train_step(state, batch, rngs))
      with_g.append((time.perf_counter() - start, _cpu_s() - cpu0))
    with_g, with_g_cpu = with_g[-1]
    rate = n_d / ((n_d - 1) * d_step + with_g)
    rows_per_step = int(drawn.size) + method.num_fakes
    results.append(dict(strategy=strategy, preset=preset,
                        real_rows_padded=int(drawn.indices.shape[0]),
                        real_rows=int(drawn.size), fake_rows=method.num_fakes,
                        d_step_s=d_step, d_and_g_step_s=with_g, d_steps_per_s=rate,
                        d_step_cpu_s=d_cpu, d_and_g_step_cpu_s=with_g_cpu,
                        cpu_s_per_d_step=((n_d - 1) * d_cpu + with_g_cpu) / n_d,
                        examples_per_s=rows_per_step / d_step, first_step_s=compile_s))
    print(f"  {strategy:8s} D step {d_step:.3f} s, D+G step {with_g:.3f} s -> "
          f"{rate:.3f} D steps/s (n_D={n_d}; first step incl. compile {compile_s:.0f} s); "
          f"process CPU time {d_cpu:.3f} s / {with_g_cpu:.3f} s (load-independent)",
          flush=True)
  return results


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-sizes", default="64,128,256,512,1024")
  p.add_argument("--reps", type=int, default=3, help="timed steps per implementation")
  p.add_argument("--budget-s", type=float, default=90.0,
                 help="fewer repetitions for a row whose steps would exceed this (s)")
  p.add_argument("--quick", action="store_true", help="batch 64, 2 repetitions")
  p.add_argument("--json", help="write {'rows': [...]} here")
  p.add_argument("--impls", help="comma-separated subset (default: all available)")
  p.add_argument("--microbatch", default="ours:vmap=256,jax_privacy=256",
                 help="impl=N,...: physical chunk size of those implementations")
  p.add_argument("--d-width", type=int, default=128)
  p.add_argument("--torch-python", help="interpreter with torch + opacus")
  p.add_argument("--fresh-memory", action="store_true",
                 help="measure peak memory in a fresh process per row (slower)")
  p.add_argument("--end-to-end", action="store_true",
                 help="also time DPGAN.train_step of configs/mnist_eps10.py (paper)")
  p.add_argument("--end-to-end-steps", type=int, default=3)
  p.add_argument("--end-to-end-preset", default="paper", choices=("paper", "cpu"),
                 help="preset of configs/mnist_eps10.py for --end-to-end")
  p.add_argument("--only-end-to-end", action="store_true",
                 help="skip the per-batch-size rows (implies --end-to-end)")
  p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--memory-probe", nargs=2, metavar=("IMPL", "B"), help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  microbatch = {k: int(v) for k, v in (kv.split("=") for kv in args.microbatch.split(",") if kv)}
  if args.torch_worker:
    return torch_worker()
  if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
    sys.exit("XLA_FLAGS sets xla_backend_optimization_level (the tests' setting); unset it.")
  if args.memory_probe:
    impl, b = args.memory_probe
    if os.environ.get("DPGEN_BENCH_JAX_CACHE") and not impl.startswith("opacus:"):
      import jax
      jax.config.update("jax_compilation_cache_dir", os.environ["DPGEN_BENCH_JAX_CACHE"])
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    print(json.dumps(memory_probe(impl, int(b), args.d_width, microbatch.get(impl))))
    return None

  import jax
  cache_dir = tempfile.mkdtemp(prefix="bench-jaxcache-")
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  from dpgen_jax.privacy import sums
  sizes = [64] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
  reps = 2 if args.quick else args.reps
  args.reps = reps
  impls = [f"ours:{s}" for s in sums.STRATEGIES] + ["nonprivate", "jax_privacy",
                                                         "opacus:hooks", "opacus:ghost"]
  if args.impls:
    impls = [i for i in impls if i in args.impls.split(",")]
  try:
    import jax_privacy  # noqa: F401
  except ImportError:
    if "jax_privacy" in impls:
      print("skip jax_privacy: not importable (pip install jax-privacy; see docstring)")
      impls.remove("jax_privacy")
  torch_py, why = torch_python(args.torch_python)
  print(f"PyTorch side: {why}")
  if torch_py is None:
    impls = [i for i in impls if not i.startswith("opacus:")]
  worker = TorchWorker(torch_py) if any(i.startswith("opacus:") for i in impls) else None
  load = os.getloadavg()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; D width {args.d_width}")
  rows = []
  if args.only_end_to_end:
    args.end_to_end, sizes = True, []
  try:
    for b in sizes:
      print(f"batch {b}:", flush=True)
      rows += bench_batch_size(b, impls, args, worker, microbatch)
  finally:
    if worker:
      worker.close()
  if args.fresh_memory:
    measure_memory(rows, args, microbatch, torch_py, cache_dir)
  if rows:
    print_table(rows)
  load_after = os.getloadavg()
  print(f"load average before {load[0]:.2f}, after {load_after[0]:.2f} (1 min)")
  result = {"rows": rows, "load_average": [load, load_after], "d_width": args.d_width}
  if args.end_to_end:
    preset = args.end_to_end_preset
    print(f"end to end, configs/mnist_eps10.py:{preset}, private strategies and non-private:")
    e2e = end_to_end(list(sums.STRATEGIES) + ["nonprivate"], args.end_to_end_steps, preset)
    base = next(r for r in e2e if r["strategy"] == "nonprivate")
    for r in e2e:
      r["d_step_vs_nonprivate"] = r["d_step_s"] / base["d_step_s"]
      print(f"  {r['strategy']:10s} {r['examples_per_s']:8.0f} examples/s, "
            f"{r['cpu_s_per_d_step']:.3f} CPU-s per D step (incl. G), D step "
            f"{r['d_step_vs_nonprivate']:.2f}x the non-private one")
    result["end_to_end"] = e2e
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return None


if __name__ == "__main__":
  main()
