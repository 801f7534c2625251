"""Immediate sensitivity (CSL-GAN's 'is' mode): a data-dependent noise scale. NOT DP.

For g = grad_theta L(theta; X) of a batch loss, the immediate sensitivity is the norm of
the gradient of ||g|| with respect to the inputs X (globally: the largest per-example
norm; per parameter: one value per leaf), and the update is g plus Gaussian noise of
std sigma * IS (times an optional per-leaf scale). The noise scale is computed from the
private batch and is itself not privatised, so no (epsilon, delta) guarantee follows:
the epsilon such a run reports is the nominal DP-SGD value of `nominal_event`, always
shown with the caveat CAVEAT.
"""

from typing import Any

import dp_accounting
import jax
import jax.numpy as jnp

PyTree = Any
CAVEAT = "approximate, not formally DP"


def nominal_event(noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
  """The Poisson-subsampled Gaussian a DP-SGD step with this multiplier would be."""
  return dp_accounting.PoissonSampledDpEvent(
      float(sampling_rate), dp_accounting.GaussianDpEvent(float(noise_multiplier)))


def _safe_norm(x):
  sq = jnp.sum(jnp.square(x))
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def immediate_sensitivity(batch_loss, params, x, *, scaling: PyTree | None = None,
                          per_param: bool = False):
  """Immediate sensitivity of grad_params batch_loss(params, x) with respect to x.

  g = grad_theta L(theta; X). Global: S(X) = ||concat_i(g_i / s_i)||, H = dS/dX,
  IS = max_j ||H_j|| (one value). Per parameter: S_i = ||g_i||, H_i = dS_i/dX,
  IS_i = ||H_i|| over the whole batch tensor (Frobenius, as upstream).
  Returns (g, IS as a scalar or a params-shaped tree of scalars).
  """
  grad_fn = jax.grad(batch_loss)
  g = grad_fn(params, x)
  if per_param:
    def s_vec(xx):
      return jax.tree.map(_safe_norm, grad_fn(params, xx))
    jac = jax.jacrev(s_vec)(x)
    return g, jax.tree.map(lambda h: jnp.sqrt(jnp.sum(jnp.square(h))), jac)

  def s_global(xx):
    gg = grad_fn(params, xx)
    if scaling is not None:
      gg = jax.tree.map(lambda a, s: a / s, gg, scaling)
    return _safe_norm(jnp.concatenate([a.ravel() for a in jax.tree.leaves(gg)]))

  h = jax.grad(s_global)(x)
  per_sample = jnp.sqrt(jnp.sum(jnp.square(h.reshape(h.shape[0], -1)), axis=-1))
  return g, jnp.max(per_sample)


def is_noise(g, sens, key, *, noise_multiplier: float, scaling: PyTree | None, skip: PyTree):
  """g + N(0, (sigma * sens_i * s_i)^2) per leaf; no noise where sens_i = 0 or skipped."""
  if not isinstance(sens, dict):
    sens = jax.tree.map(lambda _: sens, g)
  if scaling is None:
    scaling = jax.tree.map(lambda _: 1.0, g)
  std = jax.tree.map(lambda s, sc, sk: jnp.where(sk | (s == 0), 0.0, noise_multiplier * s * sc),
                     sens, scaling, skip)
  leaves, treedef = jax.tree.flatten(g)
  keys = jax.random.split(key, len(leaves))
  stds = treedef.flatten_up_to(std)
  return jax.tree.unflatten(treedef, [a + s * jax.random.normal(k, a.shape, a.dtype)
                                      for a, s, k in zip(leaves, stds, keys)])
