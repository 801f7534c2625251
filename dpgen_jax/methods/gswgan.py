"""GS-WGAN (Chen, Orekondy, Fritz; NeurIPS 2020): gradient-sanitised generator.

Spec: docs/methods/gswgan.md. Two stages, both run by `--mode=train`:

* warm start (`gswgan.stage` 'pretrain' or 'both'; gswgan_pretrain.py): K = 1000
  discriminators, each trained non-privately on its own disjoint shard of n = N // K
  examples with a throwaway generator, vmapped over chunks, saved with Orbax;
* main training ('main' or 'both'): one `train_step` = one generator iteration:
  1. pick one discriminator k uniformly at random;
  2. `critic_iters` (5) WGAN-GP + drift steps of D_k on its shard (non-private), with
     D_k's own Adam state (fresh at the start of main training, as upstream);
  3. the generator step with B = train.batch_size fakes: g_i = d D_k(x_i, y_i)/d x_i,
     clipped to C and perturbed by N(0, (2 C sigma)^2) per pixel, pulled back through G
     with a VJP of -(1/B) sum_i; Adam on G (gswgan_core.sanitize_image_grads);
  4. the EMA copy of G (decay min(1 - 1/(t+1), 0.999), including SN u/v) is updated;
     it is what `sample` uses and what is released.

Privacy (gswgan.md §3). Under replace-one of a training record only the critic of the
record's shard differs; it is used in a step with probability 1/K (selection without
replacement of 1 of K) and each of the B sanitised rows is a Gaussian mechanism with
sensitivity 2C and noise multiplier sigma. Discriminators, their pretraining and the
critic losses logged during training are not private and are never released; the
EMA generator is. Two accountings (`gswgan.accounting`):

* 'upstream' (default, for comparability): each step composes B independently
  subsampled Gaussians, SelfComposed(SampledWithoutReplacement(K, 1, Gaussian(sigma)), B).
  Upstream's 9.9926 at the paper's settings is this curve on integer orders 2..500 with
  the classic conversion; dp-accounting's tighter conversion gives 9.243.
  Caveat: the code selects ONE discriminator per step for all B rows, so the B rows
  are not independently subsampled; the maintainers argue for the model (every record
  can influence all B rows, hence the B-fold composition), but it is not a proof.
* 'conservative': amplification applied once per step to the B-fold composed mechanism,
  SampledWithoutReplacement(K, 1, Gaussian(sigma / sqrt(B))): a sound bound for what the
  code does, ~3e5 at the paper's settings.

`--mode=privacy` prints both (epsilon_upstream, epsilon_conservative) and upstream's
classic-conversion number (epsilon_upstream_classic).
"""

import math

import dp_accounting
import flax
import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax import errors, parallel, rng
from dpgen_jax.methods import base
from dpgen_jax.methods import gswgan_core as core
from dpgen_jax.methods import gswgan_pretrain as pretrain
from dpgen_jax.models import gswgan_nets
from dpgen_jax.privacy import accounting

STAGES = ("pretrain", "main", "both")
ACCOUNTINGS = ("upstream", "conservative")
LATENTS = ("bernoulli", "normal")
_MAIN_SHARD_SALT = 0x5A4D


def step_event(noise_multiplier: float, num_discriminators: int, batch_size: int,
               model: str = "upstream") -> dp_accounting.DpEvent:
  """The event of one generator iteration under the accounting `model` (see module doc)."""
  if noise_multiplier <= 0:  # calibration probes sigma = 0; dp-accounting would divide by 0
    return dp_accounting.NonPrivateDpEvent()
  k, b = int(num_discriminators), int(batch_size)
  if model == "upstream":
    return dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        k, 1, dp_accounting.GaussianDpEvent(noise_multiplier)), b)
  return dp_accounting.SampledWithoutReplacementDpEvent(
      k, 1, dp_accounting.GaussianDpEvent(noise_multiplier / math.sqrt(b)))


