"""Tests of the classifier trainer and its batched evaluation, and of the classifiers it
trains (models/classifiers.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.evaluation import classifier_training as ct
from dpgen_jax.models import classifiers
from tests.evaluation.classifier_helpers import init_variables


def _num_params(model, shape):
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))
  return classifiers.count_params(shapes["params"])


# ----------------------------------------------------------------------------------
# Models.


@pytest.mark.parametrize("model, shape, expected", [
    (classifiers.DpganCNN(10), (1, 28, 28, 1), 1_199_882),
    (classifiers.DpganCNN(2), (1, 32, 32, 3), 1_625_410),
    (classifiers.SinkhornCNN(10), (1, 28, 28, 1), 241_546),
    (classifiers.MLP(10), (1, 28, 28, 1), 79_510),
    (classifiers.LogReg(10), (1, 28, 28, 1), 7_850),
    (classifiers.LeNet5(10), (1, 28, 28, 1), 61_706),
])
def test_param_counts(model, shape, expected):
  assert _num_params(model, shape) == expected


def test_pytorch_default_init_bounds():
  params = init_variables(classifiers.DpganCNN(10), (1, 28, 28, 1))["params"]
  for name, fan_in in [("Conv2d_0", 9), ("Conv2d_1", 288), ("Dense_0", 9216), ("Dense_1", 128)]:
    for leaf in ("kernel", "bias"):
      value = np.abs(np.asarray(params[name][leaf]))
      assert value.max() <= 1 / np.sqrt(fan_in) and value.max() > 0.9 / np.sqrt(fan_in)


def test_matmul_convolution_equals_xla_convolution():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 12, 12, 4))
  for padding in (0, 2):
    conv = {impl: classifiers.Conv2d(5, 3, padding, impl) for impl in ("matmul", "xla")}
    variables = conv["xla"].init(jax.random.PRNGKey(1), x)
    np.testing.assert_allclose(conv["matmul"].apply(variables, x),
                               conv["xla"].apply(variables, x), rtol=1e-5, atol=1e-5)


def test_max_pool_matches_flax_max_pool():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 9, 3))  # odd sizes: floor mode
  np.testing.assert_array_equal(classifiers.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


# ----------------------------------------------------------------------------------
# Training and batched evaluation.


def test_train_classifier_is_deterministic_and_uses_partial_batches(digits):
  x, y = digits[0][:50], digits[1][:50]
  model = classifiers.LogReg(10)
  kwargs = dict(epochs=2, batch_size=64, optimizer=ct.torch_sgd(0.1), seed=3)
  # batch_size > n: each epoch is a single partial batch, which must still train.
  v1, losses = ct.train_classifier(model, x, y, **kwargs)
  v2, _ = ct.train_classifier(model, x, y, **kwargs)
  init = jax.jit(model.init)(jax.random.split(jax.random.PRNGKey(3))[0], x[:1])
  assert len(losses) == 2 and losses[1] < losses[0]
  jax.tree_util.tree_map(np.testing.assert_array_equal, v1, v2)
  assert not np.allclose(v1["params"]["Dense_0"]["kernel"], init["params"]["Dense_0"]["kernel"])


def test_predict_proba_and_accuracy_agree(digits):
  x, y = digits[2], digits[3]
  model = classifiers.MLP(10)
  variables = init_variables(model, x[:1].shape)
  proba = ct.predict_proba(model, variables, x, batch_size=64)  # 397 = 6 * 64 + 13
  assert proba.shape == (len(x), 10)
  np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(ct.accuracy(model, variables["params"], x, y, batch_size=100),
                             np.mean(proba.argmax(1) == y))
