"""The interface between a method and the generic training loop / eval job.

A method module (dpgen_jax/methods/<name>.py) provides:

  validate(config, data_spec) -> None
      Raise errors.ConfigError for values that cannot work (before any compute).
  dp_event(config, num_examples) -> dp_accounting.DpEvent
      The event of one accounted step (what `train.num_steps` counts).
  privacy_fields(config, num_examples) -> dict
      Fields for privacy.json / --mode=privacy (noise_multiplier, sampling_rate, ...).
  build(config, data_spec, mesh) -> Method
      An object with the methods of `Method` below.

so the loop, the eval job and the privacy mode never special-case a method.
"""

import abc
from typing import Any

import jax

from dpgen_jax.data.dataset import DataSpec

PyTree = Any


class Method(abc.ABC):
  """One method's state construction, step and sampler.

  Attributes:
    config: the run's ConfigDict.
    spec: the data's DataSpec.
    mesh: the device mesh (axis 'data').
  """

  def __init__(self, config, spec: DataSpec, mesh: jax.sharding.Mesh):
    self.config = config
    self.spec = spec
    self.mesh = mesh

  # Metrics of `train_step` that are functions of released outputs (the noised update,
  # the released generator, a discriminator trained with DP-SGD) or of public data only:
  # the only ones logged by default in a private run (the loop writes the others only
  # with train.log_private_metrics, under 'private/'). tests/privacy/test_logging.py
  # checks every method's default tags against this declaration.
  public_metrics: frozenset = frozenset()

  def setup(self, workdir: str, dataset, secret) -> dict | None:
    """Called by the training loop once, before `init`, with the run folder, the
    loaded `Dataset` and the run's secret root of randomness (a
    `privacy.randomness.SecretRoot`, restored from the checkpoints on resume): every
    random choice of private records made here (e.g. mean samples) must come from it.
    Methods that draw their own batches (e.g. from disjoint shards) or have a separate
    stage (e.g. pretraining saved in the workdir) use it; the default does nothing.
    Not called by the eval job.

    Returns None to go on with training, or a summary dict to end the run there
    (a stage-only run, e.g. pretraining alone: no accounted step is taken)."""

  @abc.abstractmethod
  def init(self, rng: jax.Array) -> PyTree:
    """The initial state: a pytree of arrays (checkpointed as is)."""

  @abc.abstractmethod
  def train_step(self, state: PyTree, batch: dict, rngs: dict) -> tuple[PyTree, dict]:
    """One accounted step; pure and jit-compiled.

    Args:
      state: the current state.
      batch: {'x', 'y', 'mask'}: the padded Poisson batch of real examples (mask False
        on padding rows) placed on the mesh.
      rngs: {'model': key for latents, fake labels and every random choice of private
        records (a discriminator, microbatch ids), 'noise': key for privacy noise}; both
        derived from the run's secret root and the step (privacy/randomness.py).
    Returns:
      (new state, metrics: dict of scalar arrays).
    """

  @abc.abstractmethod
  def sample(self, state: PyTree, rng: jax.Array, labels: jax.Array) -> jax.Array:
    """Data from the released generator for the given labels (images in [0, 1])."""

  def sampling_rate(self) -> float | None:
    """Poisson rate q of the real-data batches the loop must draw (None: no batches)."""
    return None

  def padded_batch_multiple(self) -> int:
    """The padded batch size must be a multiple of this (devices x microbatch)."""
    return self.mesh.size

  def released(self, state: PyTree) -> PyTree:
    """The part of the state that is a released artifact (default: all of it)."""
    return state
