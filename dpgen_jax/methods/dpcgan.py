"""DP-CGAN (Torkzadehmahani, Kairouz, Paten 2019; TF2 re-implementation of R. S. Carvalho).

Spec: docs/methods/dpcgan.md. One call of `train_step` is one accounted step:

  1. a Poisson batch of real examples (q = B/N, padded, masked), mapped to the model
     domain [-1, 1] by 2x - 1 (images and tabular rows alike; `sample` maps back);
  2. B latents z ~ N(0, I) and B labels uniform over the classes (G never sees real
     labels), fakes x_f = G(z, l);
  3. the D step (dpcgan.md §3.1-3.2) with m = dpcgan.num_microbatches:
       update = (1/m) [ sum_j clip_C(mean grad of real microbatch j) + N(0, (sigma C)^2 I)
                       + sum_j clip_C(mean grad of fake microbatch j) ]
     per-example BCE on logits (real target 1, fake 0), clipping by the global norm
     over all of D's variables, one noise draw, ONE combined SGD step on D (lr 0.15
     constant as upstream's code, or the intended decay with dpcgan.d_lr_decay);
  4. the G step with the same z and labels against the updated D: non-saturating
     BCE, Adam(1e-3, 0.9, 0.999, eps 1e-7).

Microbatches. m = B (both upstream experiments): every real example is its own
microbatch, i.e. the core per-example clipped sum (privacy/clipping.py). 1 <= m < B:
each realised real example gets a microbatch id drawn i.i.d. uniformly from
{0, ..., m-1} (from the model key: independent of the data and of the other
examples); microbatch j contributes clip_C of the mean gradient of its members, an
empty one contributes 0. Fakes (always B of them) form m fixed groups of B/m. The
divisor is the constant m, never the realised batch size. m = 1 clips the batch-mean
gradient once (the original paper's variant).

Privacy (add/remove-one, Poisson sampling as performed). Only the real term reads
private data; the fake term is a function of (D, G, z, l), i.e. of earlier releases
and public randomness, so it does not change the sensitivity (it is clipped only
because upstream does). Sensitivity of the real sum S_real:
  * m = B: adding or removing one example adds or removes one clipped gradient, so
    ||dS_real|| <= C; noise std sigma C is the Gaussian mechanism with multiplier
    sigma.
  * m < B: condition on the ids. Adding x (id j) changes only microbatch j's mean,
    and two vectors of norm <= C differ by at most 2C (attained when the mean flips
    direction), so ||dS_real|| <= 2C and the same noise sigma C is the Gaussian
    mechanism with multiplier sigma / 2 (TF-Privacy's used_microbatching=True,
    TF-Privacy's dp_optimizer). The ids must be i.i.d. per example: a fixed partition of the
    padded rows by position would not do, since adding one example to a Poisson batch
    shifts the position of others and moves them between microbatches.
  The accountant composes PoissonSampledDpEvent(q, GaussianDpEvent(sigma / f)),
  f = 1 (m = B) or 2 (m < B), once per step. The G step, its Adam state and the
  sample grids only read D (already private) and public randomness: post-processing.
  Upstream's Thyroid notebook fed real batch labels to G (not covered by its
  accounting); this implementation never does.
"""

import math

import dp_accounting
import flax
import jax
import jax.numpy as jnp
import optax

from dpgen_jax import errors
from dpgen_jax.data import tabular
from dpgen_jax.methods import protocol
from dpgen_jax.models import mlp_gan
from dpgen_jax.privacy import accounting, clipping, discriminator, mechanisms


def sampling_rate(batch_size: int, num_examples: int) -> float:
  """TF-Privacy's Poisson rate q = B / N (dpcgan.md §3.3)."""
  return batch_size / num_examples


def grouping(num_microbatches: int, batch_size: int) -> str:
  """How privacy.discriminator groups the rows: per example (m = B) or microbatches."""
  return "rows" if num_microbatches == batch_size else "microbatches"


def mechanism(noise_multiplier: float, clip_norm: float, num_microbatches: int,
              batch_size: int) -> mechanisms.GaussianSum:
  """The D step's mechanism: the real sum of clipped records (examples for m = B,
  microbatch means else, whose sensitivity the grouping states), noise std sigma C in
  both cases (as upstream), divided by the constant m."""
  return discriminator.mechanism(noise_multiplier, clip_norm, num_microbatches,
                                 grouping(num_microbatches, batch_size))


