"""One device mesh with a 'data' axis, and the sharded clipped-gradient sum.

Per-example work is split over the 'data' axis: each device clips and sums the
gradients of its slice of the padded batch, and `lax.psum` adds the per-device sums.
The sum is what the sensitivity bound is about, so sharding does not change the
mechanism: one example lives on one device and still contributes at most C. Noise is
added after the psum, on the replicated sum, from one replicated key: it is drawn
once, not once per device.

Multi-host: call `initialize_distributed(config)` before anything touches devices;
it runs `jax.distributed.initialize` with the configured coordinator (or with
auto-detection on Cloud TPU / SLURM when config.distributed.auto is True). The mesh
then spans the devices of every host.
"""

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dpgen_jax.privacy import clipping

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


def batch_multiple(mesh: Mesh, microbatch_size: int | None) -> int:
  """Padded batch sizes must be a multiple of this to shard evenly into microbatches."""
  return mesh.size * (microbatch_size or 1)


def sharded_clipped_grad_sum(mesh: Mesh, per_example_loss: clipping.PerExampleLoss,
                             params: Any, batch: Any, mask: jax.Array,
                             spec: clipping.ClippingSpec, *,
                             microbatch_size: int | None = None, strategy: str = "vmap",
                             has_aux: bool = False):
  """`clipping.clipped_grad_sum` with the batch split over the mesh's 'data' axis.

  The batch size must be a multiple of mesh.size (times microbatch_size if set).
  Returns the replicated sum, and per-example norms / aux sharded like the batch.
  On a one-device mesh this is exactly `clipped_grad_sum`.
  """
  if mesh.size == 1:
    return clipping.clipped_grad_sum(per_example_loss, params, batch, mask, spec,
                                     microbatch_size=microbatch_size, strategy=strategy,
                                     has_aux=has_aux)
  if mask.shape[0] % batch_multiple(mesh, microbatch_size):
    raise ValueError(f"batch of {mask.shape[0]} does not split over {mesh.size} devices "
                     f"in microbatches of {microbatch_size}")

  def local(params, batch, mask):
    total, norms, aux = clipping.clipped_grad_sum(
        per_example_loss, params, batch, mask, spec, microbatch_size=microbatch_size,
        strategy=strategy, has_aux=has_aux)
    return jax.lax.psum(total, DATA_AXIS), norms, aux

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
                     out_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), check_vma=False)
  return fn(params, batch, mask)
