"""Methods by name (`config.method`): each module exports a protocol.MethodDefinition."""

import importlib

from dpgen_jax import errors
from dpgen_jax.methods.protocol import MethodDefinition

METHODS = {
    "dpgan": "dpgen_jax.methods.dpgan",
    "dpcgan": "dpgen_jax.methods.dpcgan",
    "dp_sinkhorn": "dpgen_jax.methods.dp_sinkhorn",
    "gswgan": "dpgen_jax.methods.gswgan",
    "cslgan": "dpgen_jax.methods.cslgan",
    "dp_merf": "dpgen_jax.methods.dp_merf",
    "dp_ntk": "dpgen_jax.methods.dp_ntk",
}


def get_definition(name: str) -> MethodDefinition:
  """The definition of `config.method`; ConfigError for unknown names."""
  if name not in METHODS:
    raise errors.ConfigError(
        f"Unknown method {name!r} (config.method). Known methods: {', '.join(sorted(METHODS))}.")
  return importlib.import_module(METHODS[name]).DEFINITION



def build(config, spec, mesh=None):
  """The method of `config` for data `spec`, its privacy plan resolved (calibrated) for
  spec.num_train, as the training loop builds it: for scripts, notebooks and tests.
  The resolved config is `method.config`, the plan `method.plan`."""
  from dpgen_jax import parallel, planning
  definition, plan, resolved = planning.plan_for(config, spec)
  return definition.build(plan, resolved, spec, mesh if mesh is not None else parallel.make_mesh())
