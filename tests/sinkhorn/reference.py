"""A NumPy float64 transcription of geomloss 0.2.3's tensorized Sinkhorn (debias=False),
with the gradient of its final extrapolation written out by hand. Test-only."""

import numpy as np

from dpgen_jax.sinkhorn.solver import geomloss_schedule


def cost(x, y, kind, mixture=1.0):
  d = x[:, None, :] - y[None, :, :]
  sq = np.sum(d * d, axis=-1)
  return sq if kind == "sq_l2" else sq + mixture * np.sum(np.abs(d), axis=-1)


def cost_grad_x(x, y, kind, mixture=1.0):
  """(n, m, d): grad_x c(x_i, y_j), with sign(0) = 0."""
  d = x[:, None, :] - y[None, :, :]
  return 2 * d if kind == "sq_l2" else 2 * d + mixture * np.sign(d)


def softmin(eps, c, h):
  z = h[None, :] - c / eps
  top = z.max(axis=1, keepdims=True)
  return -eps * (top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


def ot(x, y, kind, mixture=1.0, blur=0.05, exponent=1.0, scaling=0.5):
  """(value, d value / d x) of geomloss's OT_eps(x, y), uniform weights, in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n, m = len(x), len(y)
  la, lb = np.full(n, -np.log(n)), np.full(m, -np.log(m))
  both = np.concatenate([x, y])
  diam = float(np.linalg.norm(both.max(0) - both.min(0)))
  schedule = geomloss_schedule(diam, blur, exponent, scaling)
  c = cost(x, y, kind, mixture)
  f, g = softmin(schedule[0], c, lb), softmin(schedule[0], c.T, la)
  for e in schedule:
    f, g = 0.5 * (f + softmin(e, c, lb + g / e)), 0.5 * (g + softmin(e, c.T, la + f / e))
  e = blur ** exponent
  f_x, g_y = softmin(e, c, lb + g / e), softmin(e, c.T, la + f / e)
  value = np.exp(la) @ f_x + np.exp(lb) @ g_y
  z = lb[None, :] + (g[None, :] - c) / e
  plan = np.exp(z - z.max(1, keepdims=True))
  plan = plan / plan.sum(1, keepdims=True) * np.exp(la)[:, None]
  grad = np.einsum("ij,ijk->ik", plan, cost_grad_x(x, y, kind, mixture))
  return value, grad, len(schedule)


def _loop_sym(c, la, schedule):
  f = softmin(schedule[0], c, la)
  for e in schedule:
    f = 0.5 * (f + softmin(e, c, la + f / e))
  return f


def divergence(x, y, kind, mixture=1.0, blur=0.05, exponent=1.0, scaling=0.5):
  """(value, d value / d x) of geomloss's debiased divergence (debias=True):
  <alpha, b_x - a_x> + <beta, a_y - b_y>, all terms on the schedule of x and y."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n, m = len(x), len(y)
  la, lb = np.full(n, -np.log(n)), np.full(m, -np.log(m))
  both = np.concatenate([x, y])
  schedule = geomloss_schedule(float(np.linalg.norm(both.max(0) - both.min(0))), blur,
                               exponent, scaling)
  c_xy, c_xx, c_yy = cost(x, y, kind, mixture), cost(x, x, kind, mixture), cost(y, y, kind, mixture)
  f, g = softmin(schedule[0], c_xy, lb), softmin(schedule[0], c_xy.T, la)
  for e in schedule:
    f, g = 0.5 * (f + softmin(e, c_xy, lb + g / e)), 0.5 * (g + softmin(e, c_xy.T, la + f / e))
  f_xx, g_yy = _loop_sym(c_xx, la, schedule), _loop_sym(c_yy, lb, schedule)
  e = blur ** exponent
  b_x, a_y = softmin(e, c_xy, lb + g / e), softmin(e, c_xy.T, la + f / e)
  a_x, b_yy = softmin(e, c_xx, la + f_xx / e), softmin(e, c_yy, lb + g_yy / e)
  value = np.exp(la) @ (b_x - a_x) + np.exp(lb) @ (a_y - b_yy)

  def plan_grad(c, logw, pot, other):  # alpha_i sum_j softmax_j(...) grad_x c(x_i, other_j)
    z = logw[None, :] + (pot[None, :] - c) / e
    plan = np.exp(z - z.max(1, keepdims=True))
    plan = plan / plan.sum(1, keepdims=True) * np.exp(la)[:, None]
    return np.einsum("ij,ijk->ik", plan, cost_grad_x(x, other, kind, mixture))

  # x enters b_x (through C_xy) and a_x (through C_xx's rows); a_y and b_yy see x only
  # through stop-gradient arguments.
  grad = plan_grad(c_xy, lb, g, y) - plan_grad(c_xx, la, f_xx, x)
  return value, grad