def declaration(config, num_examples: int, sigma: float) -> protocol.PrivacyDeclaration:
  """One step: PoissonSampled(B/N, Gaussian(sigma / f)) from the mechanism."""
  q = sampling_rate(config.train.batch_size, num_examples)
  mech = mechanism(sigma, config.privacy.clip_norm, config.dpcgan.num_microbatches,
                   config.train.batch_size)
  event = mech.poisson_event(q)
  return protocol.PrivacyDeclaration(
      step_event=event, sampling_rate=q,
      fields=lambda: privacy_fields(config, num_examples, sigma, event))


def privacy_fields(config, num_examples: int, sigma: float, event) -> dict:
  g, p, bsz = config.dpcgan, config.privacy, config.train.batch_size
  m = g.num_microbatches
  f = mechanism(1.0, p.clip_norm, m, bsz).sensitivity_factor
  q = sampling_rate(bsz, num_examples)
  sigma = sigma if p.enabled else None
  fields = dict(
      sampling_rate=q, noise_multiplier=sigma,
      accounted_noise_multiplier=None if sigma is None else sigma / f,
      clip_norm=p.clip_norm, num_microbatches=m, per_example_clipping=m == bsz,
      microbatch_sensitivity_factor=f, l2_sensitivity=f * p.clip_norm,
      noise_stddev=None if sigma is None else sigma * p.clip_norm, gradient_divisor=m,
      expected_real_batch_size=q * num_examples, fake_batch_size=bsz,
      mechanism="DP-SGD on D: clipped real microbatch means + one Gaussian draw, fake "
                "microbatch means clipped only, one combined update; G post-processing",
      sampling_assumption="Poisson sampling with q = B/N, performed as accounted (upstream "
                          "shuffled into fixed-size batches and accounted them as Poisson)",
      generator_labels="uniform over the classes (no private labels reach G)",
      upstream_epsilon=g.get("upstream_epsilon"),
      upstream_accounting="TF-Privacy 0.2.2 compute_dp_sgd_privacy: tf_privacy orders, "
                          "classic RDP conversion, sigma not halved for microbatches")
  steps = config.train.num_steps
  if sigma is not None and steps:
    # This run's RDP curve under upstream's conversion and orders, to set beside theirs.
    orders, rdp = accounting.rdp_curve(
        dp_accounting.SelfComposedDpEvent(event, int(steps)),
        orders="tf_privacy")
    fields["epsilon_classic_tf_privacy_orders"] = accounting.classic_epsilon(
        orders, rdp, p.delta)[0]
  return fields


def validate(config, spec) -> None:
  """Config checks (ConfigError with one message) plus data compatibility."""
  g, require = config.dpcgan, errors.require
  bsz, m = config.train.batch_size, g.num_microbatches
  require(isinstance(m, int) and 1 <= m <= bsz and bsz % m == 0,
          f"dpcgan.num_microbatches = {m} must divide train.batch_size = {bsz} "
          f"(1 <= m <= B; m = B clips every example, as both upstream experiments).")
  require(g.latent_dim >= 1 and g.d_hidden >= 1 and g.g_hidden >= 1,
          "dpcgan.latent_dim, dpcgan.d_hidden and dpcgan.g_hidden must be positive.")
  for key in ("d_lr", "d_lr_end", "g_lr", "g_eps", "gumbel_temperature"):
    require(g[key] > 0, f"dpcgan.{key} must be positive, got {g[key]}.")
  require(g.d_lr_decay_steps >= 1, "dpcgan.d_lr_decay_steps must be >= 1.")
  require(0 <= g.g_beta1 < 1 and 0 <= g.g_beta2 < 1, "dpcgan.g_beta1/g_beta2 must be in [0, 1).")
  require(g.g_head in mlp_gan.HEADS, f"dpcgan.g_head must be one of {mlp_gan.HEADS}, "
                                     f"got {g.g_head!r}.")
  require(g.binary_mode in mlp_gan.BINARY_MODES,
          f"dpcgan.binary_mode must be one of {mlp_gan.BINARY_MODES}, got {g.binary_mode!r}.")
  require(config.privacy.clipping == "flat",
          "dpcgan clips each microbatch over all of D's variables (privacy.clipping = 'flat').")
  if spec is None:
    return
  require(spec.kind in ("image", "tabular"), f"dpcgan needs images or tables, not {spec.kind}.")
  require(g.g_head == "tanh" or spec.kind == "tabular",
          f"dpcgan.g_head = 'tabular' needs a tabular dataset; {spec.name} is {spec.kind}.")


