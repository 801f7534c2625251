"""DP-GAN of "Private GANs, revisited" (Bie, Kamath, Zhang; TMLR 2023).

Spec: docs/methods/dpgan.md. One call of `train_step` is one logical discriminator
step, the unit the accountant composes:

  1. a Poisson batch of real examples (rate q = 1/ceil(N/bsz), padded, masked);
  2. round(qN) fresh fakes with uniform labels (stop-gradient into G);
  3. every example, real and fake, clipped to C over all of D's parameters (Opacus
     1.1.3 semantics); one draw of N(0, (sigma C)^2); division by the constant
     int(qN) + round(qN); Adam(2e-4, 0.5, 0.999) on D;
  4. when the D steps since the last G step reach n_D: a probe of D's accuracy on
     `bsz` fresh fakes, one non-private G step (non-saturating loss), and the
     adaptive n_D update (ladder 1, 2, 5, ..., 5000; EMA beta; threshold; grace).

Privacy: only step 3 touches private data; the sum of clipped gradients has
add/remove-one sensitivity C (fakes are clipped too but are not data), so each step is
the Poisson-subsampled Gaussian mechanism with noise multiplier sigma. The G step and
the n_D schedule use only D (already private) and G samples: post-processing, zero
cost, and the total number of D steps is fixed, so the accountant is unchanged.
"""

import math

import flax
import jax
import jax.numpy as jnp
import optax

from dpgen_jax import errors
from dpgen_jax.methods import averaging, protocol
from dpgen_jax.models import dcgan
from dpgen_jax.privacy import clipping, discriminator, mechanisms

ND_LADDER = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def sampling_rate(batch_size: int, num_examples: int) -> float:
  """Opacus's Poisson rate: q = 1 / ceil(N / bsz) (dpgan.md §2.4)."""
  return 1.0 / math.ceil(num_examples / batch_size)


def fake_batch_size(batch_size: int, num_examples: int, num_fakes: int = 0) -> int:
  """Fakes per D step, and the G batch size: `num_fakes`, or round(qN) when 0 (upstream)."""
  if num_fakes:
    return int(num_fakes)
  return int(round(sampling_rate(batch_size, num_examples) * num_examples))


def dp_divisor(batch_size: int, num_examples: int, num_fakes: int = 0) -> int:
  """int(qN) + fakes: the fixed divisor of the noised sum; upstream's int(qN) + round(qN)
  (dpgan.md §7 #1) with the default number of fakes. It never depends on the data."""
  qn = sampling_rate(batch_size, num_examples) * num_examples
  return int(qn) + fake_batch_size(batch_size, num_examples, num_fakes)


LOSSES = ("bce", "hinge")


def d_row_loss(loss: str, logit, target):
  """One row's discriminator loss: BCE on the logit, or the hinge loss
  max(0, 1 - logit) for reals (target 1) and max(0, 1 + logit) for fakes (target 0)."""
  if loss == "hinge":
    sign = 2.0 * target - 1.0
    return jax.nn.relu(1.0 - sign * logit)
  return bce_with_logits(logit, target)


def g_loss_from_logits(loss: str, logits):
  """The generator's loss on D's logits of its fakes: non-saturating BCE
  (softplus(-logit), upstream) or, for the hinge loss, -logit."""
  if loss == "hinge":
    return -jnp.mean(logits)
  return jnp.mean(jax.nn.softplus(-logits))


def mechanism(noise_multiplier: float, clip_norm: float, batch_size: int, num_examples: int,
              num_fakes: int = 0) -> mechanisms.GaussianSum:
  """The D step's mechanism: the clipped sum over real and fake rows (sensitivity C:
  one real example adds or removes one clipped gradient; fakes are not data), noise
  N(0, (sigma C)^2), divided by the constant int(qN) + fakes."""
  return discriminator.mechanism(noise_multiplier, clip_norm,
                                 dp_divisor(batch_size, num_examples, num_fakes), "rows")


