"""One private release of a class-conditional mean embedding, then free generator training.

Shared by DP-MERF (random Fourier features) and DP-NTK (neural tangent features); spec:
docs/methods/dp_merf.md and docs/methods/dp_ntk.md. A method provides a `FeatureMap`:

  data_sum(x, y_onehot)      sum_i psi(x_i) y_i^T over a chunk of examples, as a pytree
                             (one array per feature block, leading axis = class);
  loss(target, x_blocks)     || target - (1/B) sum_i psi(x_i) y_i^T ||^2 for generated
                             examples in class blocks (C, B/C, d), differentiable in x
                             (DP-NTK evaluates it with inner products, never
                             materialising the features);
with every feature vector psi(x) of L2 norm at most 1 (RFF: exactly 1; NTK: normalised).

The release (`release`). S = sum_i psi(x_i) onehot(y_i)^T over the private training set.
One record changes S by one term of Frobenius norm ||psi(x)|| ||onehot(y)|| <= 1 when it
is added or removed, and by at most 2 when it is replaced by another record. With the
neighbouring relation of `privacy.neighboring` the mechanism (privacy.mechanisms.
GaussianSum, clip_norm 1) adds N(0, (sigma * sensitivity)^2) to every entry of S and
divides by the public n: the Gaussian mechanism with multiplier sigma, released once
(`one_time_event`). Everything after it (the generator, its training, its samples) is
post-processing. The noise and every record subset come from the run's secret root, so a
resumed run recomputes exactly the stored release (it never releases a second version).

Labels: the embedding's column c holds n_c / n of the mass; every generated batch holds
B / C examples of each class (upstream draws them uniformly; fixed blocks have the same
expectation, less variance, and let DP-NTK compare examples within a class only): the
balanced-classes assumption of upstream's MNIST code, so no class count is released. On
a strongly imbalanced dataset this assumption is wrong (the generator still matches the
released embedding, but its label marginal stays uniform).
"""

from typing import Any, Protocol

import dp_accounting
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpgen_jax import errors
from dpgen_jax.methods import protocol
from dpgen_jax.models import embedding_generators as generators
from dpgen_jax.privacy import mechanisms

PyTree = Any
NEIGHBORING_FACTOR = mechanisms.NEIGHBORING_FACTOR


class FeatureMap(Protocol):
  """Features of norm <= 1 (see the module docstring)."""

  def data_sum(self, x: jax.Array, y_onehot: jax.Array) -> PyTree: ...

  def zeros(self, num_classes: int) -> PyTree: ...

  def loss(self, target: PyTree, x_blocks: jax.Array) -> jax.Array: ...


def release_mechanism(neighboring: str, sigma: float, num_examples: int) -> mechanisms.GaussianSum:
  """(S + N(0, (sigma f)^2 I)) / n for features of norm <= 1, f = 2 (replace-one) or 1
  (add/remove-one): privacy.mechanisms.bounded_records_sum."""
  return mechanisms.bounded_records_sum(sigma, 1.0, neighboring, num_examples)


def declaration(config, num_examples: int, sigma: float, section: str, features: str,
                feature_fields: dict | None = None) -> protocol.PrivacyDeclaration:
  """The release, one Gaussian mechanism charged once; generator steps cost nothing.
  `feature_fields`: the feature map's settings, shown in privacy.json."""
  p = config.privacy
  f = NEIGHBORING_FACTOR.get(p.neighboring)
  mech = release_mechanism(p.neighboring, sigma, num_examples) if f else None
  one_time = ((mech.event(), 1),) if p.enabled and mech is not None else ()

  def fields():
    return dict(
        noise_multiplier=sigma if p.enabled else None, sampling_rate=None,
        l2_sensitivity_of_the_mean=None if f is None else f / num_examples,
        noise_std_of_the_mean=None if mech is None or not p.enabled else
        mech.noise_std / num_examples,
        num_examples=num_examples, releases=1,
        generator_steps_cost="nothing (post-processing of the release)",
        labels="balanced generated batches (no class counts released)",
        mechanism=f"one Gaussian release of the class-conditional mean embedding "
                  f"({features}): features of norm <= 1, sensitivity {f:g}/n, noise std "
                  f"sigma * {f:g} / n per entry",
        **(feature_fields or {}))

  return protocol.PrivacyDeclaration(step_event=dp_accounting.NoOpDpEvent(), one_time=one_time,
                                     sampling_rate=None, fields=fields)


