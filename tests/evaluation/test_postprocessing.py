"""Tests of the post-processing of generated images."""

import jax.numpy as jnp
import numpy as np

from dpgen_jax.evaluation import postprocessing


def test_threshold_background():
  x = jnp.array([0.0, 0.2, 0.49, 0.5, 0.9])
  np.testing.assert_allclose(postprocessing.threshold_background(x), [0.0, 0.0, 0.0, 0.5, 0.9])
