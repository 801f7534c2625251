"""Tests of the evaluation classifiers, their protocols and the scalar metrics.

Data: scikit-learn's bundled 8x8 digits (used at 8x8 where the model allows it, which
keeps the CPU cost low; upsampled x3 and padded to 28x28 for the LeNet).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from dpgen_jax.evaluation import auroc
from dpgen_jax.evaluation import classifier_accuracy as ca
from dpgen_jax.evaluation import classifier_training as ct
from dpgen_jax.evaluation import feature_extractor, inception_score, postprocessing
from dpgen_jax.models import classifiers


@pytest.fixture(scope="module")
def digits():
  """(train_x, train_y, test_x, test_y): 1400 / 397 shuffled 8x8x1 digits in [0, 1]."""
  d = load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(x))
  x, y = x[perm], y[perm]
  return x[:1400], y[:1400], x[1400:], y[1400:]


def _to_28(x):
  """8x8 -> 24x24 (nearest) -> 28x28 (zero border), like an MNIST digit."""
  big = np.kron(x[..., 0], np.ones((3, 3), np.float32))
  return np.pad(big, ((0, 0), (2, 2), (2, 2)))[..., None]


def _init(model, shape, seed=0):
  # jit: an eager init compiles every small op separately (seconds on CPU).
  return jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros(shape))


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
  params = _init(classifiers.DpganCNN(10), (1, 28, 28, 1))["params"]
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


def test_lenet_features_are_penultimate_pre_relu():
  model = classifiers.LeNet5(10)
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  variables = _init(model, x.shape, seed=1)
  logits, feats = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, features=True)))(
      variables, x)
  assert feats.shape == (4, classifiers.LENET_FEATURE_DIM)
  fc3 = variables["params"]["fc3"]
  np.testing.assert_allclose(logits, jax.nn.relu(feats) @ fc3["kernel"] + fc3["bias"],
                             rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------
# Generic trainer and evaluation.


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
  variables = _init(model, x[:1].shape)
  proba = ct.predict_proba(model, variables, x, batch_size=64)  # 397 = 6 * 64 + 13
  assert proba.shape == (len(x), 10)
  np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(ct.accuracy(model, variables["params"], x, y, batch_size=100),
                             np.mean(proba.argmax(1) == y))


def test_accuracy_at_best_selection_epoch_real_vs_noise(digits):
  train_x, train_y, test_x, test_y = digits
  real = ca.accuracy_at_best_selection_epoch(train_x, train_y, test_x, test_y, 10, epochs=4,
                                             num_select=300)
  assert real["accuracy"] > 0.9
  assert len(real["selection_accuracy"]) == len(real["test_accuracy"]) == 4
  best = ca.select_epoch(real["selection_accuracy"])
  assert real["selected_epoch"] == best + 1
  assert real["accuracy"] == real["test_accuracy"][best]
  rng = np.random.default_rng(0)
  noise_x = rng.uniform(size=train_x.shape).astype(np.float32)
  noise_y = rng.integers(0, 10, size=len(train_x))
  noise = ca.accuracy_at_best_selection_epoch(noise_x, noise_y, test_x, test_y, 10, epochs=4,
                                              num_select=300)
  assert noise["accuracy"] < 0.2


def test_select_epoch_first_best_on_ties():
  assert ca.select_epoch([0.80, 0.91, 0.95, 0.95, 0.93]) == 2
  assert ca.select_epoch([0.5]) == 0


def test_early_stopping_rule():
  stopper = ca.EarlyStopping(patience=2)
  curve = [0.5, 0.6, 0.6, 0.7, 0.65, 0.7, 0.9]
  stops = [stopper.update(e, a, f"w{e}") for e, a in enumerate(curve, start=1)]
  # 0.6 at epoch 3 and 0.7 at epoch 6 do not beat the best strictly.
  assert stops == [False, False, False, False, False, True, False]
  assert stopper.best_epoch == 7 and stopper.best_variables == "w7"
  first = ca.EarlyStopping(patience=1)
  assert first.update(1, 0.0) is False and first.best_epoch == 1  # epoch 1 always counts
  assert first.update(2, 0.0) is True and first.best_epoch == 1


def test_accuracy_with_early_stopping_logreg_and_mlp(digits):
  # 28x28 inputs: with 784 features Adam at lr 1e-4 converges in tens of epochs.
  train_x, train_y, test_x, test_y = _to_28(digits[0]), digits[1], _to_28(digits[2]), digits[3]
  for kind in ("logreg", "mlp"):
    result = ca.accuracy_with_early_stopping(kind, train_x, train_y, test_x, test_y, 10,
                                             max_epochs=60)
    assert result["accuracy"] > 0.85, (kind, result["accuracy"])
    assert result["epochs_run"] == len(result["val_accuracy"]) <= 60
    assert result["best_val_accuracy"] == max(result["val_accuracy"])
  with pytest.raises(ValueError):
    ca.accuracy_with_early_stopping("svm", train_x, train_y, test_x, test_y, 10)


def test_accuracy_with_early_stopping_cnn_runs(digits):
  train_x, train_y, test_x, test_y = digits
  result = ca.accuracy_with_early_stopping("cnn", _to_28(train_x[:300]), train_y[:300],
                                           _to_28(test_x[:100]), test_y[:100], 10,
                                           max_epochs=2, patience=1)
  assert 1 <= result["epochs_run"] <= 2 and 0.0 <= result["accuracy"] <= 1.0


def test_threshold_background():
  x = jnp.array([0.0, 0.2, 0.49, 0.5, 0.9])
  np.testing.assert_allclose(postprocessing.threshold_background(x), [0.0, 0.0, 0.0, 0.5, 0.9])


def test_average_over_seeds():
  def metric(scale, *, seed):
    return {"accuracy": scale * seed, "curve": [seed], "name": "x", "flag": True}

  out = ca.average_over_seeds(metric, [1, 2, 3], 0.1)
  assert out["mean"] == {"accuracy": pytest.approx(0.2)}
  assert out["std"]["accuracy"] == pytest.approx(np.std([0.1, 0.2, 0.3]))
  assert out["seeds"] == [1, 2, 3] and len(out["runs"]) == 3


# ----------------------------------------------------------------------------------
# AUROC and Inception Score.

_Y = np.array([0, 2, 1, 2])
_P = np.array([[0.7, 0.2, 0.1],
               [0.1, 0.3, 0.6],
               [0.3, 0.4, 0.3],
               [0.5, 0.1, 0.25]])


def test_micro_auroc_hand_example():
  # Raveled one-hot: positive scores 0.7, 0.6, 0.4, 0.25; negatives
  # 0.2 0.1 0.1 0.3 0.3 0.3 0.5 0.1. Pairs won: 8 + 8 + 7 + 4 = 27 of 4 * 8.
  assert auroc.micro_auroc(_Y, _P, 3) == pytest.approx(27 / 32)


def test_per_class_auroc_hand_example():
  # Class 2: positives 0.6, 0.25 vs negatives 0.1, 0.3 -> 3 of 4 pairs.
  assert auroc.per_class_auroc(_Y, _P, 3) == pytest.approx([1.0, 1.0, 0.75])
  assert np.isnan(auroc.per_class_auroc(_Y, _P, 4)[3])  # class 3 never occurs


def test_micro_auroc_of_classifiers(digits):
  train_x, train_y, test_x, test_y = digits
  out = auroc.micro_auroc_of_classifiers(train_x[:400], train_y[:400], test_x, test_y, 10)
  assert out["auroc_lr"] > 0.95 and out["auroc_mlp"] > 0.95
  assert len(out["per_class_lr"]) == len(out["per_class_mlp"]) == 10


def test_inception_score_extremes():
  k = 10
  confident = np.eye(k)[np.tile(np.arange(k), 100)]  # every split sees each class 10x
  mean, std = inception_score.inception_score(confident, splits=10)
  assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)
  same = np.tile(np.random.default_rng(0).dirichlet(np.ones(k)), (1000, 1))
  mean, std = inception_score.inception_score(same, splits=10)
  assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_matches_upstream_loop():
  probs = np.random.default_rng(1).dirichlet(np.ones(10) * 0.3, size=1003)
  scores = []
  for i in range(10):  # GS-WGAN's get_inception_score
    part = probs[(i * probs.shape[0] // 10):((i + 1) * probs.shape[0] // 10), :]
    kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
    scores.append(np.exp(np.mean(np.sum(kl, 1))))
  assert inception_score.inception_score(probs) == pytest.approx(
      (np.mean(scores), np.std(scores)), rel=1e-12)


# ----------------------------------------------------------------------------------
# LeNet feature extractor.


def test_lenet_feature_extractor(digits):
  train_x, train_y, test_x, test_y = (_to_28(digits[0]), digits[1], _to_28(digits[2]), digits[3])
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