def bce_with_logits(logit, target):
  return optax.sigmoid_binary_cross_entropy(logit, target)


def discriminator_grad(d_apply, d_params, real: dict, fake: dict, group_key, noise_key, *,
                       num_microbatches: int, clip: clipping.ClippingSpec,
                       mechanism: mechanisms.GaussianSum, mesh=None,
                       chunk_size: int | None = None, strategy: str = "vmap"):
  """The privatised D gradient of dpcgan.md §3.2 (see the module docstring), from
  privacy.discriminator: per-example records for m = B, microbatch means (ids i.i.d. per
  real row from `group_key`, fakes in m fixed groups) for m < B.

  Args:
    real: {'x', 'y', 'mask'}: the padded Poisson batch in the model domain.
    fake: {'x', 'y'}: the B fakes (B a multiple of num_microbatches).
  Returns:
    (gradient, norms, present): (S_real + S_fake + N(0, (sigma C)^2 I)) / m, the
    unclipped norms of the records and which records exist.
  """
  def row_loss(params, x, y, is_real):
    return bce_with_logits(d_apply(params, x[None], y[None])[0], is_real.astype(jnp.float32))

  grad, norms, present, _ = discriminator.real_fake_gradient(
      row_loss, d_params, real, fake, noise_key, mechanism=mechanism, clip=clip,
      grouping=grouping(num_microbatches, fake["x"].shape[0]), num_groups=num_microbatches,
      group_key=group_key, mesh=mesh, microbatch_size=chunk_size, strategy=strategy)
  return grad, norms, present


@flax.struct.dataclass
class DPCGANState:
  g_params: dict
  d_params: dict
  g_opt: optax.OptState
  d_opt: optax.OptState
  step: jax.Array


def d_learning_rate(config) -> optax.Schedule:
  g = config.dpcgan
  if not g.d_lr_decay:
    return optax.constant_schedule(g.d_lr)
  return optax.polynomial_schedule(init_value=g.d_lr, end_value=g.d_lr_end, power=1,
                                   transition_steps=g.d_lr_decay_steps)


