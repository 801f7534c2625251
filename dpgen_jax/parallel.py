"""One device mesh with a 'data' axis (the sharded clipped sum that uses it is
privacy/sums.py: `sharded_clipped_grad_sum(mesh, ...)`).

Multi-host: call `initialize_distributed(config)` before anything touches devices;
it runs `jax.distributed.initialize` with the configured coordinator (or with
auto-detection on Cloud TPU / SLURM when config.distributed.auto is True). The mesh
then spans the devices of every host.
"""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


DATA_AXIS = "data"


def initialize_distributed(distributed_config) -> None:
  """Starts jax.distributed when configured (a no-op for single-process runs)."""
  if distributed_config is None:
    return
  address = distributed_config.get("coordinator_address") or None
  if address:
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=distributed_config.get("num_processes"),
                               process_id=distributed_config.get("process_id"))
  elif distributed_config.get("auto", False):
    jax.distributed.initialize()


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis name 'data'."""
  devices = list(devices) if devices is not None else jax.devices()
  # Auto axes: XLA propagates shardings (explicit sharding-in-types would reject the
  # replicated/sharded mix inside per-example vmaps).
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
