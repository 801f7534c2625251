"""Sinkhorn iterations per second: dpgen_jax's solver vs upstream geomloss 0.2.3.

The problem DP-Sinkhorn solves at every MNIST step: n = 50 generated rows against
m = 60 real rows of 794 features ([image in [-1, 1], 15 * one_hot]), cost
||d||^2 + ||d||_1, blur 0.05, p = 1, geomloss's epsilon-scaling schedule.

Two processes, because torch must stay out of the JAX environment:

  # 1. upstream (a venv with torch and geomloss==0.2.3): timings + reference outputs
  python experiments/bench_sinkhorn.py --torch --out=/tmp/geomloss.npz
  # 2. this project: timings, and agreement with the saved geomloss outputs
  python experiments/bench_sinkhorn.py --compare=/tmp/geomloss.npz

Reported per solver: loop iterations per second with a precomputed cost matrix (ours:
100 iterations inside one jitted loop; geomloss: its Python loop, as upstream runs it),
and full OT evaluations (cost matrix, all iterations, final step, gradient w.r.t. the
50 generated rows) per second, times the schedule length = iterations per second. The
JAX run also times ott-jax's Sinkhorn with the same iteration count on the same cost
(`ott_jax`). On a loaded machine run torch with `--threads=1`: with 2 threads on 2
busy cores its intra-op threads contend and it runs 30x slower.
"""

import argparse
import json
import os
import time

import numpy as np

N, M, PIXELS, CLASSES, SCALE, BLUR, MIXTURE = 50, 60, 784, 10, 15.0, 0.05, 1.0


def inputs(seed: int = 0):
  rng = np.random.default_rng(seed)
  def rows(n):
    img = np.tanh(rng.normal(size=(n, PIXELS)) * 2.0)
    return np.concatenate([img, SCALE * np.eye(CLASSES)[rng.integers(0, CLASSES, n)]], 1)
  return rows(N).astype(np.float32), rows(M).astype(np.float32)


def _rate(fn, seconds: float = 10.0) -> float:
  fn()
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    fn()
    count += 1
  return count / (time.perf_counter() - start)


def run_torch(out: str, threads: int) -> dict:
  import torch
  from geomloss import SamplesLoss
  torch.set_num_threads(threads or os.cpu_count() or 1)

  def cost(x, y):  # upstream src/cost_function.py, 'l1+l2' (batched form)
    d = x.unsqueeze(2) - y.unsqueeze(1)
    return torch.norm(d, p=2, dim=3) ** 2 + MIXTURE * torch.norm(d, p=1, dim=3)

  x_np, y_np = inputs()
  loss = SamplesLoss("sinkhorn", p=1, blur=BLUR, debias=False, backend="tensorized", cost=cost)
  x, y = torch.tensor(x_np, requires_grad=True), torch.tensor(y_np)
  value = loss(x, y)
  (grad,) = torch.autograd.grad(value, x)

  def full():
    xx = torch.tensor(x_np, requires_grad=True)
    torch.autograd.grad(loss(xx, y), xx)

  from geomloss.sinkhorn_samples import softmin_tensorized
  from geomloss.sinkhorn_divergence import max_diameter, epsilon_schedule
  schedule = epsilon_schedule(1, max_diameter(x.detach(), y), BLUR, 0.5)
  c = cost(x.detach()[None], y[None])
  a_log = torch.full((1, N), -np.log(N)); b_log = torch.full((1, M), -np.log(M))
  f = softmin_tensorized(1.0, c, b_log)
  g = softmin_tensorized(1.0, c.transpose(1, 2), a_log)

  def loop(iters=100):
    ff, gg = f, g
    with torch.no_grad():
      for _ in range(iters):
        ff, gg = (0.5 * (ff + softmin_tensorized(1.0, c, b_log + gg))),\
                 (0.5 * (gg + softmin_tensorized(1.0, c.transpose(1, 2), a_log + ff)))

  result = dict(solver=f"geomloss {__import__('geomloss').__version__} tensorized, torch "
                       f"{torch.__version__}, {torch.get_num_threads()} threads",
                schedule_length=len(schedule),
                loop_iterations_per_s=100 * _rate(loop),
                ot_calls_per_s=_rate(full))
  result["iterations_per_s_in_ot_calls"] = result["ot_calls_per_s"] * len(schedule)
  np.savez(out, x=x_np, y=y_np, value=value.item(), grad=grad.numpy(),
           result=json.dumps(result))
  return result


