"""GS-WGAN (Chen, Orekondy, Fritz; NeurIPS 2020): gradient-sanitised generator.

Spec: docs/methods/gswgan.md. Two stages, both run by `--mode=train`:

* warm start (`gswgan.stage` 'pretrain' or 'both'; pretrain.py): K = 1000
  discriminators, each trained non-privately on its own disjoint shard of n = N // K
  examples with a throwaway generator, vmapped over chunks, saved with Orbax;
* main training ('main' or 'both'): one `train_step` = one generator iteration:
  1. critic training, by `gswgan.critic_schedule`:
     'round_robin' (default): the critics (t c, ..., t c + c - 1) mod K, c =
       gswgan.critics_per_step (1), each take `critic_iters` (5) WGAN-GP + drift steps on
       their shard (non-private); a public schedule, independent of which critics the
       rows draw;
     'drawn' (upstream's code): the critic(s) drawn in step 2 are trained instead;
  2. the choice of critics for the rows (secret root), by `gswgan.selection`:
     'per_row' (default): each of the B rows draws its own discriminator uniformly,
       independently of the other rows; 'per_step' (upstream): one for all B rows;
  3. the generator step with B = train.batch_size fakes: g_i = d D_k(i)(x_i, y_i)/d x_i,
     clipped to C and perturbed by N(0, (2 C sigma)^2) per pixel, pulled back through G
     with a VJP of -(1/B) sum_i; Adam on G (core.sanitizer). With the round-robin
     schedule this forward pass does not write the critics' spectral-norm vectors back,
     so a critic's state never depends on the draws;
  4. the EMA copy of G (decay min(1 - 1/(t+1), 0.999), including SN u/v) is updated;
     it is what `sample` uses and what is released.

Privacy (docs/methods/gswgan.md). Under replace-one of a training record only the
critic of the record's shard differs; each sanitised row is a Gaussian mechanism with
sensitivity 2C and multiplier sigma, and a row uses the record's critic with
probability 1/K. The proof that per-step subsampled events compose needs every critic's
state to be a function of its shard, the released history and randomness independent
of the draws: true for the round-robin schedule (condition on the critics' own
randomness, then each step is a fresh subsampled Gaussian; mix over it at the end by
the joint quasi-convexity of Renyi divergence). With 'drawn', a critic is trained only
when drawn, so its state depends on earlier secret draws that past outputs reveal
something about, and no bound is proven (not even upstream's).

* per_row + round_robin: a step is B independently subsampled Gaussians,
  SelfComposed(SampledWithoutReplacement(K, 1, Gaussian(sigma)), B): epsilon 9.243 at
  the paper's settings (upstream printed 9.9926: the same RDP curve with the classic
  conversion);
* per_step + round_robin: one critic serves all B rows, so one record reaches all B
  rows at once (probability 1/K): SampledWithoutReplacement(K, 1, Gaussian(sigma /
  sqrt(B))): about 3e5 at the paper's settings.

`gswgan.accounting`: 'sound' (default; needs round_robin) charges the event of the
algorithm that runs; 'upstream' charges the per-row composition whatever runs, to
reproduce the published number: where that is not a bound every place that shows
epsilon carries a caveat and the bound (`epsilon_bound`: the sound value, or none for
the 'drawn' schedule), and the budget is checked against the bound (so a run without a
proven bound needs privacy.target_epsilon = None). Discriminators, their pretraining
and the critic losses are private and never released (nor logged, without
train.log_private_metrics); the EMA generator is released.
"""

import dp_accounting
import flax
import jax
import jax.numpy as jnp

from dpgen_jax import errors, parallel
from dpgen_jax.methods import averaging, protocol
from dpgen_jax.methods.gswgan import core, pretrain
from dpgen_jax.models import gswgan_nets
from dpgen_jax.privacy import accounting