def declaration(config, num_examples: int, sigma: float) -> protocol.PrivacyDeclaration:
  """One D step: PoissonSampled(q, Gaussian(sigma)) from the mechanism."""
  bsz, g = config.train.batch_size, config.dpgan
  q = sampling_rate(bsz, num_examples)
  mech = mechanism(sigma, config.privacy.clip_norm, bsz, num_examples, g.num_fakes)
  fakes = fake_batch_size(bsz, num_examples, g.num_fakes)
  fields = lambda: dict(sampling_rate=q, noise_multiplier=sigma if config.privacy.enabled else None,
                clip_norm=config.privacy.clip_norm, expected_real_batch_size=q * num_examples,
                fake_batch_size=fakes, g_batch_size=int(g.g_batch_size or fakes),
                gradient_divisor=mech.divisor,
                mechanism="DP-SGD on D: per-example clipping of real and fake examples, "
                          "one Gaussian draw per D step (Poisson-subsampled Gaussian)",
                sampling_assumption="Poisson sampling, performed as accounted",
                d_steps_per_g_step=g.d_steps_per_g_step, adaptive_n_d=g.adaptive)
  return protocol.PrivacyDeclaration(step_event=mech.poisson_event(q), sampling_rate=q,
                                     fields=fields)


def validate(config, spec) -> None:
  """Config checks of dpgan.md §2.8 plus data compatibility (spec may be None)."""
  g = config.dpgan
  require = errors.require
  require(g.d_steps_per_g_step >= 1,
          f"dpgan.d_steps_per_g_step must be >= 1, got {g.d_steps_per_g_step}.")
  steps = config.train.num_steps
  if steps is not None:
    require(steps % g.d_steps_per_g_step == 0,
            f"train.num_steps = {steps} (the number of D steps) must be a multiple of "
            f"dpgan.d_steps_per_g_step = {g.d_steps_per_g_step}, as upstream requires.")
  if g.adaptive:
    require(g.d_steps_per_g_step in ND_LADDER,
            f"with dpgan.adaptive, dpgan.d_steps_per_g_step must be on the ladder "
            f"{ND_LADDER}; got {g.d_steps_per_g_step}.")
  require(0.0 <= g.ds_threshold <= 1.0, "dpgan.ds_threshold must be in [0, 1].")
  require(0.0 <= g.ds_beta <= 1.0, "dpgan.ds_beta must be in [0, 1].")
  require(g.ds_grace >= 0, "dpgan.ds_grace must be a non-negative integer.")
  require(g.d_width >= 2 and g.d_width % 2 == 0,
          f"dpgan.d_width must be even and positive, got {g.d_width}.")
  require(g.g_width >= 1, f"dpgan.g_width must be positive, got {g.g_width}.")
  require(g.loss in LOSSES, f"dpgan.loss must be one of {LOSSES}, got {g.loss!r}.")
  for key in ("g_beta1", "g_beta2", "d_beta1", "d_beta2"):
    require(0.0 <= g[key] < 1.0, f"dpgan.{key} must be in [0, 1), got {g[key]}.")
  require(g.g_lr > 0 and g.d_lr > 0, "dpgan.g_lr and dpgan.d_lr must be positive.")
  require(0.0 <= g.g_ema_decay < 1.0,
          f"dpgan.g_ema_decay must be in [0, 1) (0: no average), got {g.g_ema_decay}.")
  require(g.num_fakes >= 0, f"dpgan.num_fakes must be >= 0 (0: round(qN)), got {g.num_fakes}.")
  require(g.g_norm in dcgan.G_NORM_MODES,
          f"dpgan.g_norm must be one of {dcgan.G_NORM_MODES}, got {g.g_norm!r}.")
  require(g.g_steps_per_cycle >= 1,
          f"dpgan.g_steps_per_cycle must be >= 1, got {g.g_steps_per_cycle}.")
  require(g.g_batch_size >= 0,
          f"dpgan.g_batch_size must be >= 0 (0: the fakes per D step), got {g.g_batch_size}.")
  require(g.d_label in dcgan.D_LABEL_MODES,
          f"dpgan.d_label must be one of {dcgan.D_LABEL_MODES}, got {g.d_label!r}.")
  require(g.aux_weight >= 0.0, f"dpgan.aux_weight must be >= 0, got {g.aux_weight}.")
  require(config.privacy.clipping == "flat",
          "dpgan clips over all of D's parameters (privacy.clipping = 'flat'), as upstream.")
  if spec is None:
    return
  require(spec.kind == "image", f"dpgan trains on images; {spec.name} is {spec.kind}.")
  h, w, _ = spec.example_shape
  require(h == w and h in dcgan.SUPPORTED_RESOLUTIONS,
          f"dpgan's DCGAN needs 28x28 or 32x32 images; {spec.name} has {h}x{w}. "
          f"Set data.image_size=28 (e.g. for digits) to resize.")