def validate_common(config, spec, section: str) -> None:
  g, p, t, require = config[section], config.privacy, config.train, errors.require
  require(g.generator in generators.GENERATORS,
          f"{section}.generator must be one of {generators.GENERATORS}, got {g.generator!r}.")
  require(p.neighboring in NEIGHBORING_FACTOR,
          f"privacy.neighboring must be one of {sorted(NEIGHBORING_FACTOR)} for {section}.")
  require(t.num_steps is not None and t.num_steps > 0,
          f"train.num_steps (generator steps) must be set for {section}: they cost no privacy, "
          f"so there is nothing to calibrate them from.")
  require(g.lr > 0, f"{section}.lr must be positive, got {g.lr}.")
  require(0 < g.lr_decay <= 1, f"{section}.lr_decay must be in (0, 1], got {g.lr_decay}.")
  require(g.lr_decay_every >= 1, f"{section}.lr_decay_every must be >= 1.")
  require(g.embed_chunk >= 1, f"{section}.embed_chunk must be >= 1.")
  require(g.latent_dim >= 1, f"{section}.latent_dim must be >= 1.")
  if spec is not None:
    require(t.batch_size % spec.num_classes == 0,
            f"train.batch_size = {t.batch_size} (generated examples per step) must be a "
            f"multiple of the {spec.num_classes} classes: every batch holds B / C of each.")
  if spec is None:
    return
  require(spec.kind == "image", f"{section} generates images; {spec.name} is {spec.kind}.")
  if g.generator == "conv":
    h, w, _ = spec.example_shape
    require(h % 4 == 0 and w % 4 == 0,
            f"{section}.generator = 'conv' needs image sides divisible by 4; {spec.name} "
            f"has {h}x{w} (set data.image_size=28, or {section}.generator='mlp').")


@flax.struct.dataclass
class EmbeddingState:
  params: PyTree
  batch_stats: PyTree
  opt: optax.OptState
  step: jax.Array
  embedding: PyTree  # the released (noised) mean embedding: a DP output


class ReleaseStage(protocol.Stage):
  """The one private release, as a stage: computed once, saved in the run folder, so a
  resumed run reads it instead of recomputing it."""
  name = "release"

  def __init__(self, method: "EmbeddingMatcher", dataset, secret):
    self.method, self.dataset, self.secret = method, dataset, secret

  def recipe(self) -> dict:
    c = self.method.config
    return {"method": c.method, "features": c[self.method.section].to_dict(),
            "noise_multiplier": self.method.plan.noise_multiplier,
            "neighboring": self.method.plan.neighboring, "dataset": self.method.spec.name,
            "num_examples": self.method.spec.num_train,
            # preprocessing that changes the features of the same examples
            "image_size": c.data.get("image_size"),
            "num_train_subset": c.data.get("num_train_subset")}

  def num_items(self) -> int:
    return 1

  def item_structure(self):
    return jax.eval_shape(lambda: self.method.features.zeros(self.method.spec.num_classes))

  def run_items(self, start: int, end: int):
    release = self.method.compute_release(self.dataset, self.secret)
    return jax.tree.map(lambda x: np.asarray(x)[None], release)


