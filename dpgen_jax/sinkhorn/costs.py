"""Ground costs of DP-Sinkhorn between feature rows (dp_sinkhorn.md §2.2).

Both costs are upstream's (`nv-tlabs/DP-Sinkhorn_code: src/cost_function.py`) with no
halving and no normalisation:

  'sq_l2'     c(x, y) = ||x - y||_2^2                     (CelebA; upstream `default`, p = 2)
  'l1_sq_l2'  c(x, y) = ||x - y||_2^2 + m * ||x - y||_1   (MNIST / Fashion-MNIST; `l1+l2`)

Gradients at ties. The self-term of the semi-debiased loss compares rows that are
identical (they share generated images), so x = y occurs. Upstream's gradient of both
terms is 0 there. The squared norm's gradient 2(x - y) is 0 at a tie by itself; for the
L1 term the sub-gradient is forced to sign(d) with sign(0) = 0 (JAX's `abs` would give
1 at 0), so ties contribute exactly nothing to the image gradient.
"""

import jax
import jax.numpy as jnp

COSTS = ("sq_l2", "l1_sq_l2")


def squared_l2(x: jax.Array, y: jax.Array) -> jax.Array:
  """(n, d), (m, d) -> (n, m): ||x_i||^2 - 2 x_i.y_j + ||y_j||^2.

  The matmul form (as upstream's `default` cost) never materialises the (n, m, d)
  differences, which matters at CelebA's d = 3074. Its gradient w.r.t. x_i is
  2 (x_i - y_j), exactly 0 at a tie. Rounding can make a tie slightly negative;
  upstream does not clamp and neither do we (a clamp would change the gradient).
  """
  xx = jnp.sum(x * x, axis=-1)[:, None]
  yy = jnp.sum(y * y, axis=-1)[None, :]
  return xx - 2.0 * (x @ y.T) + yy


def l1_plus_squared_l2(x: jax.Array, y: jax.Array, mixture: float) -> jax.Array:
  """(n, d), (m, d) -> (n, m): sum_k d_k^2 + mixture * sum_k |d_k|, d = x_i - y_j.

  Computed from the differences (never sqrt(.)^2), with the L1 sub-gradient sign(d)
  and sign(0) = 0.
  """
  d = x[:, None, :] - y[None, :, :]
  l1 = jnp.sum(d * jax.lax.stop_gradient(jnp.sign(d)), axis=-1)
  return jnp.sum(d * d, axis=-1) + mixture * l1


def pairwise_cost(x: jax.Array, y: jax.Array, kind: str, mixture: float = 1.0) -> jax.Array:
  """The (n, m) cost matrix c(x_i, y_j) of `kind` (one of COSTS)."""
  if kind == "sq_l2":
    return squared_l2(x, y)
  if kind == "l1_sq_l2":
    return l1_plus_squared_l2(x, y, mixture)
  raise ValueError(f"unknown cost {kind!r}; known: {COSTS}")


def max_feature_diameter(num_pixels: int, num_classes: int, label_scale: float,
                         pixel_range: float = 2.0) -> float:
  """Largest possible diameter of feature clouds (images in [-1, 1], scaled one-hots).

  The per-coordinate range is at most 2 for a pixel and `label_scale` for a label
  coordinate, so the diameter (L2 norm of the ranges) is at most
  sqrt(num_pixels * 4 + num_classes * s^2): 73.4 for MNIST, 112.9 for CelebA 32x32.
  It fixes how many epsilon-scaling iterations the solver must be able to run.
  """
  return float((num_pixels * pixel_range ** 2 + num_classes * label_scale ** 2) ** 0.5)
