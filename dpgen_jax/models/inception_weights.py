"""The .npz weight format of the FID Inception network: flat keys, checked on load.

One array per key; a key is the Flax module path plus the variable name, joined by
'/', e.g. 'Mixed_5b/branch5x5_2/conv/kernel' (HWIO), '.../bn/scale', '.../bn/bias'
(collection 'params') and '.../bn/mean', '.../bn/var' (collection 'batch_stats').
The leaf name alone decides the collection, so the files carry no Flax internals and
the PyTorch converter (experiments/convert_pytorch_fid_weights.py) can write them with
numpy alone. Nothing here knows the architecture: callers pass the expected shapes.
"""

from collections.abc import Mapping
import os
import zipfile

from flax import traverse_util
import jax.numpy as jnp
import numpy as np

from dpgen_jax.errors import UserError

BATCH_STATS_LEAVES = ('mean', 'var')
_SEP = '/'


def flatten_variables(variables: Mapping) -> dict[str, np.ndarray]:
  """{'params': tree, 'batch_stats': tree} -> {'A/b/conv/kernel': leaf, ...}.

  Leaves are passed through unchanged (arrays, or ShapeDtypeStructs from eval_shape).
  """
  flat = {}
  for collection in ('params', 'batch_stats'):
    tree = traverse_util.flatten_dict(dict(variables.get(collection, {})), sep=_SEP)
    for key, value in tree.items():
      if key in flat:
        raise ValueError(f'key {key!r} occurs in more than one collection')
      flat[key] = value
  return flat


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> dict:
  """Inverse of `flatten_variables`; leaves become jax arrays."""
  collections = {'params': {}, 'batch_stats': {}}
  for key, value in flat.items():
    leaf = key.rsplit(_SEP, 1)[-1]
    collection = 'batch_stats' if leaf in BATCH_STATS_LEAVES else 'params'
    collections[collection][key] = jnp.asarray(value)
  return {name: traverse_util.unflatten_dict(tree, sep=_SEP)
          for name, tree in collections.items()}


def save_flat_npz(flat: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes float32 arrays to an uncompressed .npz (np.load then maps them lazily)."""
  arrays = {key: np.asarray(value, np.float32) for key, value in flat.items()}
  with open(path, 'wb') as f:  # an open file keeps numpy from appending '.npz'
    np.savez(f, **arrays)


def _describe(keys: list[str], limit: int = 5) -> str:
  shown = ', '.join(repr(k) for k in keys[:limit])
  more = f' (and {len(keys) - limit} more)' if len(keys) > limit else ''
  return f'{len(keys)}: {shown}{more}'


def load_flat_npz(
    path: str | os.PathLike, expected_shapes: Mapping[str, tuple[int, ...]],
    what: str = 'weights'
) -> dict[str, np.ndarray]:
  """Reads an .npz and checks it holds exactly `expected_shapes`, as float32.

  Raises:
    UserError: one message for the first problem found, in this order: the file is
      missing or not an .npz; keys are missing; keys are unexpected; a key's shape
      differs (naming the key, the expected and the found shape); a key is not a
      finite floating-point array.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f'{what} file not found: {path}')
  try:
    loaded = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f'{what} file {path} is not an .npz file ({e})') from None
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise UserError(f'{what} file {path} is a single .npy array, not an .npz file')

  with loaded:
    found = set(loaded.files)
    missing = [k for k in expected_shapes if k not in found]
    if missing:
      raise UserError(f'{what} file {path} lacks expected keys, '
                      f'{_describe(missing)}')
    unexpected = sorted(found - set(expected_shapes))
    if unexpected:
      raise UserError(f'{what} file {path} has unexpected keys, '
                      f'{_describe(unexpected)}')
    flat = {}
    for key, shape in expected_shapes.items():
      try:
        value = loaded[key]
      except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f'{what} file {path}: cannot read key {key!r} ({e})') from None
      if value.shape != tuple(shape):
        raise UserError(
            f'{what} file {path}: key {key!r} has shape {value.shape}, '
            f'expected {tuple(shape)}')
      if not np.issubdtype(value.dtype, np.floating):
        raise UserError(f'{what} file {path}: key {key!r} has dtype {value.dtype}, '
                        'expected a floating-point type')
      if not np.all(np.isfinite(value)):
        raise UserError(f'{what} file {path}: key {key!r} has non-finite values')
      flat[key] = value.astype(np.float32)
  return flat
