"""methods/dp_ntk.py: the closed-form NTK features of the one-hidden-layer network."""

import jax
import numpy as np

from dpgen_jax.methods import dp_ntk
from tests.methods.test_mean_embedding import adversarial_records


def test_ntk_closed_form_equals_autodiff():
  features = dp_ntk.NTKFeatures(784, 32, 10, seed=3)
  x = adversarial_records()[:6]
  grads = jax.vmap(jax.grad(dp_ntk.ntk_output_sum), in_axes=(None, 0))(features.params, x)
  norms = np.sqrt(sum(np.sum(np.square(np.asarray(g)).reshape(len(x), -1), 1)
                      for g in jax.tree.leaves(grads)))
  closed = features.full_features(x)
  for k in ("w1", "b1", "w2", "b2"):
    np.testing.assert_allclose(np.asarray(closed[k]),
                               np.asarray(grads[k]) / norms.reshape((-1,) + (1,) *
                                                                     (grads[k].ndim - 1)),
                               rtol=2e-4, atol=1e-6)