def run_jax(compare: str | None) -> dict:
  import jax
  import jax.numpy as jnp
  from dpgen_jax.sinkhorn import costs, solver
  x_np, y_np = inputs()
  cfg = solver.SinkhornConfig(
      blur=BLUR, exponent=1.0, cost="l1_sq_l2", mixture=MIXTURE,
      max_loop_iterations=solver.loop_iterations_for(
          costs.max_feature_diameter(PIXELS, CLASSES, SCALE), BLUR, 1.0))
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  # y is an argument, not a closed-over constant (XLA would constant-fold through it).
  full = jax.jit(jax.value_and_grad(lambda a, b: solver.entropic_ot(a, b, cfg, grad_y=False)))
  value, grad = full(x, y)
  diam = float(solver.diameter(x, y))
  length = len(solver.geomloss_schedule(diam, BLUR, 1.0))
  c = cfg.cost_matrix(x, y)
  log_a, log_b = jnp.full(N, -np.log(N)), jnp.full(M, -np.log(M))
  loop = jax.jit(lambda c: solver.cross_potentials(c, log_a, log_b, jnp.ones(100),
                                                   jnp.ones(100, bool)))
  result = dict(solver=f"dpgen_jax.sinkhorn (jax {jax.__version__}, {jax.devices()[0].platform})",
                schedule_length=length,
                loop_iterations_per_s=100 * _rate(lambda: jax.block_until_ready(loop(c))),
                ot_calls_per_s=_rate(lambda: jax.block_until_ready(full(x, y))))
  result["iterations_per_s_in_ot_calls"] = result["ot_calls_per_s"] * length
  result["ott_jax"] = run_ott(x, y, cfg, length)
  if compare:
    with np.load(compare) as ref:
      result["geomloss"] = json.loads(str(ref["result"]))
      result["value_ours"], result["value_geomloss"] = float(value), float(ref["value"])
      result["grad_max_abs_diff"] = float(np.abs(np.asarray(grad) - ref["grad"]).max())
      result["grad_max_abs"] = float(np.abs(ref["grad"]).max())
  return result


def run_ott(x, y, cfg, length: int) -> dict:
  """ott-jax's Sinkhorn on the same cost matrix, as close to geomloss as it gets: the
  same number of iterations, parallel updates with momentum 0.5, epsilon annealed from
  the diameter to blur (ott's own schedule), value and Danskin gradient w.r.t. x."""
  import jax
  import ott
  from ott.geometry import epsilon_scheduler, geometry
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import acceleration, sinkhorn
  from dpgen_jax.sinkhorn import solver

  diam = float(solver.diameter(x, y))
  eps = epsilon_scheduler.Epsilon(target=BLUR, init=diam / BLUR, decay=0.5)
  solve = sinkhorn.Sinkhorn(lse_mode=True, parallel_dual_updates=True,
                            momentum=acceleration.Momentum(value=0.5), min_iterations=length,
                            max_iterations=length, inner_iterations=1, threshold=-1.0,
                            use_danskin=True, implicit_diff=None)

  def value(a, b):
    geom = geometry.Geometry(cost_matrix=cfg.cost_matrix(a, b), epsilon=eps)
    return solve(linear_problem.LinearProblem(geom)).reg_ot_cost

  full = jax.jit(jax.value_and_grad(value))
  return dict(solver=f"ott-jax {ott.__version__} Sinkhorn ({length} iterations)",
              ot_calls_per_s=_rate(lambda: jax.block_until_ready(full(x, y))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--torch", action="store_true", help="run upstream geomloss")
  parser.add_argument("--out", default="/tmp/geomloss_bench.npz")
  parser.add_argument("--compare", default=None, help="geomloss outputs to compare against")
  parser.add_argument("--threads", type=int, default=0,
                      help="torch intra-op threads (0: all cores); on a loaded machine 1 "
                           "avoids torch's thread contention")
  args = parser.parse_args()
  result = run_torch(args.out, args.threads) if args.torch else run_jax(args.compare)
  result["load_average"] = os.getloadavg()
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
