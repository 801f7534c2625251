"""tensorflow-datasets as the last data source (downloads when online).

Imported lazily: tensorflow-datasets imports TensorFlow, which costs seconds.
"""

import os
import socket

import numpy as np

# tensorflow-datasets retries a failed download for minutes before it gives up; a
# quick reachability check first keeps "no data here" a fast, clear error offline.
_PROBE_HOSTS = (("storage.googleapis.com", 443),)


def network_reachable(timeout: float = 3.0) -> bool:
  for host, port in _PROBE_HOSTS:
    try:
      with socket.create_connection((host, port), timeout=timeout):
        return True
    except OSError:
      continue
  return False


def default_tfds_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def read_tfds(tfds_name: str, *, train_split: str, test_split: str, data_dir: str | None,
              download: bool, image_size: int | None = None,
              label_attribute: str | None = None):
  """Returns (train_x, train_y, test_x, test_y) from tensorflow-datasets.

  Raises RuntimeError with a one-line reason when the dataset is neither prepared
  locally nor downloadable. `label_attribute` picks a binary attribute as the label
  (CelebA: 'Male'); `image_size` resizes images (CelebA: 32, bilinear with
  antialiasing, no centre crop, as dpgan-revisit and DP-Sinkhorn do).
  """
  import absl.logging
  absl.logging.set_verbosity(absl.logging.ERROR)
  import tensorflow as tf
  import tensorflow_datasets as tfds
  tf.config.set_visible_devices([], "GPU")  # keep TensorFlow off the accelerators JAX uses

  data_dir = data_dir or default_tfds_dir()
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    if not download:
      raise RuntimeError(f"not prepared in {data_dir} and config.data.download is False")
    if not network_reachable():
      raise RuntimeError(f"not prepared in {data_dir} and no network to download it")
    try:
      builder.download_and_prepare()
    except Exception as e:  # tfds raises many types; the user needs the reason only
      raise RuntimeError(f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")

  def convert(split: str):
    ds = builder.as_dataset(split=split)

    def to_pair(ex):
      image = ex["image"]
      if image_size is not None:
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        image = tf.clip_by_value(tf.round(image), 0, 255)
      image = tf.cast(image, tf.float32) / 255.0
      label = ex["attributes"][label_attribute] if label_attribute else ex["label"]
      return image, tf.cast(label, tf.int32)

    xs, ys = [], []
    for x, y in tfds.as_numpy(ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE).batch(2048)):
      xs.append(x)
      ys.append(y)
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int32)

  train_x, train_y = convert(train_split)
  test_x, test_y = convert(test_split)
  return train_x, train_y, test_x, test_y
