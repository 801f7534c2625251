"""DP-Sinkhorn's generator losses on label-augmented features (dp_sinkhorn.md §2.1, §2.3).

Features: concat(flatten(image in [-1, 1]), s * one_hot(label)), s = `label_scale`
(upstream `embed_multiplier` = 15). Labels are constants: a class mismatch adds 2 s^2
to the squared-L2 cost and 2 s m to the L1 cost, so transport pairs classes.

Losses (names say what they compute; upstream's `--debias` flag is inverted):
  semi_debiased_loss   2 OT(X[0:n], Y) - OT(X[0:n], X[n':n+n'])   (MNIST, p = 0.2)
  full_divergence_loss OT(X, Y) - OT(X, X)/2 - OT(Y, Y)/2          (CelebA)
with OT and the divergence of solver.py. Y is a padded real batch with a mask.
"""

import jax
import jax.numpy as jnp

from dpgen_jax.sinkhorn import solver


def features(images: jax.Array, labels: jax.Array, num_classes: int,
             label_scale: float) -> jax.Array:
  """(n, H, W, C) images in [-1, 1] and int labels -> (n, H*W*C + num_classes) rows.

  The pixel order (NHWC here, NCHW upstream) does not matter: both costs are sums over
  coordinates.
  """
  flat = images.reshape(images.shape[0], -1)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=flat.dtype)
  return jnp.concatenate([flat, label_scale * onehot], axis=1)


def semi_debiased_loss(x_main: jax.Array, x_second: jax.Array, y: jax.Array,
                       y_mask: jax.Array, cfg: solver.SinkhornConfig) -> jax.Array:
  """2 OT(x_main, y) - OT(x_main, x_second) (paper Definition 4.3).

  `x_second` is X[n':n+n'], the last n - n' main fakes followed by the n' extra fakes
  (for n' = 0 it is x_main itself: the biased OT(X, X)). The real term only sees the
  valid rows of y (`y_mask`); with no valid row at all (an empty Poisson draw) it is 0,
  so the loss then depends on no data and no padding.
  """
  has_real = jnp.any(y_mask)
  # Keeps the discarded branch finite (an all-padding batch would give inf potentials).
  safe_mask = y_mask | ~has_real
  cross = solver.entropic_ot(x_main, y, cfg, y_mask=safe_mask, grad_y=False)
  self_term = solver.entropic_ot(x_main, x_second, cfg)
  return 2.0 * jnp.where(has_real, cross, 0.0) - self_term


def full_divergence_loss(x: jax.Array, y: jax.Array, y_mask: jax.Array,
                         cfg: solver.SinkhornConfig) -> jax.Array:
  """geomloss's debiased divergence between the fakes x and the valid rows of y (0 for
  an empty real batch)."""
  has_real = jnp.any(y_mask)
  value = solver.sinkhorn_divergence(x, y, cfg, y_mask=y_mask | ~has_real)
  return jnp.where(has_real, value, 0.0)
