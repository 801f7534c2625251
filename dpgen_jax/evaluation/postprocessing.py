"""Post-processing of generated images before they are measured.

`threshold_background` is DP-Sinkhorn's (dp_sinkhorn.md §5.1); the eval job applies
it to the generated images once, before every metric, when `eval.threshold_background`
is set.
"""

from typing import Any

import jax.numpy as jnp

Array = Any


def threshold_background(images: Array) -> Array:
  """DP-Sinkhorn's post-processing: pixels below mid-grey become black.

  Upstream sets every negative pixel of the [-1, 1] generated images to -1 before
  all metrics (classifiers and FID); in [0, 1] that is x < 0.5 -> 0. Apply it to
  the generated images once, before every metric, when reproducing DP-Sinkhorn.
  """
  return jnp.where(jnp.asarray(images) < 0.5, 0.0, jnp.asarray(images))
