"""Readers for the on-disk formats of each dataset.

Each `read_*` takes a folder and returns (train_x, train_y, test_x, test_y) as numpy
arrays already scaled (images in [0, 1]), or None when the folder does not hold the
files. A folder that holds the files but in a broken state raises ValueError.
"""

import os

import numpy as np

from dpgen_jax.data import idx

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
THYROID_FILES = ("ann-train.data", "ann-test.data")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_mnist_like(folder: str) -> Arrays | None:
  """MNIST / Fashion-MNIST from the four IDX files (raw or .gz)."""
  paths = [idx.find_idx(folder, stem) for stem in MNIST_FILES]
  if any(p is None for p in paths):
    return None
  train_x, train_y, test_x, test_y = (idx.read_idx(p) for p in paths)
  if len(train_x) != len(train_y) or len(test_x) != len(test_y):
    raise ValueError(f"{folder}: image and label files disagree in length.")
  to_float = lambda a: (a.astype(np.float32) / 255.0)[..., None]
  return (to_float(train_x), train_y.astype(np.int32),
          to_float(test_x), test_y.astype(np.int32))


def read_thyroid_table(path: str) -> tuple[np.ndarray, np.ndarray]:
  """One UCI ann-thyroid file: 21 features then the class (1, 2, 3) per row."""
  rows = np.loadtxt(path, dtype=np.float64)  # whitespace split drops the trailing blanks
  if rows.ndim != 2 or rows.shape[1] != 22:
    raise ValueError(f"{path}: expected 22 columns (21 features + class), found "
                     f"{rows.shape[-1]}.")
  labels = rows[:, 21].astype(np.int32) - 1
  if labels.min() < 0 or labels.max() > 2:
    raise ValueError(f"{path}: classes must be 1, 2 or 3.")
  return rows[:, :21], labels


def read_thyroid(folder: str) -> Arrays | None:
  """UCI ann-thyroid, scaled column-wise by the *training* maxima of |x|.

  Upstream (dpcgan) scaled train and test separately, which leaks test statistics
  into the preprocessing (dpcgan.md §7 #3); the training maxima are used for both
  here. The scaling uses private training data, as upstream; with the published
  files it is the identity on 17 of 21 columns, which are already in [0, 1].
  """
  paths = [os.path.join(folder, f) for f in THYROID_FILES]
  if not all(os.path.isfile(p) for p in paths):
    return None
  train_x, train_y = read_thyroid_table(paths[0])
  test_x, test_y = read_thyroid_table(paths[1])
  scale = np.abs(train_x).max(axis=0)
  scale[scale == 0] = 1.0
  return ((train_x / scale).astype(np.float32), train_y,
          (test_x / scale).astype(np.float32), test_y)


def read_npz(folder: str, name: str) -> Arrays | None:
  """Any dataset as `<folder>/<name>.npz` with arrays x_train, y_train, x_test, y_test.

  Images must be NHWC, either uint8 (scaled by 1/255 here) or floats in [0, 1].
  This is the format to prepare once for a dataset that has no raw files here
  (e.g. CelebA at 32x32 prepared on a machine with internet access).
  """
  path = os.path.join(folder, name + ".npz")
  if not os.path.isfile(path):
    return None
  with np.load(path) as f:
    missing = [k for k in NPZ_KEYS if k not in f]
    if missing:
      raise ValueError(f"{path} lacks arrays {missing}; expected {list(NPZ_KEYS)}.")
    arrays = [f[k] for k in NPZ_KEYS]
  out = []
  for i, a in enumerate(arrays):
    if i % 2 == 0:
      a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    else:
      a = a.astype(np.int32)
    out.append(a)
  return tuple(out)


def read_digits() -> Arrays:
  """scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 stratified, seed 0.

  Pixel values 0..16 are scaled to [0, 1]. Bundled with scikit-learn: never needs a
  download, so it is the dataset of quick runs and tests.
  """
  from sklearn import datasets as sk_datasets
  from sklearn.model_selection import train_test_split
  digits = sk_datasets.load_digits()
  x = (digits.images.astype(np.float32) / 16.0)[..., None]
  y = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = train_test_split(
      x, y, test_size=0.2, random_state=0, stratify=y)
  return train_x, train_y, test_x, test_y
