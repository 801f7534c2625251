"""Tabular data: public column schemas and the synthetic-table export.

A `TableSchema` says what each column of a tabular dataset is (its name and whether
it is continuous or binary) and how classes were coded in the original files. It is
public knowledge (the dataset's documentation), never derived from the private rows,
so generators may use it (e.g. `models.mlp_gan.TabularHead`) at no privacy cost.

`write_table` exports a generated table as CSV (header: the column names, then
`class`) and as .npz; any method that releases rows can call it (the eval job does
with `eval.export_csv`).

Units. Rows are exported in the units the model was trained on: for Thyroid that is
the loader's max-abs scaling by the *training* maxima (data/loaders.py). Mapping back
to raw units would need those maxima, which are computed from private data and are
not part of the DP release, so they are not used here.
"""

import csv
import dataclasses
import os

import numpy as np

CONTINUOUS = "continuous"
BINARY = "binary"
KINDS = (CONTINUOUS, BINARY)


@dataclasses.dataclass(frozen=True)
class TableSchema:
  """Columns of a tabular dataset.

  Attributes:
    columns: one name per feature, in file order.
    kinds: 'continuous' or 'binary' per feature.
    class_codes: the label written to the `class` column for label index k (the
      original file's coding; default k itself).
  """
  columns: tuple[str, ...]
  kinds: tuple[str, ...]
  class_codes: tuple[int, ...] | None = None

  def __post_init__(self):
    if len(self.columns) != len(self.kinds):
      raise ValueError(f"{len(self.columns)} column names but {len(self.kinds)} kinds")
    bad = [k for k in self.kinds if k not in KINDS]
    if bad:
      raise ValueError(f"unknown column kinds {bad}; known: {KINDS}")

  @property
  def num_features(self) -> int:
    return len(self.columns)

  def class_code(self, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, np.int64)
    if self.class_codes is None:
      return labels
    return np.asarray(self.class_codes, np.int64)[labels]


# UCI ann-thyroid (dpcgan.md §5.2): names from the UCI documentation; column 0 (age)
# and 16-20 (hormone values) are continuous, 1-15 binary; classes coded 1, 2, 3.
THYROID = TableSchema(
    columns=("age", "sex", "on_thyroxine", "query_on_thyroxine", "on_antithyroid_medication",
             "sick", "pregnant", "thyroid_surgery", "I131_treatment", "query_hypothyroid",
             "query_hyperthyroid", "lithium", "goitre", "tumor", "hypopituitary", "psych",
             "TSH", "T3", "TT4", "T4U", "FTI"),
    kinds=(CONTINUOUS,) + (BINARY,) * 15 + (CONTINUOUS,) * 5,
    class_codes=(1, 2, 3))

SCHEMAS: dict[str, TableSchema] = {"thyroid": THYROID}


def schema_for(dataset_name: str, num_features: int) -> TableSchema:
  """The dataset's schema, or a generic all-continuous one (x0, x1, ...) if unknown."""
  schema = SCHEMAS.get(dataset_name)
  if schema is not None and schema.num_features == num_features:
    return schema
  return TableSchema(columns=tuple(f"x{i}" for i in range(num_features)),
                     kinds=(CONTINUOUS,) * num_features)


def write_table(path_prefix: str, x: np.ndarray, y: np.ndarray,
                schema: TableSchema) -> dict[str, str]:
  """Writes `<path_prefix>.csv` and `<path_prefix>.npz`; returns both paths.

  CSV: a header row (the schema's column names, then `class`), one row per example,
  features with 8 significant digits, class in the schema's coding. NPZ: `data_x`
  (float32, N x F), `data_y` (int32 label indices, as the eval job's gen_data files),
  `columns` and `class_code`.
  """
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  y = np.asarray(y, np.int32)
  if x.shape[1] != schema.num_features:
    raise ValueError(f"table has {x.shape[1]} features, schema {schema.num_features}")
  codes = schema.class_code(y)
  os.makedirs(os.path.dirname(path_prefix) or ".", exist_ok=True)
  csv_path, npz_path = path_prefix + ".csv", path_prefix + ".npz"
  with open(csv_path + ".tmp", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(list(schema.columns) + ["class"])
    for row, code in zip(x, codes):
      writer.writerow([f"{v:.8g}" for v in row] + [int(code)])
  os.replace(csv_path + ".tmp", csv_path)
  np.savez_compressed(npz_path, data_x=x, data_y=y, columns=np.asarray(schema.columns),
                      class_code=codes)
  return {"csv": csv_path, "npz": npz_path}


def read_table_csv(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(column names, features, class codes) of a CSV written by `write_table`."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header, body = rows[0], rows[1:]
  data = np.asarray(body, dtype=np.float64).reshape(len(body), len(header))
  return header[:-1], data[:, :-1].astype(np.float32), data[:, -1].astype(np.int64)