STAGES = ("pretrain", "main", "both")
ACCOUNTINGS = ("sound", "upstream")
SELECTIONS = ("per_row", "per_step")
SCHEDULES = ("round_robin", "drawn")
UPSTREAM_CAVEAT = ("gswgan.accounting = 'upstream': the epsilon shown is the published "
                   "accounting (B independently subsampled Gaussians per step), which is NOT "
                   "a bound for this algorithm ({why}); epsilon_bound is {bound}")
LATENTS = ("bernoulli", "normal")


def step_event(noise_multiplier: float, num_discriminators: int, batch_size: int,
               selection: str = "per_row", clip_norm: float = 1.0) -> dp_accounting.DpEvent:
  """The event of one generator iteration of the algorithm `selection` (module doc),
  from the per-row sanitiser."""
  k, b = int(num_discriminators), int(batch_size)
  mech = core.sanitizer(clip_norm, noise_multiplier)
  if noise_multiplier <= 0:  # calibration probes sigma = 0
    return dp_accounting.NonPrivateDpEvent()
  if selection == "per_row":  # B rows, each with its own subsampled critic
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(k, 1, mech.event()), b)
  # one critic for all B rows: the B clipped rows move together
  return dp_accounting.SampledWithoutReplacementDpEvent(k, 1, mech.event(units_per_record=b))


def _events(config, sigma: float) -> tuple[dp_accounting.DpEvent, dp_accounting.DpEvent | None]:
  """(the event charged and shown, a bound when the first is not one). Without a proven
  bound (the 'drawn' schedule) the bound is NonPrivateDpEvent: infinite epsilon."""
  g, p = config.gswgan, config.privacy
  args = (sigma, g.num_discriminators, config.train.batch_size)
  sound = step_event(*args, selection=g.selection, clip_norm=p.clip_norm)
  if g.critic_schedule != "round_robin":
    return step_event(*args, selection="per_row", clip_norm=p.clip_norm), \
        dp_accounting.NonPrivateDpEvent()
  if g.accounting == "sound" or g.selection == "per_row":
    return sound, None
  return step_event(*args, selection="per_row", clip_norm=p.clip_norm), sound


def upstream_caveat(config) -> str | None:
  g = config.gswgan
  if g.critic_schedule != "round_robin":
    return UPSTREAM_CAVEAT.format(
        why="critics are trained only when drawn, so their state depends on the secret "
            "draws", bound="none (no bound is proven)")
  if g.selection == "per_step":
    return UPSTREAM_CAVEAT.format(why="one discriminator serves all B rows",
                                  bound="the sound value")
  return None


def declaration(config, num_examples: int, sigma: float) -> protocol.PrivacyDeclaration:
  """One generator iteration's event (and a bound when the shown accounting is not one)."""
  del num_examples  # the sampling is over discriminators, not examples
  step, bound = _events(config, sigma)
  caveat = (upstream_caveat(config) if config.privacy.enabled and
            config.gswgan.accounting == "upstream" else None)
  return protocol.PrivacyDeclaration(
      step_event=step, bound_event=bound, sampling_rate=None, caveat=caveat,
      fields=lambda: privacy_fields(config, sigma))