def dp_event(config, num_examples: int) -> dp_accounting.DpEvent:
  del num_examples  # the sampling is over discriminators, not examples
  g = config.gswgan
  return step_event(config.privacy.noise_multiplier, g.num_discriminators,
                    config.train.batch_size, g.accounting)


def privacy_fields(config, num_examples: int) -> dict:
  g, p = config.gswgan, config.privacy
  k, b = int(g.num_discriminators), int(config.train.batch_size)
  n, used = core.num_shards_examples(num_examples, k)
  sigma = p.noise_multiplier if p.enabled else None
  fields = dict(
      sampling_rate=1.0 / k, noise_multiplier=sigma, clip_norm=p.clip_norm,
      sensitivity=2.0 * p.clip_norm,
      noise_std_per_pixel=2.0 * p.clip_norm * sigma if sigma else None,
      num_discriminators=k, shard_size=n, examples_used=used, generator_batch_size=b,
      accounting=g.accounting, compositions_per_step=b if g.accounting == "upstream" else 1,
      mechanism="per-example clip (C) + Gaussian noise (std 2 C sigma per pixel) of the "
                "critic's gradient w.r.t. each of B generated images; one of K "
                "discriminators (disjoint shards) picked uniformly per step",
      sampling_assumption="discriminator selection without replacement (1 of K), replace-one",
      caveat="'upstream' accounting composes B independently subsampled Gaussians per step, "
             "but one discriminator serves all B rows of a step (gswgan.md 3.3); "
             "'conservative' amplifies once per step (sigma / sqrt(B))")
  steps = config.train.num_steps
  if not p.enabled or not sigma or steps is None:
    return fields
  kwargs = dict(orders=p.rdp_orders, neighboring=p.neighboring)
  for model in ACCOUNTINGS:
    total = dp_accounting.SelfComposedDpEvent(step_event(sigma, k, b, model), int(steps))
    fields[f"epsilon_{model}"] = accounting.epsilon(total, p.delta, **kwargs)
    if model == "upstream":
      orders, curve = accounting.rdp_curve(total, **kwargs)
      eps, order = accounting.classic_epsilon(orders, curve, p.delta)
      fields.update(epsilon_upstream_classic=eps, epsilon_upstream_classic_order=order)
  return fields


def validate(config, spec) -> None:
  """Config checks (gswgan.md §4) plus data compatibility (spec may be None)."""
  g, p, require = config.gswgan, config.privacy, errors.require
  require(g.stage in STAGES, f"gswgan.stage must be one of {STAGES}, got {g.stage!r}.")
  require(g.accounting in ACCOUNTINGS,
          f"gswgan.accounting must be one of {ACCOUNTINGS}, got {g.accounting!r}.")
  require(g.gen_arch in gswgan_nets.GENERATORS,
          f"gswgan.gen_arch must be one of {tuple(gswgan_nets.GENERATORS)}, got {g.gen_arch!r}.")
  require(g.latent_type in LATENTS,
          f"gswgan.latent_type must be one of {LATENTS}, got {g.latent_type!r}.")
  for key in ("num_discriminators", "pretrain_chunk", "model_dim", "d_model_dim", "z_dim",
              "critic_iters"):
    require(int(g[key]) >= 1, f"gswgan.{key} must be a positive integer, got {g[key]}.")
  require(int(g.pretrain_iterations) >= 0,
          f"gswgan.pretrain_iterations must be >= 0, got {g.pretrain_iterations}.")
  require(int(g.pretrain_log_every) >= 0, "gswgan.pretrain_log_every must be >= 0.")
  require(g.gp_weight >= 0 and g.drift_weight >= 0,
          "gswgan.gp_weight and gswgan.drift_weight must be >= 0.")
  require(g.g_lr > 0 and g.d_lr > 0, "gswgan.g_lr and gswgan.d_lr must be positive.")
  require(0 <= g.beta1 < 1 and 0 <= g.beta2 < 1, "gswgan.beta1 and beta2 must be in [0, 1).")
  require(0 <= g.ema_max_decay < 1, "gswgan.ema_max_decay must be in [0, 1).")
  if p.enabled:
    require(p.accountant == "rdp",
            "gswgan needs privacy.accountant = 'rdp': dp-accounting's PLD accountant does not "
            "support sampling without replacement (the discriminator selection).")
    require(p.neighboring == "replace_one",
            "gswgan needs privacy.neighboring = 'replace_one': the discriminator is selected "
            "without replacement, whose amplification holds for replacing one record.")
  if spec is None:
    return
  require(spec.kind == "image" and tuple(spec.example_shape) == (28, 28, 1),
          f"gswgan's networks take 28x28x1 images (MNIST, Fashion-MNIST); {spec.name} has "
          f"{spec.kind} examples of shape {spec.example_shape}. Set data.image_size=28 for "
          f"other grayscale image sets.")
  require(g.num_discriminators <= spec.num_train,
          f"gswgan.num_discriminators = {g.num_discriminators} exceeds the {spec.num_train} "
          f"training examples (each discriminator needs a non-empty shard).")