class DPCGAN(protocol.Method):
  """DP-CGAN as a `protocol.Method`."""

  # D is trained with DP-SGD: its loss and accuracy on fakes, and G's loss against the
  # updated D, are post-processing; the real-batch statistics are not.
  public_metrics = frozenset({"d_loss_fake", "d_acc_fake", "d_lr", "g_loss"})

  def __init__(self, plan, config, spec, mesh):
    super().__init__(plan, config, spec, mesh)
    g = config.dpcgan
    head = None
    if g.g_head == "tabular":
      schema = tabular.schema_for(spec.name, math.prod(spec.example_shape))
      head = mlp_gan.TabularHead(schema.kinds, g.binary_mode, g.gumbel_temperature)
    self.generator, self.discriminator = mlp_gan.make_mlp_gan(
        spec.example_shape, spec.num_classes, hidden=g.d_hidden, g_hidden=g.g_hidden, head=head)
    self.batch_size = int(config.train.batch_size)
    self.m = int(g.num_microbatches)
    self.clip = clipping.ClippingSpec(clip_norm=plan.clip_norm)
    self.mechanism = (mechanism(plan.noise_multiplier, plan.clip_norm, self.m, self.batch_size)
                      if plan.private else None)
    self.d_lr = d_learning_rate(config)
    self.d_tx = optax.sgd(self.d_lr)
    self.g_tx = optax.adam(g.g_lr, b1=g.g_beta1, b2=g.g_beta2, eps=g.g_eps)
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._sample = jax.jit(self._sample_impl)

  def _generate(self, g_params, z, labels, key, train: bool):
    return self.generator.apply({"params": g_params}, z, labels, train=train,
                                rngs={"gumbel": key})

  def _d_apply(self, params, x, y):
    return self.discriminator.apply({"params": params}, x, y)

  def init(self, rng):
    return jax.jit(self._init_impl)(rng)  # one compilation for all initialisers

  def _init_impl(self, rng):
    kg, kd, kn = jax.random.split(rng, 3)
    z = jnp.zeros((1, self.config.dpcgan.latent_dim))
    y = jnp.zeros((1,), jnp.int32)
    g_params = self.generator.init({"params": kg, "gumbel": kn}, z, y)["params"]
    d_params = self.discriminator.init(kd, jnp.zeros((1,) + self.spec.example_shape), y)["params"]
    return DPCGANState(g_params=g_params, d_params=d_params, g_opt=self.g_tx.init(g_params),
                       d_opt=self.d_tx.init(d_params), step=jnp.zeros((), jnp.int32))

  def _step(self, state: DPCGANState, batch, rngs):
    kz, ky, kgroups, kgumbel = jax.random.split(rngs["model"], 4)
    z = jax.random.normal(kz, (self.batch_size, self.config.dpcgan.latent_dim))
    labels = jax.random.randint(ky, (self.batch_size,), 0, self.spec.num_classes)
    x_fake = jax.lax.stop_gradient(self._generate(state.g_params, z, labels, kgumbel, True))
    real = {"x": 2.0 * batch["x"] - 1.0, "y": batch["y"], "mask": batch["mask"]}
    fake = {"x": x_fake, "y": labels}
    if self.plan.private:
      grad, norms, present = discriminator_grad(
          self._d_apply, state.d_params, real, fake, kgroups, rngs["noise"],
          num_microbatches=self.m, clip=self.clip, mechanism=self.mechanism, mesh=self.mesh,
          chunk_size=int(self.config.privacy.max_physical_bsz) or None,
          strategy=self.config.privacy.clipping_strategy)
      # Fraction of clipped records (real and fake rows, or non-empty microbatches).
      clip_fraction = jnp.sum(present & (norms > self.clip.clip_norm)) / jnp.sum(present)
    else:  # non-private CGAN baseline: mean real loss + mean fake loss, no clipping

      def mean_loss(params):
        lr = bce_with_logits(self._d_apply(params, real["x"], real["y"]), 1.0)
        lf = bce_with_logits(self._d_apply(params, x_fake, labels), 0.0)
        return jnp.sum(jnp.where(real["mask"], lr, 0.0)) / jnp.maximum(
            jnp.sum(real["mask"]), 1) + jnp.mean(lf)

      grad, clip_fraction = jax.grad(mean_loss)(state.d_params), jnp.zeros(())
    updates, d_opt = self.d_tx.update(grad, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, updates)

    def g_loss(g_params):  # same z, labels (and Gumbel noise) as the D-fake term
      x = self._generate(g_params, z, labels, kgumbel, True)
      return jnp.mean(jax.nn.softplus(-self._d_apply(d_params, x, labels)))

    loss_g, g_grad = jax.value_and_grad(g_loss)(state.g_params)
    g_updates, g_opt = self.g_tx.update(g_grad, state.g_opt, state.g_params)
    # Metrics of the D step (from the pre-update D); not privatised, only logged.
    logit_real = self._d_apply(state.d_params, real["x"], real["y"])
    logit_fake = self._d_apply(state.d_params, x_fake, labels)
    n_real = jnp.maximum(jnp.sum(real["mask"]), 1)
    metrics = {
        "d_loss_real": jnp.sum(jnp.where(real["mask"], bce_with_logits(logit_real, 1.0), 0.0))
                       / n_real,
        "d_loss_fake": jnp.mean(bce_with_logits(logit_fake, 0.0)),
        "d_acc_real": jnp.sum(real["mask"] & (logit_real > 0)) / n_real,
        "d_acc_fake": jnp.mean(logit_fake < 0),
        "d_clip_fraction": clip_fraction,
        "d_lr": self.d_lr(state.step),
        "g_loss": loss_g,
    }
    new_state = DPCGANState(g_params=optax.apply_updates(state.g_params, g_updates),
                            d_params=d_params, g_opt=g_opt, d_opt=d_opt, step=state.step + 1)
    return new_state, metrics

  def train_step(self, state, batch, rngs):
    return self._train_step(state, batch, rngs)

  def _sample_impl(self, state, rng, labels):
    kz, kgumbel = jax.random.split(rng)
    z = jax.random.normal(kz, (labels.shape[0], self.config.dpcgan.latent_dim))
    x = self._generate(state.g_params, z, labels, kgumbel, False)
    return (x + 1.0) / 2.0  # model domain [-1, 1] -> data units [0, 1]

  def sample(self, state, rng, labels):
    return self._sample(state, rng, labels)


DEFINITION = protocol.MethodDefinition(name="dpcgan", validate=validate, privacy=declaration,
                                       build=DPCGAN)