def privacy_fields(config, sigma: float) -> dict:
  g, p = config.gswgan, config.privacy
  k, b = int(g.num_discriminators), int(config.train.batch_size)
  sigma = sigma if p.enabled else None
  reported_per_row = g.accounting == "upstream" or g.selection == "per_row"
  fields = dict(
      sampling_rate=1.0 / k, noise_multiplier=sigma, clip_norm=p.clip_norm,
      sensitivity=2.0 * p.clip_norm,
      noise_std_per_pixel=2.0 * p.clip_norm * sigma if sigma else None,
      num_discriminators=k, generator_batch_size=b,
      selection=g.selection, critic_schedule=g.critic_schedule,
      critics_trained_per_step=int(g.critics_per_step) if g.critic_schedule == "round_robin"
      else "the drawn ones", accounting=g.accounting,
      compositions_per_step=b if reported_per_row else 1,
      mechanism="per-example clip (C) + Gaussian noise (std 2 C sigma per pixel) of the "
                "critic's gradient w.r.t. each of B generated images; "
                + ("each row's critic drawn uniformly from the K discriminators (disjoint "
                   "shards), independently per row" if g.selection == "per_row" else
                   "one of the K discriminators (disjoint shards) drawn uniformly per step "
                   "for all B rows"),
      sampling_assumption="discriminator selection without replacement (1 of K), replace-one")
  steps = config.train.num_steps
  if not p.enabled or not sigma or steps is None:
    return fields
  kwargs = dict(orders=p.rdp_orders, neighboring=p.neighboring)
  # Both algorithms' values for comparison, and upstream's classic conversion of the
  # per-row curve (its printed 9.9926 at the paper's settings).
  for selection in SELECTIONS:
    total = dp_accounting.SelfComposedDpEvent(step_event(sigma, k, b, selection, p.clip_norm),
                                              int(steps))
    fields[f"epsilon_{selection}"] = accounting.epsilon(total, p.delta, **kwargs)
    if selection == "per_row":
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
  require(g.selection in SELECTIONS,
          f"gswgan.selection must be one of {SELECTIONS}, got {g.selection!r}.")
  require(g.critic_schedule in SCHEDULES,
          f"gswgan.critic_schedule must be one of {SCHEDULES}, got {g.critic_schedule!r}.")
  require(not (p.enabled and g.accounting == "sound" and g.critic_schedule == "drawn"),
          "gswgan.critic_schedule = 'drawn' (upstream: train the critic that was drawn) has no "
          "proven privacy bound: the critics' state then depends on the secret draws. Use "
          "'round_robin', or gswgan.accounting='upstream' with privacy.target_epsilon=None to "
          "reproduce the published claim (shown with a caveat).")
  require(1 <= int(g.critic_chunk) <= int(config.train.batch_size),
          f"gswgan.critic_chunk must be in [1, train.batch_size], got {g.critic_chunk}.")
  require(g.gen_arch in gswgan_nets.GENERATORS,
          f"gswgan.gen_arch must be one of {tuple(gswgan_nets.GENERATORS)}, got {g.gen_arch!r}.")
  require(g.latent_type in LATENTS,
          f"gswgan.latent_type must be one of {LATENTS}, got {g.latent_type!r}.")
  for key in ("num_discriminators", "pretrain_chunk", "model_dim", "d_model_dim", "z_dim",
              "critic_iters"):
    require(int(g[key]) >= 1, f"gswgan.{key} must be a positive integer, got {g[key]}.")
  require(1 <= int(g.critics_per_step) <= int(g.num_discriminators),
          f"gswgan.critics_per_step must be in [1, num_discriminators], got "
          f"{g.critics_per_step}.")
  require(int(g.pretrain_iterations) >= 0,
          f"gswgan.pretrain_iterations must be >= 0, got {g.pretrain_iterations}.")
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