@flax.struct.dataclass
class GSWGANState:
  gen: core.Net  # the trained generator and its Adam state
  ema_params: dict  # the released (EMA) generator
  ema_sn: dict
  discs: core.Discriminator  # all K critics stacked on a leading axis
  step: jax.Array  # generator iterations taken


class GSWGAN(base.Method):
  """GS-WGAN as a `base.Method` (main training; pretraining runs in `setup`)."""

  def __init__(self, config, spec, mesh):
    super().__init__(config, spec, mesh)
    g = config.gswgan
    self.generator = gswgan_nets.make_generator(g.gen_arch, z_dim=g.z_dim, model_dim=g.model_dim,
                                                num_classes=spec.num_classes)
    self.discriminator = gswgan_nets.ProjectionDiscriminator(model_dim=g.d_model_dim,
                                                             num_classes=spec.num_classes)
    self.gan = core.Core(self.generator, self.discriminator, g,
                         batch_size=config.train.batch_size, num_classes=spec.num_classes)
    self.num_discriminators = int(g.num_discriminators)
    self._pretrained = None  # {'params', 'sn'} stacked over K, from `setup`
    self._shards = None
    self._shard_key = jax.random.fold_in(
        rng.make_key(int(config.train.seed), config.train.prng_impl), _MAIN_SHARD_SALT)
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._sample = jax.jit(self._sample_impl)

  # ---- stages ----

  def _shard_arrays(self, dataset, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, n, 28, 28, 1) images (uint8 when exactly 8-bit) and (K, n) labels."""
    x = dataset.train_x[indices]
    scaled = x * 255.0
    if np.array_equal(scaled, np.round(scaled)):
      x = np.round(scaled).astype(np.uint8)
    return x, dataset.train_y[indices].astype(np.int32)

  def setup(self, workdir: str, dataset) -> dict | None:
    """Runs or resumes pretraining (stage 'pretrain'/'both'), then loads the pretrained
    discriminators and the shards for main training (UserError if they are missing)."""
    g = self.config.gswgan
    store = pretrain.PretrainStore(pretrain.pretrained_dir(self.config, workdir),
                                   pretrain.recipe(self.config, self.spec))
    if g.stage in ("pretrain", "both"):
      store.check_or_create(pretrain.partition(self.spec.num_train, self.num_discriminators,
                                               int(g.partition_seed)))
      pretrainer = pretrain.Pretrainer(self.gan, self.config, self.mesh,
                                       *self._shard_arrays(dataset, store.partition()))
      summary = pretrain.run_pretraining(pretrainer, store, chunk_size=int(g.pretrain_chunk),
                                         log_every=int(g.pretrain_log_every))
      if g.stage == "pretrain":
        return summary
    one = jax.eval_shape(lambda: self.gan.init_discriminator(jax.random.key(0)))
    self._pretrained = store.load({"params": one.params, "sn": one.sn})
    x, y = self._shard_arrays(dataset, store.partition())
    replicated = parallel.replicated(self.mesh)
    self._shards = {"x": jax.device_put(x, replicated), "y": jax.device_put(y, replicated)}
    return None

  # ---- state ----

  def init(self, rng_key: jax.Array) -> GSWGANState:
    return jax.jit(self._init_impl)(rng_key, self._pretrained)

  def _init_impl(self, rng_key, pretrained):
    kg, kd = jax.random.split(rng_key)
    gen = self.gan.init_generator(kg)
    if pretrained is None:  # shapes for the eval job (which never calls `setup`)
      nets = jax.vmap(self.gan.init_discriminator)(jax.random.split(kd, self.num_discriminators))
      pretrained = {"params": nets.params, "sn": nets.sn}
    # Fresh optimisers for main training, one Adam state (and step count) per critic.
    opt = jax.vmap(self.gan.d_tx.init)(pretrained["params"])
    discs = core.Discriminator(core.Net(pretrained["params"], pretrained["sn"], opt),
                               jnp.zeros((self.num_discriminators,), jnp.int32))
    # Distinct buffers for the EMA copy: the step donates the state.
    copy = lambda t: jax.tree.map(lambda a: a * jnp.ones_like(a), t)
    return GSWGANState(gen=gen, ema_params=copy(gen.params), ema_sn=copy(gen.sn), discs=discs,
                       step=jnp.zeros((), jnp.int32))

  def released(self, state: GSWGANState) -> dict:
    return {"params": state.ema_params, "sn": state.ema_sn}

  # ---- one generator iteration ----

  def _step(self, state: GSWGANState, shards, shard_key, rngs):
    g, p = self.config.gswgan, self.config.privacy
    k_select, k_critic, k_gen = jax.random.split(rngs["model"], 3)
    k = jax.random.randint(k_select, (), 0, self.num_discriminators)
    disc, g_sn, metrics = self.gan.critic_steps(
        core.tree_index(state.discs, k), state.gen.params, state.gen.sn, shards["x"][k],
        shards["y"][k], jax.random.fold_in(shard_key, k), k_critic)
    gen, d_sn, g_metrics = self.gan.generator_step_sanitized(
        state.gen.replace(sn=g_sn), disc.net.params, disc.net.sn, k_gen, rngs["noise"],
        clip_norm=p.clip_norm, noise_multiplier=p.noise_multiplier if p.enabled else 0.0,
        private=bool(p.enabled))
    disc = disc.replace(net=disc.net.replace(sn=d_sn))
    decay = core.ema_decay(state.step, g.ema_max_decay)
    state = GSWGANState(gen=gen, ema_params=core.ema_update(state.ema_params, gen.params, decay),
                        ema_sn=core.ema_update(state.ema_sn, gen.sn, decay),
                        discs=core.tree_set(state.discs, k, disc), step=state.step + 1)
    return state, dict(metrics, **g_metrics, discriminator=k.astype(jnp.float32))

  def train_step(self, state, batch, rngs):
    del batch  # batches come from the selected discriminator's shard
    if self._shards is None:
      raise errors.UserError("gswgan: setup() must load the pretrained discriminators and the "
                             "shards before training.")
    return self._train_step(state, self._shards, self._shard_key, rngs)

  def _sample_impl(self, state, rng_key, labels):
    # One power iteration on the EMA's u/v, as upstream's sampling forward; not stored.
    x, _ = self.gan.generate(state.ema_params, state.ema_sn,
                             self.gan.latents(rng_key, labels.shape[0]), labels)
    return x

  def sample(self, state, rng_key, labels):
    return self._sample(state, rng_key, labels)


def build(config, spec, mesh) -> GSWGAN:
  return GSWGAN(config, spec, mesh)
