"""Tabular data: the Thyroid loader's scaling, column schemas, the synthetic-table export."""

import numpy as np
import pytest

from dpgen_jax.data import loaders, tabular


def _write_thyroid(path, rows):
  with open(path, "w") as f:
    for row in rows:  # UCI layout: space-separated, two trailing blanks per line
      f.write(" ".join(f"{v:g}" for v in row) + "  \n")


def test_thyroid_loader_scales_train_and_test_by_the_training_maxima(tmp_path):
  """dpcgan.md §7 #3: one scaling (training max |x| per column), never the test's own."""
  r = np.random.default_rng(0)
  train = np.round(r.uniform(0, 2, size=(6, 21)), 3)
  test = np.round(r.uniform(0, 5, size=(4, 21)), 3)
  train[:, 14] = 0.0  # a constant-zero column keeps its values (scale 1)
  train = np.concatenate([train, (np.arange(6) % 3 + 1)[:, None]], 1)
  test = np.concatenate([test, np.array([[3], [1], [2], [3]])], 1)
  _write_thyroid(tmp_path / "ann-train.data", train)
  _write_thyroid(tmp_path / "ann-test.data", test)
  train_x, train_y, test_x, test_y = loaders.read_thyroid(str(tmp_path))
  scale = train[:, :21].max(axis=0)
  scale[14] = 1.0
  np.testing.assert_allclose(train_x, train[:, :21] / scale, rtol=1e-6)
  np.testing.assert_allclose(test_x, test[:, :21] / scale, rtol=1e-6)
  assert test_x.max() > 1.0  # test values above the training maxima are not clipped
  assert list(train_y) == [0, 1, 2, 0, 1, 2] and list(test_y) == [2, 0, 1, 2]
  assert loaders.read_thyroid(str(tmp_path / "missing")) is None


def test_thyroid_schema_matches_the_uci_documentation():
  s = tabular.THYROID
  assert s.num_features == 21 and s.columns[0] == "age" and s.columns[-1] == "FTI"
  assert s.kinds.count(tabular.BINARY) == 15 and s.kinds[1:16] == (tabular.BINARY,) * 15
  assert list(s.class_code(np.array([0, 1, 2]))) == [1, 2, 3]
  generic = tabular.schema_for("unknown", 3)
  assert generic.columns == ("x0", "x1", "x2") and set(generic.kinds) == {tabular.CONTINUOUS}
  assert tabular.schema_for("thyroid", 21) is tabular.THYROID
  with pytest.raises(ValueError, match="kinds"):
    tabular.TableSchema(("a",), ("categorical",))


def test_write_table_round_trips_csv_and_npz(tmp_path):
  r = np.random.default_rng(0)
  x = r.uniform(size=(12, 21)).astype(np.float32)
  y = np.arange(12) % 3
  paths = tabular.write_table(str(tmp_path / "sub" / "gen_table_7"), x, y, tabular.THYROID)
  header = open(paths["csv"]).readline().strip().split(",")
  assert header == list(tabular.THYROID.columns) + ["class"]
  columns, xr, codes = tabular.read_table_csv(paths["csv"])
  np.testing.assert_allclose(xr, x, rtol=1e-7)
  assert list(codes) == list(y + 1)
  with np.load(paths["npz"]) as f:
    np.testing.assert_array_equal(f["data_x"], x)
    np.testing.assert_array_equal(f["data_y"], y)
    assert list(f["columns"]) == columns
  with pytest.raises(ValueError, match="features"):
    tabular.write_table(str(tmp_path / "bad"), x[:, :5], y, tabular.THYROID)