@flax.struct.dataclass
class DPGANState:
  g_params: dict
  d_params: dict
  g_opt: optax.OptState
  d_opt: optax.OptState
  d_step: jax.Array  # logical D steps taken
  since_g: jax.Array  # D steps since the last G step
  g_steps: jax.Array  # G steps taken
  nd_index: jax.Array  # position of the current n_D on ND_LADDER (or -1: fixed n_D)
  ema_acc_fake: jax.Array  # EMA of D's accuracy on fresh fakes (0 before the first G step)
  g_steps_at_nd: jax.Array  # G steps since n_D last changed (the grace counter)
  last_g_loss: jax.Array
  ema_g_params: dict  # the average of G (dpgan.g_ema_decay > 0) or a size-1 placeholder


def adaptive_nd_update(nd_index, ema, g_steps_at_nd, acc_fake, first, *, beta, threshold,
                       grace, adaptive: bool):
  """dpgan.md §2.8: EMA of the fake accuracy, then climb the ladder, never descend.

  `first` is True at the first G step (the EMA starts at that accuracy). Returns
  (nd_index, ema, g_steps_at_nd) after one G step.
  """
  ema = jnp.where(first, acc_fake, beta * ema + (1.0 - beta) * acc_fake)
  g_steps_at_nd = g_steps_at_nd + 1
  if not adaptive:
    return nd_index, ema, g_steps_at_nd
  climb = (g_steps_at_nd >= grace) & (ema <= threshold)
  nd_index = jnp.where(climb, jnp.minimum(nd_index + 1, len(ND_LADDER) - 1), nd_index)
  return nd_index, ema, jnp.where(climb, 0, g_steps_at_nd)


def current_nd(state: DPGANState, fixed_nd: int) -> jax.Array:
  return jnp.where(state.nd_index >= 0, jnp.asarray(ND_LADDER)[jnp.maximum(state.nd_index, 0)],
                   fixed_nd)


def bce_with_logits(logit, target):
  return optax.sigmoid_binary_cross_entropy(logit, target)


