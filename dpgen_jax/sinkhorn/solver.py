"""Log-domain Sinkhorn with epsilon scaling, as geomloss 0.2.3 computes it (tensorized).

What upstream DP-Sinkhorn differentiates is not "entropic OT at convergence" but one
specific fixed-length iteration (dp_sinkhorn.md §2.4). This module reproduces it:

  weights     alpha, beta (uniform over the valid rows; padded rows get weight 0 and
              log-weight -inf, so they take no part in any soft-min);
  diameter    D = ||max - min||_2 of the per-coordinate range over the valid rows of
              x and y (no gradient);
  schedule    [D^p, D^p, D^p s^p, D^p s^2p, ..., blur^p]: geomloss's
              [D^p] + [exp(e) for e in arange(p log D, p log blur, p log s)] + [blur^p],
              one loop iteration per value (its length depends on D);
  soft-min    softmin(eps, C, h)_i = -eps * logsumexp_j(h_j - C_ij / eps);
  init        f = softmin(eps_0, C_xy, log beta), g = softmin(eps_0, C_yx, log alpha);
  loop        for eps in the schedule, in parallel:
                f <- (f + softmin(eps, C_xy, log beta + g / eps)) / 2,
                g <- (g + softmin(eps, C_yx, log alpha + f / eps)) / 2;
  final step  (the only one differentiated) at eps = blur^p, with stop-gradient
              potentials and C_xy = c(x, sg(y)), C_yx = c(y, sg(x)):
                f = softmin(eps, C_xy, sg(log beta + g / eps)),
                g = softmin(eps, C_yx, sg(log alpha + f / eps));
  value       OT(x, y) = <alpha, f> + <beta, g>   (geomloss `debias=False`).

The gradient w.r.t. x_i is therefore alpha_i sum_j softmax_j(log beta_j + (g_j - C_ij)
/ eps) grad_x c(x_i, y_j): a row-normalised plan times the cost gradient (x gets no
gradient through g, and y none through f).

Static shapes for jit: the loop always runs `max_loop_iterations` times; iterations
beyond the schedule's length leave the potentials unchanged, so a batch with a smaller
diameter runs exactly geomloss's shorter schedule. `max_loop_iterations` comes from an
upper bound on the diameter (costs.max_feature_diameter).

Why not ott-jax's Sinkhorn: it cannot express this iteration. Its epsilon schedule
re-offsets the potentials by eps_k log(weights) at every step (ott potentials are
geomloss's plus eps log a), so averaged updates under a changing eps drift from
geomloss's; it has no data-dependent number of iterations; its Danskin gradient uses
the un-normalised plan of the final potentials instead of the extra half-step; and its
value includes the mass term. Where both compute the same thing (a fixed eps, or
convergence) the tests check that this solver and ott-jax agree.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax.sinkhorn import costs

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class SinkhornConfig:
  """Static settings of the solver (hashable; one jit specialisation per value).

  Attributes:
    blur: geomloss's `blur`; the final temperature is blur**exponent.
    exponent: geomloss's `p` (1 for MNIST's L1+L2 cost, 2 for CelebA's squared L2);
      it only shapes the schedule (the cost is `cost`, never |x - y|^p / p).
    scaling: ratio of successive blur values (geomloss default 0.5).
    max_loop_iterations: loop iterations compiled (>= the schedule's length).
    cost: one of costs.COSTS.
    mixture: weight m of the L1 term of 'l1_sq_l2'.
    epsilon_scaling: False runs all `max_loop_iterations` at eps = blur**exponent
      (no annealing, no diameter): the plain fixed-count iteration ott-jax also
      runs, for comparisons and convergence checks; upstream uses True.
  """
  blur: float = 0.05
  exponent: float = 1.0
  scaling: float = 0.5
  max_loop_iterations: int = 13
  cost: str = "l1_sq_l2"
  mixture: float = 1.0
  epsilon_scaling: bool = True

  @property
  def epsilon(self) -> float:
    return float(self.blur) ** float(self.exponent)

  def cost_matrix(self, x: jax.Array, y: jax.Array) -> jax.Array:
    return costs.pairwise_cost(x, y, self.cost, self.mixture)


def geomloss_schedule(diameter: float, blur: float, exponent: float,
                      scaling: float = 0.5) -> list[float]:
  """geomloss 0.2.3's `epsilon_schedule` in float64 (the loop runs once per entry)."""
  p = exponent
  return ([diameter ** p]
          + [float(np.exp(e)) for e in np.arange(p * np.log(diameter), p * np.log(blur),
                                                 p * np.log(scaling))]
          + [blur ** p])


def loop_iterations_for(max_diameter: float, blur: float, exponent: float,
                        scaling: float = 0.5) -> int:
  """Loop iterations needed for every diameter up to `max_diameter` (MNIST: 13)."""
  return len(geomloss_schedule(max_diameter, blur, exponent, scaling))


def uniform_log_weights(mask: jax.Array) -> jax.Array:
  """log(1/count) on valid rows, -inf on padding (count = number of valid rows, >= 1)."""
  count = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
  return jnp.where(mask, -jnp.log(count), -jnp.inf)


def diameter(x: jax.Array, y: jax.Array, x_mask: jax.Array | None = None,
             y_mask: jax.Array | None = None) -> jax.Array:
  """||max - min||_2 of the per-coordinate range over the valid rows of x and y."""
  def masked(a, mask, fill):
    return a if mask is None else jnp.where(mask[:, None], a, fill)
  lo = jnp.minimum(jnp.min(masked(x, x_mask, jnp.inf), 0), jnp.min(masked(y, y_mask, jnp.inf), 0))
  hi = jnp.maximum(jnp.max(masked(x, x_mask, -jnp.inf), 0),
                   jnp.max(masked(y, y_mask, -jnp.inf), 0))
  return sg(jnp.linalg.norm(hi - lo))


def epsilon_schedule(diam: jax.Array, cfg: SinkhornConfig) -> tuple[jax.Array, jax.Array]:
  """(eps (K,), active (K,)) for K = cfg.max_loop_iterations: geomloss's schedule for
  this diameter, padded with inactive iterations.

  The arange part has ceil(log(blur / D) / log(s)) entries (np.arange's length rule).
  If the schedule were longer than K (a diameter above the bound K was derived from),
  its finest arange values would be dropped, never the final blur^p step. D is clamped
  below at blur / 1000 (D = 0 has no schedule).
  """
  k = cfg.max_loop_iterations
  if not cfg.epsilon_scaling:
    return jnp.full((k,), cfg.epsilon, jnp.float32), jnp.ones((k,), bool)
  p, s = float(cfg.exponent), float(cfg.scaling)
  log_d = jnp.log(jnp.maximum(diam, cfg.blur * 1e-3))
  n_arange = jnp.clip(jnp.ceil((math.log(cfg.blur) - log_d) / math.log(s)), 0, k - 2)
  i = jnp.arange(k, dtype=jnp.float32)
  coarse = jnp.exp(p * log_d + jnp.maximum(i - 1.0, 0.0) * p * math.log(s))
  eps = jnp.where(i <= n_arange, coarse, cfg.epsilon)
  return sg(eps), i <= n_arange + 1


def softmin(eps: jax.Array, cost: jax.Array, h: jax.Array) -> jax.Array:
  """-eps * logsumexp_j(h_j - C_ij / eps): geomloss's soft c-transform (rows of C)."""
  return -eps * jax.nn.logsumexp(h[None, :] - cost / eps, axis=1)


def cross_potentials(c_xy: jax.Array, log_a: jax.Array, log_b: jax.Array, eps: jax.Array,
                     active: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The loop for OT(a, b) (no gradient): (f on the rows x, g on the columns y)."""
  c_xy = sg(c_xy)
  c_yx = c_xy.T

  def body(i, fg):
    f, g = fg
    e = eps[i]
    f_new = 0.5 * (f + softmin(e, c_xy, log_b + g / e))
    g_new = 0.5 * (g + softmin(e, c_yx, log_a + f / e))
    return jnp.where(active[i], f_new, f), jnp.where(active[i], g_new, g)

  init = (softmin(eps[0], c_xy, log_b), softmin(eps[0], c_yx, log_a))
  return jax.lax.fori_loop(0, eps.shape[0], body, init)


def symmetric_potential(c_xx: jax.Array, log_a: jax.Array, eps: jax.Array,
                        active: jax.Array) -> jax.Array:
  """The loop for OT(a, a) of geomloss's debiased divergence (no gradient)."""
  c_xx = sg(c_xx)

  def body(i, f):
    e = eps[i]
    return jnp.where(active[i], 0.5 * (f + softmin(e, c_xx, log_a + f / e)), f)

  return jax.lax.fori_loop(0, eps.shape[0], body, softmin(eps[0], c_xx, log_a))


def _extrapolate(cfg, x, y, log_b, g):
  """The final, differentiated half-step: the potential on x given g on y."""
  e = cfg.epsilon
  return softmin(e, cfg.cost_matrix(x, sg(y)), sg(log_b + g / e))


def _weighted_sum(log_w: jax.Array, potential: jax.Array) -> jax.Array:
  # exp(-inf) = 0 on padding; the potential there is finite, so 0 * it = 0.
  return jnp.sum(jnp.exp(log_w) * potential)


def entropic_ot(x: jax.Array, y: jax.Array, cfg: SinkhornConfig, *,
                x_mask: jax.Array | None = None, y_mask: jax.Array | None = None,
                grad_y: bool = True) -> jax.Array:
  """geomloss's OT_eps(x, y) (`debias=False`) with its gradients, weights uniform over
  the valid rows (mask True; None = all rows valid). Padded rows do not affect the
  value or any gradient. grad_y=False treats y as a constant (real data), which saves
  one cost matrix; the value is the same.
  """
  x_mask = jnp.ones(x.shape[0], bool) if x_mask is None else x_mask
  y_mask = jnp.ones(y.shape[0], bool) if y_mask is None else y_mask
  log_a, log_b = uniform_log_weights(x_mask), uniform_log_weights(y_mask)
  eps, active = epsilon_schedule(diameter(x, y, x_mask, y_mask), cfg)
  c_xy = cfg.cost_matrix(x, sg(y))  # one matrix: the loop uses its value only
  f, g = cross_potentials(c_xy, log_a, log_b, eps, active)
  e = cfg.epsilon
  f_x = softmin(e, c_xy, sg(log_b + g / e))
  c_yx = cfg.cost_matrix(y, sg(x)) if grad_y else sg(c_xy).T
  g_y = softmin(e, c_yx, sg(log_a + f / e))
  return _weighted_sum(log_a, f_x) + _weighted_sum(log_b, g_y)


def sinkhorn_divergence(x: jax.Array, y: jax.Array, cfg: SinkhornConfig, *,
                        x_mask: jax.Array | None = None,
                        y_mask: jax.Array | None = None) -> jax.Array:
  """geomloss's debiased divergence OT(x, y) - OT(x, x)/2 - OT(y, y)/2 (`debias=True`):
  <alpha, f_xy - f_xx> + <beta, g_xy - g_yy>, all four loops on one schedule (the
  diameter of x and y)."""
  x_mask = jnp.ones(x.shape[0], bool) if x_mask is None else x_mask
  y_mask = jnp.ones(y.shape[0], bool) if y_mask is None else y_mask
  log_a, log_b = uniform_log_weights(x_mask), uniform_log_weights(y_mask)
  eps, active = epsilon_schedule(diameter(x, y, x_mask, y_mask), cfg)
  f, g = cross_potentials(cfg.cost_matrix(sg(x), sg(y)), log_a, log_b, eps, active)
  f_xx = symmetric_potential(cfg.cost_matrix(sg(x), sg(x)), log_a, eps, active)
  g_yy = symmetric_potential(cfg.cost_matrix(sg(y), sg(y)), log_b, eps, active)
  f_x = _extrapolate(cfg, x, y, log_b, g)
  g_y = _extrapolate(cfg, y, x, log_a, f)
  f_xx = _extrapolate(cfg, x, x, log_a, f_xx)
  g_yy = _extrapolate(cfg, y, y, log_b, g_yy)
  return _weighted_sum(log_a, f_x - f_xx) + _weighted_sum(log_b, g_y - g_yy)
