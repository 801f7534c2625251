"""Datasets by name, and where to look for them.

Sources, first hit wins (docs/configs.md, "Data"):
  1. `config.data.data_dir` (the files directly in it, or in data_dir/<name>/);
  2. `$DPGEN_DATA_DIR/<name>/`;
  3. system folders (Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist);
  4. tensorflow-datasets (prepared locally, or downloaded when online).
Any source may also hold `<name>.npz` (see loaders.read_npz).
"""

import dataclasses
import os
from typing import Callable

import numpy as np

from dpgen_jax import errors
from dpgen_jax.data import loaders
from dpgen_jax.data.dataset import DataSpec, Dataset


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  kind: str
  num_classes: int
  example_shape: tuple[int, ...]
  num_train: int  # size of the standard training split (what --mode=privacy assumes)
  num_test: int
  read_folder: Callable[[str], loaders.Arrays | None] | None
  files_hint: str
  folder_aliases: tuple[str, ...] = ()
  system_dirs: tuple[str, ...] = ()
  tfds_name: str | None = None
  tfds_kwargs: dict = dataclasses.field(default_factory=dict)
  class_names: tuple[str, ...] = ()
  builtin: Callable[[], loaders.Arrays] | None = None
  # Other train/test splits, chosen with config.data.split (unset: the standard ones).
  split_variants: dict[str, "SplitVariant"] = dataclasses.field(default_factory=dict)
  npz_name: str = ""  # the <npz_name>.npz file to look for ("" = name)


@dataclasses.dataclass(frozen=True)
class SplitVariant:
  """A non-standard choice of splits (e.g. DP-Sinkhorn's CelebA: 'train' only)."""
  num_train: int
  num_test: int
  tfds_train_split: str
  tfds_test_split: str
  npz_name: str
  files_hint: str


_DIGIT_NAMES = tuple(str(i) for i in range(10))

REGISTRY: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", kind="image", num_classes=10, example_shape=(28, 28, 1),
        num_train=60000, num_test=10000,
        read_folder=loaders.read_mnist_like,
        files_hint=", ".join(f + "[.gz]" for f in loaders.MNIST_FILES),
        system_dirs=("/usr/share/datasets/mnist",),
        tfds_name="mnist", tfds_kwargs=dict(train_split="train", test_split="test"),
        class_names=_DIGIT_NAMES),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", kind="image", num_classes=10, example_shape=(28, 28, 1),
        num_train=60000, num_test=10000,
        read_folder=loaders.read_mnist_like,
        files_hint=", ".join(f + "[.gz]" for f in loaders.MNIST_FILES),
        folder_aliases=("fashion-mnist",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        tfds_name="fashion_mnist", tfds_kwargs=dict(train_split="train", test_split="test"),
        class_names=("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Boot")),
    "celeb_a": DatasetInfo(
        name="celeb_a", kind="image", num_classes=2, example_shape=(32, 32, 3),
        num_train=182637, num_test=19962,
        read_folder=None, files_hint="celeb_a.npz (x_train, y_train, x_test, y_test; 32x32 RGB)",
        folder_aliases=("celeba", "celeb-a"),
        tfds_name="celeb_a",
        # dpgan-revisit: train = train + valid (182,637), test = test; label = 'Male'.
        tfds_kwargs=dict(train_split="train+validation", test_split="test", image_size=32,
                         label_attribute="Male"),
        # DP-Sinkhorn (data.split = 'train'): train = 'train' (162,770), test = 'validation'.
        split_variants={"train": SplitVariant(
            num_train=162770, num_test=19867, tfds_train_split="train",
            tfds_test_split="validation", npz_name="celeb_a_train",
            files_hint="celeb_a_train.npz (x_train, y_train from the 'train' split, x_test, "
                       "y_test from 'validation'; 32x32 RGB)")},
        class_names=("F", "M")),
    "digits": DatasetInfo(
        name="digits", kind="image", num_classes=10, example_shape=(8, 8, 1),
        num_train=1437, num_test=360,
        read_folder=None, files_hint="(bundled with scikit-learn)",
        builtin=loaders.read_digits, class_names=_DIGIT_NAMES),
    "thyroid": DatasetInfo(
        name="thyroid", kind="tabular", num_classes=3, example_shape=(21,),
        num_train=3772, num_test=3428,
        read_folder=loaders.read_thyroid, files_hint=", ".join(loaders.THYROID_FILES),
        class_names=("hyperthyroid", "hypothyroid", "normal")),
}


def dataset_info(name: str, split: str | None = None) -> DatasetInfo:
  """The registry entry, with the split variant `split` (config.data.split) applied."""
  if name not in REGISTRY:
    raise errors.ConfigError(
        f"Unknown dataset {name!r} (config.data.name). Known datasets: "
        f"{', '.join(sorted(REGISTRY))}.")
  info = REGISTRY[name]
  if not split:
    return info
  if split not in info.split_variants:
    raise errors.ConfigError(
        f"Dataset {name!r} has no split variant {split!r} (config.data.split); "
        f"known: {sorted(info.split_variants) or 'none'} (or leave it unset).")
  v = info.split_variants[split]
  return dataclasses.replace(
      info, num_train=v.num_train, num_test=v.num_test, npz_name=v.npz_name,
      files_hint=v.files_hint,
      tfds_kwargs=dict(info.tfds_kwargs, train_split=v.tfds_train_split,
                       test_split=v.tfds_test_split))