def private_discriminator_grad(d_scores, d_params, real: dict, fake: dict, noise_key, *,
                               clip: clipping.ClippingSpec, mechanism: mechanisms.GaussianSum,
                               mesh=None, microbatch_size=None, strategy: str = "vmap",
                               loss_name: str = "bce", aux_weight: float = 0.0):
  """The privatised D gradient of dpgan.md §2.5 steps 3-8, and per-row logits.

  Every real and fake row is one record (privacy.discriminator, grouping 'rows'): its
  loss gradient (BCE or hinge, `loss_name`; target 1 real, 0 fake; plus, for real rows,
  `aux_weight` times the auxiliary classifier's cross-entropy) is clipped to C and
  `mechanism` adds one N(0, (sigma C)^2) draw to the sum and divides it by its constant.
  `d_scores(params, x, y)` gives (logits, per-row class cross-entropies).
  Returns (gradient, per-row logits, norms, present) with rows ordered fakes, reals,
  padding.
  """
  def row_loss(params, x, y, is_real):
    logit, ce = d_scores(params, x[None], y[None])
    loss = d_row_loss(loss_name, logit[0], is_real.astype(jnp.float32))
    return loss + aux_weight * jnp.where(is_real, ce[0], 0.0), logit[0]

  grad, norms, present, logits = discriminator.real_fake_gradient(
      row_loss, d_params, real, fake, noise_key, mechanism=mechanism, clip=clip,
      grouping="rows", mesh=mesh, microbatch_size=microbatch_size, strategy=strategy,
      has_aux=True)
  return grad, logits, norms, present


