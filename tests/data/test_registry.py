"""Dataset registry, sources and readers."""

import gzip
import os

import ml_collections
import numpy as np
import pytest

from dpgen_jax import errors
from dpgen_jax.data import idx, load_dataset, registry
from tests import helpers


def _data_config(name, **kw):
  c = ml_collections.ConfigDict(dict(name=name, data_dir="", download=False, tfds_data_dir="",
                                     image_size=None))
  c.update(kw)
  return c


def _write_idx(path, array):
  codes = {np.uint8: 0x08, np.int32: 0x0C}
  header = bytes([0, 0, codes[array.dtype.type], array.ndim])
  header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  data = array.astype(array.dtype.newbyteorder(">")).tobytes()
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + data)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_reader_round_trip(tmp_path, suffix):
  images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
  path = str(tmp_path / ("x-idx3-ubyte" + suffix))
  _write_idx(path, images)
  np.testing.assert_array_equal(idx.read_idx(path), images)
  wide = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
  _write_idx(str(tmp_path / "w"), wide)
  np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "w")), wide)


def test_idx_reader_rejects_garbage(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04hello")
  with pytest.raises(ValueError, match="not an IDX file"):
    idx.read_idx(str(tmp_path / "bad"))


def _fake_mnist_folder(folder, n_train=7, n_test=3, gz=True):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(1)
  s = ".gz" if gz else ""
  _write_idx(os.path.join(folder, "train-images-idx3-ubyte" + s),
             rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
  _write_idx(os.path.join(folder, "train-labels-idx1-ubyte" + s),
             rng.integers(0, 10, (n_train,), dtype=np.uint8))
  _write_idx(os.path.join(folder, "t10k-images-idx3-ubyte" + s),
             rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
  _write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte" + s),
             rng.integers(0, 10, (n_test,), dtype=np.uint8))


def test_sources_in_order_data_dir_then_env(tmp_path, monkeypatch):
  _fake_mnist_folder(str(tmp_path / "cfg"), n_train=7)
  _fake_mnist_folder(str(tmp_path / "env" / "mnist"), n_train=9, gz=False)
  monkeypatch.setenv("DPGEN_DATA_DIR", str(tmp_path / "env"))
  first = load_dataset(_data_config("mnist", data_dir=str(tmp_path / "cfg")))
  assert first.train_x.shape == (7, 28, 28, 1) and first.source == str(tmp_path / "cfg")
  second = load_dataset(_data_config("mnist"))
  assert second.train_x.shape == (9, 28, 28, 1)
  assert second.train_x.dtype == np.float32 and 0 <= second.train_x.min() <= second.train_x.max() <= 1


def test_missing_data_names_every_place_and_how_to_supply(tmp_path, monkeypatch):
  monkeypatch.setenv("DPGEN_DATA_DIR", str(tmp_path / "nothing"))
  with pytest.raises(errors.DataNotFoundError) as e:
    load_dataset(_data_config("mnist", data_dir=str(tmp_path / "nope")))
  message = str(e.value)
  assert "Dataset 'mnist' was not found" in message
  assert str(tmp_path / "nope") in message
  assert os.path.join(str(tmp_path / "nothing"), "mnist") in message
  assert "/usr/share/datasets/mnist" in message
  assert "tensorflow-datasets 'mnist'" in message and "download is False" in message
  assert "--config.data.data_dir=DIR" in message and "DPGEN_DATA_DIR" in message


def test_unknown_dataset_lists_the_known_ones():
  with pytest.raises(errors.ConfigError, match="Unknown dataset 'mnsit'.*celeb_a, digits"):
    load_dataset(_data_config("mnsit"))


def test_digits_always_available_and_resizable():
  d = load_dataset(_data_config("digits"))
  assert d.train_x.shape == (1437, 8, 8, 1) and d.test_x.shape == (360, 8, 8, 1)
  assert d.source.startswith("scikit-learn")
  assert set(np.unique(d.train_y)) == set(range(10))
  r = load_dataset(_data_config("digits", image_size=28))
  assert r.train_x.shape == (1437, 28, 28, 1) and 0 <= r.train_x.min() and r.train_x.max() <= 1
  assert registry.static_spec(_data_config("digits", image_size=28)).num_train == 1437


def test_thyroid_from_shared_data_with_training_scaling():
  folder = os.path.join(helpers.SHARED_DATA, "thyroid")
  if not os.path.isfile(os.path.join(folder, "ann-train.data")):
    pytest.skip(f"UCI thyroid files not found in {folder}")
  d = load_dataset(_data_config("thyroid", data_dir=folder))
  assert d.train_x.shape == (3772, 21) and d.test_x.shape == (3428, 21)
  # dpcgan.md §5.2 class counts (classes 1, 2, 3 -> 0, 1, 2).
  assert np.bincount(d.train_y).tolist() == [93, 191, 3488]
  assert np.bincount(d.test_y).tolist() == [73, 177, 3178]
  assert np.abs(d.train_x).max(axis=0).max() == pytest.approx(1.0)


def test_fashion_mnist_system_folder_when_installed():
  folder = "/usr/share/datasets/fashion-mnist"
  if not os.path.isdir(folder):
    pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install "
                "dataset-fashion-mnist)")
  d = load_dataset(_data_config("fashion_mnist"))
  assert d.source == folder and d.train_x.shape == (60_000, 28, 28, 1)


def test_real_mnist_counts():
  folder = helpers.mnist_dir()
  d = load_dataset(_data_config("mnist", data_dir=folder))
  # ../shared/data/README.md: class counts and mean pixel.
  assert np.bincount(d.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                             5851, 5949]
  assert float(d.train_x.mean()) * 255 == pytest.approx(33.32, abs=0.01)


def test_npz_source(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "celeb_a.npz", x_train=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
           y_train=np.array([0, 1, 0, 1]), x_test=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
           y_test=np.array([1, 0]))
  d = load_dataset(_data_config("celeb_a", data_dir=str(tmp_path)))
  assert d.train_x.shape == (4, 32, 32, 3) and d.train_x.max() <= 1.0
