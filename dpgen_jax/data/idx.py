"""Reader for the IDX format of MNIST-style files (gzipped or raw)."""

import gzip
import os

import numpy as np

# The third byte of the magic number gives the element type (IDX specification).
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str) -> np.ndarray:
  """Returns the array stored in an IDX file; `.gz` files are decompressed.

  Raises ValueError for a file that is not IDX (bad magic or a size that does not
  match its header).
  """
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number).")
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  ndim = raw[3]
  header_end = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(raw[4:header_end], dtype=">u4"))
  count = int(np.prod(shape)) if shape else 1
  if len(raw) - header_end != count * dtype.itemsize:
    raise ValueError(f"{path}: header says {shape} ({count * dtype.itemsize} bytes) but "
                     f"the file has {len(raw) - header_end} data bytes.")
  data = np.frombuffer(raw, dtype=dtype, offset=header_end, count=count)
  return data.reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(folder: str, stem: str) -> str | None:
  """Returns folder/stem(.gz) if either exists (raw first), else None.

  Also accepts the dotted spelling some mirrors use (`train-images.idx3-ubyte`).
  """
  candidates = [stem, stem + ".gz"]
  dotted = stem.replace("-idx", ".idx")
  candidates += [dotted, dotted + ".gz"]
  for name in candidates:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  return None
