"""The in-memory dataset every method trains on, and the spec methods build from."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a method needs to know about its data without touching it.

  Attributes:
    name: registry name (`mnist`, `thyroid`, ...).
    kind: 'image' (examples are H x W x C floats in [0, 1]) or 'tabular' (F floats).
    example_shape: shape of one example.
    num_classes: number of labels.
    num_train: number of private training examples N (sets the sampling rate).
    num_test: number of test examples.
  """
  name: str
  kind: str
  example_shape: tuple[int, ...]
  num_classes: int
  num_train: int
  num_test: int


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test arrays plus where they came from.

  Images are float32 NHWC in [0, 1]; tabular rows are float32; labels are int32 in
  [0, num_classes). `source` names the place the data was read from.
  """
  name: str
  kind: str
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  source: str
  class_names: tuple[str, ...] = ()

  @property
  def spec(self) -> DataSpec:
    return DataSpec(name=self.name, kind=self.kind,
                    example_shape=tuple(self.train_x.shape[1:]),
                    num_classes=self.num_classes,
                    num_train=int(self.train_x.shape[0]),
                    num_test=int(self.test_x.shape[0]))
