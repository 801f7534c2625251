"""The method protocol: the one interface the training loop, the eval job, the privacy and
generate modes and the membership audit use. They never name a method and never probe.

Every method module (dpgen_jax/methods/<name>.py or <name>/) exports one `DEFINITION`:

  MethodDefinition(name, validate, privacy, build)
    validate(config, spec)        ConfigError for values that cannot work (spec is None
                                  before the data is loaded, e.g. in --mode=privacy);
    privacy(config, n, sigma)     PrivacyDeclaration: the event of one accounted step,
                                  a bound when that event is not one, one-time releases,
                                  the Poisson rate of the real batches, fields for
                                  privacy.json: all from the method's mechanisms, for a
                                  given noise multiplier (the plan calibrates sigma with it);
    build(plan, config, spec, mesh) -> Method.

The `Method` object (below) gets the resolved `PrivacyPlan` (dpgen_jax/planning.py) and
reads privacy values from it, not from the config.
"""

import abc
import dataclasses
from typing import Any, Callable, Mapping

import dp_accounting
import jax

from dpgen_jax.data.dataset import DataSpec

PyTree = Any
DATA_USES = ("poisson", "prepared", "none")


@dataclasses.dataclass(frozen=True)
class PrivacyDeclaration:
  """What a method's privacy costs, produced by its mechanisms for a noise multiplier.

  Attributes:
    step_event: the event of one accounted step (what train.num_steps counts);
      NoOpDpEvent for steps that read no private data (post-processing).
    bound_event: an event that is a bound for the step when `step_event` is not one
      (e.g. GS-WGAN's published accounting); NonPrivateDpEvent: no bound is proven.
    one_time: (event, count) releases outside the steps (CSL-GAN's mean samples, the
      embedding of DP-MERF / DP-NTK), charged once when a run starts.
    sampling_rate: the Poisson rate q of the real batches the loop draws (None when the
      method draws none).
    fields: a function returning what privacy.json and --mode=privacy show about the
      mechanism (called once for the resolved plan, not at every calibration probe).
    caveat: a qualification every displayed epsilon carries (e.g. 'approximate').
  """
  step_event: dp_accounting.DpEvent
  bound_event: dp_accounting.DpEvent | None = None
  one_time: tuple = ()
  sampling_rate: float | None = None
  fields: Callable[[], Mapping[str, Any]] = dict
  caveat: str | None = None


class Stage(abc.ABC):
  """Work a method needs before training (GS-WGAN's critic pretraining, the one private
  release of DP-MERF / DP-NTK), as a number of items the generic loop computes chunk by
  chunk, saves in the run folder (resumable chunk by chunk, refused under another
  recipe) and reports progress on. Stages release nothing: their outputs are private
  artefacts, or DP releases whose one-time cost is in the method's declaration.
  """
  name: str = ""

  def recipe(self) -> dict:
    """What the outputs depend on: outputs saved under another recipe are refused."""
    return {}

  @abc.abstractmethod
  def num_items(self) -> int:
    """How many items (e.g. discriminators)."""

  def chunk_size(self) -> int:
    """Items computed (and saved) together."""
    return 1

  @abc.abstractmethod
  def item_structure(self) -> PyTree:
    """The shapes of ONE item's output (jax.ShapeDtypeStruct leaves)."""

  @abc.abstractmethod
  def run_items(self, start: int, end: int) -> PyTree:
    """Items start..end-1: their outputs stacked on a leading axis of end - start."""

  def directory(self, run) -> str:
    """Where the outputs live (default: the run folder's stages/<name>)."""
    return run.stage_dir(self.name)


class Method(abc.ABC):
  """One method: state construction, its step and sampler, declared capabilities.

  Attributes:
    plan: the resolved PrivacyPlan (noise multiplier, clip norm, delta, ...).
    config: the run's config (the method's own section and the training settings).
    spec: the data's DataSpec.
    mesh: the device mesh (axis 'data').
  """

  # Metrics of `train_step` that are functions of released outputs (noised updates, the
  # released generator, a DP-trained discriminator) or public data: the only ones
  # logged by default in a private run (tests/privacy/test_logging checks it).
  public_metrics: frozenset = frozenset()
  # What private data a step reads: 'poisson' (the loop draws padded Poisson batches at
  # the declared rate), 'prepared' (the method holds what it reads; `prepare` gives it
  # the dataset), 'none' (steps read no private data).
  data_use: str = "poisson"
  # Capabilities the audit and the stages machinery use (declared, never probed).
  supports_membership_audit: bool = False
  public_test_examples: int = 0  # leading test examples used as public data (not audited)
  stop_after_stages: bool = False  # a stage-only run (e.g. GS-WGAN pretraining alone)

  def __init__(self, plan, config, spec: DataSpec, mesh: jax.sharding.Mesh):
    self.plan = plan
    self.config = config
    self.spec = spec
    self.mesh = mesh

  def stages(self, run, dataset, secret) -> tuple[Stage, ...]:
    """Stages to run before training (training only; default none). Their randomness
    comes from `secret` wherever it touches private records or noise."""
    return ()

  def prepare(self, run, dataset, secret) -> None:
    """Training only, after the stages: hold what steps read besides Poisson batches
    (stage outputs, shards, public data). Every random choice of private records made
    here must come from `secret` (privacy.randomness.SecretRoot). Default: nothing."""

  @abc.abstractmethod
  def init(self, rng: jax.Array) -> PyTree:
    """The initial state, a pytree of arrays, from public randomness only (the eval and
    generate modes use it for shapes)."""

  def start(self, state: PyTree) -> PyTree:
    """The state a new training run starts from: `init` with what `prepare` holds put
    in (pretrained critics, a release). Not called on resume (the checkpoint has it)."""
    return state

  @abc.abstractmethod
  def train_step(self, state: PyTree, batch: dict | None, keys: dict) -> tuple[PyTree, dict]:
    """One accounted step; pure and jit-compiled.

    batch: {'x', 'y', 'mask'} padded Poisson batch for data_use 'poisson', else None.
    keys: {'model': latents, fake labels, critic randomness; 'noise': the mechanisms'
      noise and every random choice of private records}; both from the secret root.
    Returns (new state, metrics: dict of scalar arrays)."""

  @abc.abstractmethod
  def sample(self, state: PyTree, rng: jax.Array, labels: jax.Array) -> jax.Array:
    """Data from the released generator for the given labels (images in [0, 1])."""

  def released(self, state: PyTree) -> PyTree:
    """The part of the state that is released (default: all of it)."""
    return state

  def padded_batch_multiple(self) -> int:
    """The padded Poisson batch size must be a multiple of this (devices x chunks)."""
    return self.mesh.size

  def membership_scores(self, state: PyTree, x, y, kind: str = "auto"):
    """(scores, kind): a white-box membership-inference score per example, higher =
    more likely a member. Only methods with supports_membership_audit."""
    raise NotImplementedError(f"{type(self).__name__} has no membership audit")


@dataclasses.dataclass(frozen=True)
class MethodDefinition:
  name: str
  validate: Callable[..., None]
  privacy: Callable[..., PrivacyDeclaration]
  build: Callable[..., Method]