class DPGAN(protocol.Method):
  """dpgan-revisit as a `protocol.Method`."""

  # D is trained with DP-SGD, so anything computed from D and generated samples is
  # post-processing; d_loss, d_acc_real and d_clip_fraction read the real batch.
  public_metrics = frozenset({"g_loss", "g_steps", "n_d", "ema_acc_fake", "d_acc_fake"})

  def __init__(self, plan, config, spec, mesh):
    super().__init__(plan, config, spec, mesh)
    g = config.dpgan
    h, _, c = spec.example_shape
    self.generator, self.discriminator = dcgan.make_dcgan(
        h, c, spec.num_classes, small=g.small, g_width=g.g_width, d_width=g.d_width,
        latent_dim=g.latent_dim, d_label=g.d_label, g_norm=g.g_norm)
    n, bsz = spec.num_train, config.train.batch_size
    self.q = sampling_rate(bsz, n)
    self.num_fakes = fake_batch_size(bsz, n, g.num_fakes)
    self.divisor = dp_divisor(bsz, n, g.num_fakes)
    self.loss = g.loss
    self.aux_weight = float(g.aux_weight) if g.d_label == "auxiliary" else 0.0
    self.ema = float(g.g_ema_decay)
    self.probe_size = int(g.probe_batch_size or bsz)
    self.g_batch = int(g.g_batch_size or self.num_fakes)
    self.g_per_cycle = int(g.g_steps_per_cycle)
    self.g_tx = optax.adam(g.g_lr, b1=g.g_beta1, b2=g.g_beta2, eps=1e-8)
    self.d_tx = optax.adam(g.d_lr, b1=g.d_beta1, b2=g.d_beta2, eps=1e-8)
    self.clip = clipping.ClippingSpec(clip_norm=plan.clip_norm)
    self.mechanism = (mechanism(plan.noise_multiplier, plan.clip_norm, bsz, n, g.num_fakes)
                      if plan.private else None)
    self.max_physical = int(config.privacy.max_physical_bsz)
    self.strategy = config.privacy.clipping_strategy
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._sample = jax.jit(self._sample_impl)

  def _fakes(self, g_params, key, n):
    kz, ky = jax.random.split(key)
    z = jax.random.normal(kz, (n, self.config.dpgan.latent_dim))
    labels = jax.random.randint(ky, (n,), 0, self.spec.num_classes)
    return self.generator.apply({"params": g_params}, z, labels), labels

  def _d_scores(self, params, x, y):
    """(D's logits, per-row cross-entropy of its auxiliary classifier on labels y; zeros
    without one)."""
    out = self.discriminator.apply({"params": params}, x, y)
    if self.config.dpgan.d_label != "auxiliary":
      return out, jnp.zeros_like(out)
    logits, class_logits = out
    return logits, optax.softmax_cross_entropy_with_integer_labels(class_logits, y)

  def _d_apply(self, params, x, y):
    return self._d_scores(params, x, y)[0]

  def init(self, rng):
    # One jitted computation: eager Flax init compiles every initialiser separately.
    return jax.jit(self._init_impl)(rng)

  def _init_impl(self, rng):
    kg, kd = jax.random.split(rng)
    h, w, c = self.spec.example_shape
    g_params = self.generator.init(kg, jnp.zeros((1, self.config.dpgan.latent_dim)),
                                   jnp.zeros((1,), jnp.int32))["params"]
    d_params = self.discriminator.init(kd, jnp.zeros((1, h, w, c)),
                                       jnp.zeros((1,), jnp.int32))["params"]
    adaptive = bool(self.config.dpgan.adaptive)
    start = ND_LADDER.index(self.config.dpgan.d_steps_per_g_step) if adaptive else -1
    zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the step donates them
    return DPGANState(g_params=g_params, d_params=d_params, g_opt=self.g_tx.init(g_params),
                      d_opt=self.d_tx.init(d_params), d_step=zero(), since_g=zero(),
                      g_steps=zero(), nd_index=jnp.asarray(start, jnp.int32),
                      ema_acc_fake=jnp.zeros((), jnp.float32), g_steps_at_nd=zero(),
                      last_g_loss=jnp.zeros((), jnp.float32),
                      ema_g_params=averaging.initial(g_params, self.ema))

  def _row_layout(self, num_real: int) -> tuple[int, int | None]:
    """(rows of the combined real + fake batch, microbatch size per device).

    Rows are padded so that they split evenly over the devices and, when a device's
    share exceeds privacy.max_physical_bsz, into equal chunks no larger than it
    (dpgan.md §2.6: the sum, hence the update, does not depend on the chunking).
    """
    devices = self.mesh.size
    local = -(-(self.num_fakes + num_real) // devices)
    if not self.max_physical or local <= self.max_physical:
      return local * devices, None
    chunks = -(-local // self.max_physical)
    size = -(-local // chunks)
    return devices * chunks * size, size

  def _d_update(self, state, batch, key_fake, key_noise):
    """One logical D step; returns (d_params, d_opt, metrics)."""
    x_fake, y_fake = self._fakes(state.g_params, key_fake, self.num_fakes)
    fake = {"x": jax.lax.stop_gradient(x_fake), "y": y_fake}
    real = {"x": batch["x"], "y": batch["y"], "mask": batch["mask"]}
    num_real = real["mask"].shape[0]
    if self.plan.private:
      _, microbatch = self._row_layout(num_real)
      grad, logits, norms, mask = private_discriminator_grad(
          self._d_scores, state.d_params, real, fake, key_noise, clip=self.clip,
          mechanism=self.mechanism, mesh=self.mesh, microbatch_size=microbatch,
          strategy=self.strategy, loss_name=self.loss, aux_weight=self.aux_weight)
      clipped = jnp.sum((norms > self.clip.clip_norm) & mask) / jnp.sum(mask)
    else:  # non-private (dpgan.md §2.9): mean loss over the realised real + fake batch
      x = jnp.concatenate([fake["x"], real["x"]])
      y = jnp.concatenate([fake["y"], real["y"]])
      mask = jnp.concatenate([jnp.ones((self.num_fakes,), bool), real["mask"]])
      target = (jnp.arange(mask.shape[0]) >= self.num_fakes).astype(jnp.float32)

      def mean_loss(params):
        logits, ce = self._d_scores(params, x, y)
        losses = d_row_loss(self.loss, logits, target) + self.aux_weight * target * ce
        return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.sum(mask), logits

      grad, logits = jax.grad(mean_loss, has_aux=True)(state.d_params)
      clipped = jnp.zeros(())
    updates, d_opt = self.d_tx.update(grad, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, updates)
    is_fake = jnp.arange(mask.shape[0]) < self.num_fakes  # rows: fakes, reals, padding
    losses = d_row_loss(self.loss, logits, (~is_fake).astype(jnp.float32))
    real_rows = mask & ~is_fake
    metrics = {
        "d_loss": jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.sum(mask),
        "d_acc_real": jnp.sum(real_rows & (logits > 0)) / jnp.maximum(jnp.sum(real_rows), 1),
        "d_acc_fake": jnp.sum(is_fake & (logits < 0)) / self.num_fakes,
        "d_clip_fraction": clipped,
    }
    return d_params, d_opt, metrics

  def _g_update(self, state: DPGANState, key) -> DPGANState:
    """The probe, the non-private G step(s) and the n_D schedule (dpgan.md §2.7).

    With dpgan.g_steps_per_cycle = k > 1, k G steps (fresh fakes each, the same D)
    follow every n_D D steps; the n_D schedule still sees one probe per cycle.
    """
    g = self.config.dpgan
    k_probe, k_g = jax.random.split(key)
    x_probe, y_probe = self._fakes(state.g_params, k_probe, self.probe_size)
    acc_fake = jnp.mean(self._d_apply(state.d_params, x_probe, y_probe) < 0)

    def g_loss(g_params, k):
      x, y = self._fakes(g_params, k, self.g_batch)
      logits, ce = self._d_scores(state.d_params, x, y)
      return g_loss_from_logits(self.loss, logits) + self.aux_weight * jnp.mean(ce)

    g_params, g_opt, ema_g, g_steps = (state.g_params, state.g_opt, state.ema_g_params,
                                       state.g_steps)
    keys = [k_g] if self.g_per_cycle == 1 else list(jax.random.split(k_g, self.g_per_cycle))
    for k in keys:
      loss, grad = jax.value_and_grad(g_loss)(g_params, k)
      updates, g_opt = self.g_tx.update(grad, g_opt, g_params)
      g_params = optax.apply_updates(g_params, updates)
      if self.ema:
        ema_g = averaging.update(ema_g, g_params, g_steps, self.ema)
      g_steps = g_steps + 1
    nd_index, ema, at_nd = adaptive_nd_update(
        state.nd_index, state.ema_acc_fake, state.g_steps_at_nd, acc_fake, state.g_steps == 0,
        beta=g.ds_beta, threshold=g.ds_threshold, grace=g.ds_grace, adaptive=bool(g.adaptive))
    return state.replace(g_params=g_params, g_opt=g_opt, ema_g_params=ema_g,
                         since_g=jnp.zeros_like(state.since_g), g_steps=g_steps,
                         nd_index=nd_index, ema_acc_fake=ema, g_steps_at_nd=at_nd,
                         last_g_loss=loss)

  def _step(self, state: DPGANState, batch, rngs):
    k_fake, k_g = jax.random.split(rngs["model"])
    d_params, d_opt, metrics = self._d_update(state, batch, k_fake, rngs["noise"])
    state = state.replace(d_params=d_params, d_opt=d_opt, d_step=state.d_step + 1,
                          since_g=state.since_g + 1)
    n_d = current_nd(state, self.config.dpgan.d_steps_per_g_step)
    state = jax.lax.cond(state.since_g >= n_d, lambda s: self._g_update(s, k_g),
                         lambda s: s, state)
    metrics.update(g_loss=state.last_g_loss, g_steps=state.g_steps,
                   n_d=current_nd(state, self.config.dpgan.d_steps_per_g_step),
                   ema_acc_fake=state.ema_acc_fake)
    return state, metrics

  def train_step(self, state, batch, rngs):
    return self._train_step(state, batch, rngs)

  def _sample_impl(self, state, rng, labels):
    z = jax.random.normal(rng, (labels.shape[0], self.config.dpgan.latent_dim))
    params = state.ema_g_params if self.ema else state.g_params
    return self.generator.apply({"params": params}, z, labels)

  def sample(self, state, rng, labels):
    return self._sample(state, rng, labels)


DEFINITION = protocol.MethodDefinition(name="dpgan", validate=validate, privacy=declaration,
                                       build=DPGAN)