class GSWGAN(protocol.Method):
  """GS-WGAN as a `protocol.Method`: the warm start is the stage 'pretrain', main
  training reads the critics' shards (data_use 'prepared')."""

  # The critics are trained without privacy: their losses and the clean image-gradient
  # norms are private, and which critic was chosen is the subsampling outcome itself
  # (never a metric). The generator update is a function of the sanitised rows.
  public_metrics = frozenset({"g_update_norm"})
  data_use = "prepared"

  def __init__(self, plan, config, spec, mesh):
    super().__init__(plan, config, spec, mesh)
    g = config.gswgan
    self.generator = gswgan_nets.make_generator(g.gen_arch, z_dim=g.z_dim, model_dim=g.model_dim,
                                                num_classes=spec.num_classes)
    self.discriminator = gswgan_nets.ProjectionDiscriminator(model_dim=g.d_model_dim,
                                                             num_classes=spec.num_classes)
    self.gan = core.Core(self.generator, self.discriminator, g,
                         batch_size=config.train.batch_size, num_classes=spec.num_classes)
    self.num_discriminators = int(g.num_discriminators)
    self.stop_after_stages = g.stage == "pretrain"
    self._pretrained = None  # {'params', 'sn'} stacked over K, from `prepare`
    self._shards = None
    self._shard_key = None  # from the secret root, in `prepare`
    self.selection = g.selection
    self.schedule = g.critic_schedule
    self.critics_per_step = int(g.critics_per_step)
    self.critic_chunk = int(g.critic_chunk)
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._sample = jax.jit(self._sample_impl)

  # ---- the warm start and the data main training reads ----

  def _stage(self, dataset=None) -> pretrain.PretrainStage:
    return pretrain.PretrainStage(self.gan, self.config, self.spec, self.mesh, dataset)

  def stages(self, run, dataset, secret):
    """Pretraining (gswgan.stage 'pretrain' or 'both'); 'main' only loads it."""
    return (self._stage(dataset),) if self.config.gswgan.stage in ("pretrain", "both") else ()

  def prepare(self, run, dataset, secret) -> None:
    """Loads the pretrained discriminators (UserError when they are missing) and the
    shards; the critics' batches within their shards come from the secret root."""
    stage = self._stage()
    store = run.stage_store(stage)
    errors.require(store.exists(),
                   f"No pretrained discriminators in {store.directory}. Run pretraining first "
                   f"(--config.gswgan.stage=pretrain or =both on this --workdir), or point "
                   f"gswgan.pretrained_dir at a folder that holds them.")
    self._pretrained = store.load(stage.num_items(), stage.item_structure())
    self._shard_key = secret.key("gswgan/shards", self.config.train.prng_impl)
    x, y = pretrain.shard_arrays(dataset, self.config, self.spec)
    replicated = parallel.replicated(self.mesh)
    self._shards = {"x": jax.device_put(x, replicated), "y": jax.device_put(y, replicated)}

  # ---- state ----

  def init(self, rng_key: jax.Array) -> GSWGANState:
    """Randomly initialised critics (the shapes); `start` puts the pretrained ones in."""
    return jax.jit(self._init_impl)(rng_key)

  def _init_impl(self, rng_key):
    kg, kd = jax.random.split(rng_key)
    gen = self.gan.init_generator(kg)
    nets = jax.vmap(self.gan.init_discriminator)(jax.random.split(kd, self.num_discriminators))
    discs = core.Discriminator(nets, jnp.zeros((self.num_discriminators,), jnp.int32))
    # Distinct buffers for the EMA copy: the step donates the state.
    copy = lambda t: jax.tree.map(lambda a: a * jnp.ones_like(a), t)
    return GSWGANState(gen=gen, ema_params=copy(gen.params), ema_sn=copy(gen.sn), discs=discs,
                       step=jnp.zeros((), jnp.int32))

  def start(self, state: GSWGANState) -> GSWGANState:
    """Main training starts from the pretrained critics, with fresh optimisers (one Adam
    state and step count per critic), as upstream."""
    params, sn = self._pretrained["params"], self._pretrained["sn"]
    opt = jax.jit(jax.vmap(self.gan.d_tx.init))(params)
    discs = core.Discriminator(core.Net(jax.tree.map(jnp.asarray, params),
                                        jax.tree.map(jnp.asarray, sn), opt),
                               jnp.zeros((self.num_discriminators,), jnp.int32))
    return state.replace(discs=discs)

  def released(self, state: GSWGANState) -> dict:
    return {"params": state.ema_params, "sn": state.ema_sn}

  # ---- one generator iteration ----

  def _train_critics(self, state, discs, idx, shards, shard_key, key):
    """`critic_iters` steps of the critics `idx` on their shards; (discs, G's SN, metrics)."""
    def train_one(args):
      disc, k, kk = args
      return self.gan.critic_steps(disc, state.gen.params, state.gen.sn, shards["x"][k],
                                   shards["y"][k], jax.random.fold_in(shard_key, k), kk)

    n = idx.shape[0]
    trained, g_sns, metrics = jax.lax.map(
        train_one, (core.tree_index(discs, idx), idx, jax.random.split(key, n)),
        batch_size=min(self.critic_chunk, n))
    # A critic listed twice keeps its first copy: later duplicates write out of bounds.
    first = jnp.argmax(idx[None, :] == idx[:, None], axis=1) == jnp.arange(n)
    target = jnp.where(first, idx, self.num_discriminators)
    merged = jax.tree.map(lambda a, v: a.at[target].set(v, mode="drop"), discs, trained)
    # G's SN vectors after the last critic's steps (functions of G only).
    return merged, core.tree_index(g_sns, n - 1), jax.tree.map(jnp.mean, metrics)

  def _step(self, state: GSWGANState, shards, shard_key, rngs):
    g, plan = self.config.gswgan, self.plan
    k_critic, k_gen = jax.random.split(rngs["model"])
    b, num = int(self.config.train.batch_size), self.num_discriminators
    sanitize = dict(clip_norm=plan.clip_norm,
                    noise_multiplier=plan.noise_multiplier if plan.private else 0.0,
                    private=plan.private)
    # The secret draws: one critic per row, or one for the step. They are part of the
    # mechanism, so they come from its key (the critics' own randomness from 'model').
    draws = jax.random.randint(jax.random.fold_in(rngs["noise"], 0x5E1EC7),
                               (b if self.selection == "per_row" else 1,), 0, num)
    if self.schedule == "round_robin":  # public: independent of the draws
      scheduled = (state.step * self.critics_per_step + jnp.arange(self.critics_per_step)) % num
      discs, g_sn, metrics = self._train_critics(state, state.discs, scheduled, shards,
                                                 shard_key, k_critic)
    else:  # upstream: the drawn critics are trained
      discs, g_sn, metrics = self._train_critics(state, state.discs, draws, shards,
                                                 shard_key, k_critic)
    used = core.tree_index(discs, draws)
    if self.selection == "per_row":
      image_grads = lambda x, y: self.gan.per_row_image_grads(
          used.net.params, used.net.sn, x, y, self.critic_chunk)
    else:
      one = core.tree_index(used, 0)
      image_grads = lambda x, y: self.gan.critic_image_grads(one.net.params, one.net.sn, x, y)
    gen, d_sn, g_metrics = self.gan.generator_step_sanitized(
        state.gen.replace(sn=g_sn), image_grads, k_gen, rngs["noise"], **sanitize)
    if self.schedule == "drawn":  # upstream: the forward's power iteration is kept
      if self.selection == "per_step":
        d_sn = jax.tree.map(lambda v: v[None], d_sn)
      discs = self._write_sn(discs, draws, d_sn)
    decay = core.ema_decay(state.step, g.ema_max_decay)
    state = GSWGANState(gen=gen, ema_params=averaging.blend(state.ema_params, gen.params, decay),
                        ema_sn=averaging.blend(state.ema_sn, gen.sn, decay),
                        discs=discs, step=state.step + 1)
    return state, dict(metrics, **g_metrics)

  def _write_sn(self, discs, idx, sn):
    first = jnp.argmax(idx[None, :] == idx[:, None], axis=1) == jnp.arange(idx.shape[0])
    target = jnp.where(first, idx, self.num_discriminators)
    new_sn = jax.tree.map(lambda a, v: a.at[target].set(v, mode="drop"), discs.net.sn, sn)
    return discs.replace(net=discs.net.replace(sn=new_sn))

  def train_step(self, state, batch, rngs):
    del batch  # data_use 'prepared': the critics read their shards
    if self._shards is None:
      raise errors.UserError("gswgan: prepare() must load the pretrained discriminators and "
                             "the shards before training.")
    return self._train_step(state, self._shards, self._shard_key, rngs)

  def _sample_impl(self, state, rng_key, labels):
    # One power iteration on the EMA's u/v, as upstream's sampling forward; not stored.
    x, _ = self.gan.generate(state.ema_params, state.ema_sn,
                             self.gan.latents(rng_key, labels.shape[0]), labels)
    return x

  def sample(self, state, rng_key, labels):
    return self._sample(state, rng_key, labels)


DEFINITION = protocol.MethodDefinition(name="gswgan", validate=validate, privacy=declaration,
                                       build=GSWGAN)
