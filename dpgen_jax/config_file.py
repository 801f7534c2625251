"""Loading a config file as main.py's --config flag does (for scripts and tests).

Config files live in the repository's configs/ package and import their shared
defaults from configs/defaults/: `python main.py` has the repository root on sys.path;
`load_config_file` puts it there too when the file is inside a configs/ folder.
"""

import importlib.util
import os
import sys

import ml_collections

from dpgen_jax import errors


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:preset]'; ConfigError when the file does not exist."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise errors.ConfigError(f"config file {path} does not exist.")
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.basename(folder) == "configs":
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.insert(0, root)
  module_spec = importlib.util.spec_from_file_location("_dpgen_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()