def _folder_candidates(info: DatasetInfo, data_config) -> list[tuple[str, str]]:
  """(label, folder) pairs to look in, in order."""
  names = (info.name,) + info.folder_aliases
  out = []
  data_dir = data_config.get("data_dir") or None
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
    out.append(("config.data.data_dir", data_dir))
    out += [("config.data.data_dir", os.path.join(data_dir, n)) for n in names]
  env = os.environ.get("DPGEN_DATA_DIR")
  if env:
    out += [("$DPGEN_DATA_DIR", os.path.join(os.path.expanduser(env), n)) for n in names]
  out += [("system folder", d) for d in info.system_dirs]
  return out


def _resize_images(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[1] == size and x.shape[2] == size:
    return x
  import jax
  out = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method="bilinear")
  return np.clip(np.asarray(out), 0.0, 1.0)


def load_dataset(data_config) -> Dataset:
  """Loads `data_config.name` from the first source that has it.

  Raises:
    errors.ConfigError: unknown dataset name.
    errors.DataNotFoundError: no source has it; the message lists every place looked
      at and how to supply the data.
  """
  info = dataset_info(data_config.name, data_config.get("split"))
  npz_name = info.npz_name or info.name
  looked: list[str] = []
  arrays, source = None, None

  if info.builtin is not None:
    arrays, source = info.builtin(), "scikit-learn (bundled)"
  else:
    if not data_config.get("data_dir"):
      looked.append("config.data.data_dir: not set")
    if not os.environ.get("DPGEN_DATA_DIR"):
      looked.append("$DPGEN_DATA_DIR: not set")
    for label, folder in _folder_candidates(info, data_config):
      if not os.path.isdir(folder):
        looked.append(f"{label}: {folder} (no such folder)")
        continue
      try:
        found = loaders.read_npz(folder, npz_name)
        if found is None and info.read_folder is not None:
          found = info.read_folder(folder)
      except (ValueError, OSError, EOFError) as e:
        raise errors.DataNotFoundError(
            f"Dataset {info.name!r}: the files in {folder} could not be read: {e}") from None
      if found is not None:
        arrays, source = found, folder
        break
      looked.append(f"{label}: {folder} (no {info.files_hint} or {npz_name}.npz)")

    if arrays is None and info.tfds_name:
      from dpgen_jax.data import tfds_source
      tfds_dir = data_config.get("tfds_data_dir") or None
      try:
        arrays = tfds_source.read_tfds(info.tfds_name, data_dir=tfds_dir,
                                       download=bool(data_config.get("download", True)),
                                       **info.tfds_kwargs)
        source = f"tensorflow-datasets:{info.tfds_name}"
      except RuntimeError as e:
        looked.append(f"tensorflow-datasets {info.tfds_name!r} "
                      f"({tfds_dir or tfds_source.default_tfds_dir()}): {e}")

  if arrays is None:
    raise errors.DataNotFoundError(
        f"Dataset {info.name!r} was not found. Looked in:\n"
        + "".join(f"  - {line}\n" for line in looked)
        + f"To supply it, put {info.files_hint} (or {npz_name}.npz) in a folder DIR and run "
        f"with --config.data.data_dir=DIR, or set DPGEN_DATA_DIR=PARENT with the files in "
        f"PARENT/{info.name}/"
        + (", or run once with internet access so tensorflow-datasets can download it."
           if info.tfds_name else "."))

  train_x, train_y, test_x, test_y = arrays
  subset = data_config.get("num_train_subset") or None
  if subset:  # train on the first n examples only (they are the private set / the members)
    if subset > len(train_x):
      raise errors.ConfigError(f"data.num_train_subset = {subset} exceeds the {len(train_x)} "
                               f"training examples of {info.name!r}.")
    train_x, train_y = train_x[:subset], train_y[:subset]
  size = data_config.get("image_size") or None
  if size and info.kind == "image":
    train_x, test_x = _resize_images(train_x, size), _resize_images(test_x, size)
  if train_y.size and (train_y.min() < 0 or train_y.max() >= info.num_classes):
    raise errors.DataNotFoundError(
        f"Dataset {info.name!r} from {source}: labels outside 0..{info.num_classes - 1}.")
  return Dataset(name=info.name, kind=info.kind, train_x=train_x, train_y=train_y,
                 test_x=test_x, test_y=test_y, num_classes=info.num_classes,
                 source=source, class_names=info.class_names)


def static_spec(data_config) -> DataSpec:
  """The DataSpec of the standard splits, without loading any data.

  Used by --mode=privacy, which must not need the data; a training run uses the
  loaded data's actual size (and says so if it differs).
  """
  info = dataset_info(data_config.name, data_config.get("split"))
  shape = info.example_shape
  size = data_config.get("image_size") or None
  if size and info.kind == "image":
    shape = (size, size, shape[-1])
  num_train = info.num_train
  if data_config.get("num_train_subset"):
    num_train = min(num_train, int(data_config.get("num_train_subset")))
  return DataSpec(name=info.name, kind=info.kind, example_shape=shape,
                  num_classes=info.num_classes, num_train=num_train,
                  num_test=info.num_test)
