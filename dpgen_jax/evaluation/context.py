"""The state the evaluation metrics share across checkpoints: real data and caches.

`EvalContext` holds the dataset and eval config, the LeNet trained once on the real
training split (the feature extractor of fid_lenet and domain classifier of is_lenet),
pytorch-fid's Inception-v3 (fid_inception) and the real-side feature statistics.

Real-side statistics use the test split (as dpgan-revisit) and are cached per dataset,
split, extractor and extractor weights; a cache file records which extractor made it
and is rejected if it does not match, so extractors are never mixed silently.
"""

import hashlib
import json
import os
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np

from dpgen_jax import cache, errors
from dpgen_jax.evaluation import classifier_training, frechet
from dpgen_jax.log import get_logger

Array = Any


def cache_dir(eval_config) -> str:
  path = eval_config.get("cache_dir") or cache.cache_root()
  os.makedirs(path, exist_ok=True)
  return path


class EvalContext:
  """The real data, config and caches that metrics share across checkpoints."""

  def __init__(self, dataset, eval_config):
    self.dataset = dataset
    self.config = eval_config
    self.cache = cache_dir(eval_config)
    self._lenet = None
    self._real_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    self._inception_fn = None

  @property
  def seeds(self) -> list[int]:
    return [int(s) for s in self.config.seeds]

  # ---- LeNet (offline FID extractor and domain classifier) ----

  def lenet(self):
    """(variables, fingerprint) of the LeNet trained on the real training split."""
    if self._lenet is not None:
      return self._lenet
    from dpgen_jax.evaluation import feature_extractor
    d = self.dataset
    epochs = int(self.config.get("lenet_epochs", 10))
    shape = "x".join(str(s) for s in d.train_x.shape[1:])
    path = os.path.join(self.cache, f"lenet_{d.name}_{shape}_n{len(d.train_x)}_e{epochs}.msgpack")
    template = None
    if os.path.exists(path):
      with open(path, "rb") as f:
        blob = f.read()
      template = jax.eval_shape(lambda: feature_extractor.classifiers.LeNet5(
          d.num_classes).init(jax.random.key(0), np.zeros((1,) + d.train_x.shape[1:], np.float32)))
      variables = flax.serialization.from_bytes(template, blob)
      get_logger().info("Loaded the LeNet feature extractor from %s.", path)
    else:
      get_logger().info("Training the LeNet feature extractor on the real %s training split "
                        "(once; cached in %s).", d.name, path)
      variables, meta = feature_extractor.train_lenet_feature_extractor(
          d.train_x, d.train_y, d.num_classes, epochs=epochs, test_x=d.test_x, test_y=d.test_y)
      blob = flax.serialization.to_bytes(variables)
      cache.write_bytes_atomic(path, blob)
      with open(path + ".json", "w") as f:
        json.dump(meta, f, indent=2)
      get_logger().info("LeNet real test accuracy: %.4f", meta["test_accuracy"])
    self._lenet = (variables, "lenet-" + hashlib.sha1(blob).hexdigest()[:12])
    return self._lenet

  def lenet_features(self, images: Array) -> np.ndarray:
    from dpgen_jax.evaluation import feature_extractor
    variables, _ = self.lenet()
    return np.asarray(feature_extractor.lenet_feature_fn(variables)(images))

  def lenet_proba(self, images: Array) -> np.ndarray:
    from dpgen_jax.evaluation import feature_extractor
    variables, _ = self.lenet()
    model = feature_extractor.classifiers.LeNet5(self.dataset.num_classes)
    return classifier_training.predict_proba(model, variables, np.asarray(images) * 2.0 - 1.0,
                                             batch_size=1000)

  # ---- Inception ----

  def inception(self):
    if self._inception_fn is None:
      from dpgen_jax.models import inception
      path = self.config.inception_weights
      variables = inception.load_inception_params(path)
      with open(path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()[:12]
      self._inception_fn = (inception.inception_feature_fn(
          variables, batch_size=int(self.config.get("inception_batch_size", 100))),
          "inception-" + digest)
    return self._inception_fn

  # ---- real statistics ----

  def real_statistics(self, extractor: str, features_fn: Callable[[Array], np.ndarray],
                      fingerprint: str):
    """(mu, sigma) of the real test split under `extractor`, cached on disk."""
    if extractor in self._real_stats:
      return self._real_stats[extractor]
    d = self.dataset
    path = os.path.join(self.cache, f"stats_{d.name}_test_{fingerprint}.npz")
    if os.path.exists(path):
      with np.load(path) as f:
        if str(f["extractor"]) != fingerprint:
          raise errors.UserError(f"{path} was made by {f['extractor']}, not {fingerprint}; "
                                 f"delete it to recompute.")
        stats = (f["mu"], f["sigma"])
    else:
      stats = frechet.feature_statistics(features_fn(d.test_x))
      cache.savez_atomic(path, mu=stats[0], sigma=stats[1], extractor=fingerprint,
                         num_examples=len(d.test_x))
    self._real_stats[extractor] = stats
    return stats
