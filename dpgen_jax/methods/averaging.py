"""The generator's exponential moving average (a "recipe" option of several methods).

Averaging the iterates of a generator trained on noisy (privatised) gradients lowers
the variance the noise leaves in its parameters; the average is what is sampled and
released. It reads only the parameters, so it is post-processing of the released
updates and costs no privacy.

The decay at the t-th update (t = 0, 1, ...) is min(max_decay, (1 + t) / (10 + t)): a
short warm-up, so the average does not stay near the initialisation when there are few
updates. (GS-WGAN keeps upstream's own schedule, 1 - 1/(t + 1), and uses `blend`.)
"""

import jax
import jax.numpy as jnp


def decay(t, max_decay: float):
  """min(max_decay, (1 + t) / (10 + t)) after update number t (0-based)."""
  t = jnp.asarray(t).astype(jnp.float32)
  return jnp.minimum(max_decay, (1.0 + t) / (10.0 + t))


def blend(average, params, d):
  """d * average + (1 - d) * params, leaf by leaf."""
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, average, params)


def update(average, params, t, max_decay: float):
  """The average after update number t produced `params` (this module's schedule)."""
  return blend(average, params, decay(t, max_decay))


def initial(params, max_decay: float):
  """A copy of `params` when averaging (max_decay > 0), else a size-1 placeholder (the
  state keeps one structure either way)."""
  if max_decay:
    return jax.tree.map(jnp.copy, params)
  return {"unused": jnp.zeros((1,), jnp.float32)}