class EmbeddingMatcher(protocol.Method):
  """Generator trained to match a released embedding; `features` set by the subclass."""

  section = ""
  # The loss compares the released embedding with generated samples: both public.
  public_metrics = frozenset({"loss", "lr"})
  data_use = "none"

  def __init__(self, plan, config, spec, mesh, features: FeatureMap):
    super().__init__(plan, config, spec, mesh)
    g = config[self.section]
    self.features = features
    self.generator = generators.make_generator(
        g.generator, spec.num_classes, spec.example_shape, latent_dim=int(g.latent_dim),
        fc_dim=int(g.fc_dim), channels=tuple(g.channels), kernels=tuple(g.kernels),
        hidden=tuple(g.mlp_hidden))
    self.schedule = optax.exponential_decay(float(g.lr), int(g.lr_decay_every),
                                            float(g.lr_decay), staircase=True)
    self.tx = optax.adam(self.schedule)
    self.batch_size = int(config.train.batch_size)
    self._release = None
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._sample = jax.jit(self._sample_impl)

  # -- the private release ------------------------------------------------------------

  def stages(self, run, dataset, secret):
    return (ReleaseStage(self, dataset, secret),)

  def prepare(self, run, dataset, secret) -> None:
    stage = ReleaseStage(self, dataset, secret)
    released = run.stage_store(stage).load(1, stage.item_structure())
    self._release = jax.tree.map(lambda x: jnp.asarray(x[0]), released)

  def compute_release(self, dataset, secret):
    """The released embedding of the private training set (noise from the secret root)."""
    k = self.spec.num_classes
    total = self.features.zeros(k)
    chunk = int(self.config[self.section].embed_chunk)
    add = jax.jit(lambda acc, x, y: jax.tree.map(
        jnp.add, acc, self.features.data_sum(x, jax.nn.one_hot(y, k))))
    n = len(dataset.train_y)
    for start in range(0, n, chunk):
      x = jnp.asarray(dataset.train_x[start:start + chunk], jnp.float32)
      y = jnp.asarray(dataset.train_y[start:start + chunk], jnp.int32)
      total = add(total, x, y)
    if self.plan.private:
      mech = release_mechanism(self.plan.neighboring, self.plan.noise_multiplier, n)
      return jax.jit(mech.__call__)(total, secret.key(f"{self.section}/release",
                                                      self.config.train.prng_impl))
    return jax.tree.map(lambda s: s / n, total)  # non-private: the exact mean embedding

  # -- state ---------------------------------------------------------------------------

  def init(self, rng):
    """A zero embedding (the shapes); `start` puts the release in."""
    return jax.jit(self._init_impl)(rng, self.features.zeros(self.spec.num_classes))

  def start(self, state):
    return state.replace(embedding=jax.tree.map(jnp.asarray, self._release))

  def _init_impl(self, rng, embedding):
    z = jnp.zeros((2, int(self.config[self.section].latent_dim)))
    variables = self.generator.init(rng, z, jnp.zeros((2,), jnp.int32), train=False)
    params = variables["params"]
    return EmbeddingState(params=params, batch_stats=variables.get("batch_stats", {}),
                          opt=self.tx.init(params), step=jnp.zeros((), jnp.int32),
                          embedding=jax.tree.map(jnp.asarray, embedding))

  def released(self, state):
    return {"params": state.params, "batch_stats": state.batch_stats}

  # -- one generator step --------------------------------------------------------------

  def _latents(self, key, labels):
    return jax.random.normal(key, (labels.shape[0], int(self.config[self.section].latent_dim)))

  def _step(self, state: EmbeddingState, batch, rngs):
    del batch  # no private data: the target is the released embedding
    k = self.spec.num_classes
    labels = jnp.repeat(jnp.arange(k), self.batch_size // k)  # B / C of each class
    z = self._latents(rngs["model"], labels)

    def loss_fn(params):
      x, updates = self.generator.apply({"params": params, "batch_stats": state.batch_stats},
                                        z, labels, train=True, mutable=["batch_stats"])
      return self.features.loss(state.embedding, x.reshape(k, -1, x[0].size)), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    upd, opt = self.tx.update(grads, state.opt, state.params)
    new = state.replace(params=optax.apply_updates(state.params, upd),
                        batch_stats=updates["batch_stats"], opt=opt, step=state.step + 1)
    return new, {"loss": loss, "lr": self.schedule(state.step)}

  def train_step(self, state, batch, rngs):
    return self._train_step(state, batch, rngs)

  def _sample_impl(self, state, rng, labels):
    z = self._latents(rng, labels)
    return self.generator.apply({"params": state.params, "batch_stats": state.batch_stats},
                                z, labels, train=False)

  def sample(self, state, rng, labels):
    return self._sample(state, rng, labels)


def embedding_distance(features: FeatureMap, target: PyTree, x: np.ndarray, y: np.ndarray,
                       num_classes: int, chunk: int = 1000) -> float:
  """|| target - (1/m) sum_i psi(x_i) onehot(y_i)^T ||^2 for a whole sample (tests, docs)."""
  total = features.zeros(num_classes)
  add = jax.jit(lambda acc, xx, yy: jax.tree.map(
      jnp.add, acc, features.data_sum(xx, jax.nn.one_hot(yy, num_classes))))
  for s in range(0, len(y), chunk):
    total = add(total, jnp.asarray(x[s:s + chunk], jnp.float32), jnp.asarray(y[s:s + chunk]))
  diff = jax.tree.map(lambda t, s: t - s / len(y), target, total)
  return float(sum(jnp.sum(jnp.square(d)) for d in jax.tree.leaves(diff)))
