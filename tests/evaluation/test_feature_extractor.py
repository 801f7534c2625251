"""Tests of the LeNet feature extractor (fid_lenet, is_lenet)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.evaluation import feature_extractor
from dpgen_jax.models import classifiers
from tests.evaluation.classifier_helpers import init_variables, to_28


def test_lenet_features_are_penultimate_pre_relu():
  model = classifiers.LeNet5(10)
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  variables = init_variables(model, x.shape, seed=1)
  logits, feats = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, features=True)))(
      variables, x)
  assert feats.shape == (4, classifiers.LENET_FEATURE_DIM)
  fc3 = variables["params"]["fc3"]
  np.testing.assert_allclose(logits, jax.nn.relu(feats) @ fc3["kernel"] + fc3["bias"],
                             rtol=1e-5, atol=1e-6)


def test_lenet_feature_extractor(digits):
  train_x, train_y, test_x, test_y = (to_28(digits[0]), digits[1], to_28(digits[2]), digits[3])
  variables, meta = feature_extractor.train_lenet_feature_extractor(
      train_x, train_y, 10, epochs=6, test_x=test_x, test_y=test_y)
  assert meta["test_accuracy"] > 0.9
  assert meta["feature_dim"] == feature_extractor.FEATURE_DIM == 84
  features = feature_extractor.lenet_feature_fn(variables, batch_size=128)(test_x)
  assert features.shape == (len(test_x), 84) and features.dtype == jnp.float32
  # Chunking and padding do not change the features.
  again = feature_extractor.lenet_feature_fn(variables, batch_size=64)(test_x[:100])
  np.testing.assert_allclose(again, features[:100], rtol=1e-5, atol=1e-5)
  # The softmax head (a domain classifier for the Inception Score) agrees with it.
  proba = np.asarray(feature_extractor.lenet_proba_fn(variables, batch_size=128)(test_x))
  np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
  assert np.mean(proba.argmax(1) == test_y) == pytest.approx(meta["test_accuracy"])
