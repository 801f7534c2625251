"""Methods by name (`config.method`)."""

import importlib
from types import ModuleType

from dpgen_jax import errors

METHODS = {
    "dpgan": "dpgen_jax.methods.dpgan",
    "dpcgan": "dpgen_jax.methods.dpcgan",
    "dp_sinkhorn": "dpgen_jax.methods.dp_sinkhorn",
    "gswgan": "dpgen_jax.methods.gswgan",
    "cslgan": "dpgen_jax.methods.cslgan",
    "dp_merf": "dpgen_jax.methods.dp_merf",
    "dp_ntk": "dpgen_jax.methods.dp_ntk",
}


def get_method(name: str) -> ModuleType:
  """The method module for `config.method`; ConfigError for unknown names."""
  if name not in METHODS:
    raise errors.ConfigError(
        f"Unknown method {name!r} (config.method). Known methods: {', '.join(sorted(METHODS))}.")
  return importlib.import_module(METHODS[name])
