"""An offline FID feature extractor: a LeNet-5 trained on the real training set.

`fid_lenet` is the Fréchet distance between 84-d LeNet features (the pre-ReLU
output of the penultimate dense layer `fc2` of `models.classifiers.LeNet5`, see its
docstring) of generated and real images. Unlike FID-Inception it needs no
downloaded weights and is cheap on a CPU (on the 2-core development machine,
shared with other jobs: ~4 min to train on 60k MNIST images, ~10 s to extract
60k features), but its values depend on the trained weights: compare only numbers
computed with the same cached parameters (same data, seed and epochs).

Training recipe (chosen here, not an upstream protocol): inputs mapped to
[-1, 1] (2x - 1), Adam lr 1e-3, batch 128, 10 epochs, softmax cross-entropy; it
reaches 99.0% test accuracy on MNIST (seed 0). Being trained on real data, it is
an evaluation tool outside the generator's privacy guarantee, like the real
reference statistics; cache it per dataset.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax.evaluation import classifier_training
from dpgen_jax.models import classifiers

Array = Any

FEATURE_DIM = classifiers.LENET_FEATURE_DIM  # 84


def _preprocess(images: Array) -> jax.Array:
  return jnp.asarray(images, jnp.float32) * 2.0 - 1.0


def _model_for(variables: dict[str, Any]) -> classifiers.LeNet5:
  return classifiers.LeNet5(num_classes=int(variables["params"]["fc3"]["bias"].shape[0]))


def train_lenet_feature_extractor(train_x: Array, train_y: Array, num_classes: int, *,
                                  seed: int = 0, epochs: int = 10, batch_size: int = 128,
                                  lr: float = 1e-3, test_x: Array | None = None,
                                  test_y: Array | None = None,
                                  ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Trains the LeNet-5 feature extractor on real (train_x, train_y).

  Args:
    train_x: (N, H, W, C) images in [0, 1] (H = W = 28 or 32).
    train_y: (N,) int labels in [0, num_classes).
    num_classes: number of classes of the classification head.
    seed, epochs, batch_size, lr: the training recipe (module docstring).
    test_x, test_y: optional real held-out data; its accuracy goes in the metadata.

  Returns:
    (variables, metadata). `variables` is the Flax variables dict to cache and pass
    to `lenet_feature_fn`. `metadata` is JSON-serialisable: 'architecture',
    'feature_dim' (84),
    'feature_layer', 'input_shape', 'num_classes', 'seed', 'epochs', 'batch_size',
    'lr', 'preprocessing', 'train_loss' (per epoch), 'test_accuracy' (or None).
  """
  model = classifiers.LeNet5(num_classes)
  variables, losses = classifier_training.train_classifier(
      model, _preprocess(train_x), train_y, epochs=epochs, batch_size=batch_size,
      optimizer=classifier_training.torch_adam(lr), seed=seed)
  test_acc = None
  if test_x is not None and test_y is not None:
    test_acc = classifier_training.accuracy(model, variables, _preprocess(test_x), test_y, 1000)
  metadata = {
      "architecture": "LeNet5 (GS-WGAN evaluation/classification_networks/lenet.py)",
      "feature_dim": FEATURE_DIM,
      "feature_layer": "fc2, before ReLU",
      "input_shape": list(np.shape(train_x)[1:]),
      "num_classes": num_classes,
      "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
      "preprocessing": "2x - 1",
      "train_loss": losses,
      "test_accuracy": test_acc,
  }
  return variables, metadata


def lenet_feature_fn(variables: dict[str, Any], batch_size: int = 1000,
                     ) -> Callable[[Array], jax.Array]:
  """A function images (N, H, W, C) in [0, 1] -> features (N, 84) float32.

  The returned function preprocesses exactly as in training and runs the network
  in `batch_size` chunks under one jit (compiled once per input shape); its output
  stays on device. Feed it to `frechet.feature_statistics` or, chunk by chunk, to
  `frechet.StreamingStatistics`.
  """
  model = _model_for(variables)
  return functools.partial(_lenet_apply, model, batch_size, True, variables)


def lenet_proba_fn(variables: dict[str, Any], batch_size: int = 1000,
                   ) -> Callable[[Array], jax.Array]:
  """A function images in [0, 1] -> (N, K) softmax of the trained LeNet head.

  The LeNet is a classifier of the real domain, so its probabilities can stand in
  for GS-WGAN's VGG11-BN in `inception_score.inception_score` when that network
  is too expensive to train (name the result accordingly, e.g. `is_lenet`).
  """
  return functools.partial(_lenet_apply, _model_for(variables), batch_size, False,
                           variables)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _lenet_apply(model: classifiers.LeNet5, batch_size: int, features: bool,
                 variables: dict[str, Any], images: Array) -> jax.Array:
  x = _preprocess(images)
  n = x.shape[0]
  num_batches = -(-n // batch_size)
  x = jnp.pad(x, ((0, num_batches * batch_size - n),) + ((0, 0),) * (x.ndim - 1))
  x = x.reshape((num_batches, batch_size) + x.shape[1:])
  out = jax.lax.map(lambda b: model.apply(variables, b, features=features), x)
  out = out.reshape(num_batches * batch_size, -1)[:n]
  return out if features else jax.nn.softmax(out, axis=-1)
