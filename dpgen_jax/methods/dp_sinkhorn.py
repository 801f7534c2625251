"""DP-Sinkhorn (Cao, Bie, Vahdat, Fidler, Kreis; NeurIPS 2021): a class-conditional
generator trained on a Sinkhorn loss, with privatised image gradients; no adversary.

Spec: docs/methods/dp_sinkhorn.md. One call of `train_step` is one accounted step:

  1. a Poisson batch Y of real examples (rate q = B/N, padded to a static size,
     masked) as features [2x - 1, s * one_hot(y)];
  2. n = B main fakes X = G(z, l) and n' = floor(p B) extra fakes G(z', l[:n']), two
     forward passes (separate BatchNorm statistics), z ~ U[0, 1), l ~ U{0..K-1}; n and
     n' are constants, never the realised batch size (upstream leaks it, §3.4);
  3. the loss, 2 OT(X, Y) - OT(X, X[n':] ++ X_extra) (or the full divergence) with
     geomloss's log-domain Sinkhorn (dpgen_jax/sinkhorn);
  4. its gradient w.r.t. the n generated images, clipped as ONE block to C
     (factor min(1, C / (||G||_F + 1e-6))) plus N(0, (2 C sigma)^2) on every pixel; the
     extra fakes' block clipped to C, no noise;
  5. both pulled back through G with jax.vjp; Adam(lr, 0.9, 0.999) with coupled weight
     decay (torch Adam's weight_decay);
  6. optionally (dp_sinkhorn.g_ema_decay > 0, not upstream) an exponential moving average
     of the parameters (methods/averaging.py), which is then what is sampled and
     released.

Privacy (mechanism `img_grad`, §3.1-3.2). The clipped block has norm <= C for every
real batch, so adding or removing one real example moves it by at most 2C; noise of
std 2 C sigma makes step 4 a Gaussian mechanism with noise multiplier sigma on a
Poisson subsample: dp_event = PoissonSampledDpEvent(B/N, GaussianDpEvent(sigma)).
The extra fakes get no gradient from the real term (they only meet X in the self
term), so their block depends on no real data. Everything after step 4 (the VJPs,
whose Jacobians depend on z, labels and parameters only; BatchNorm over generated
samples; Adam) is post-processing. The loss value and the clean gradient norm in
the step's metrics depend on the real batch and are not privatised: they are logged
diagnostics (as upstream logs them), not part of the release.
"""

import math

import dp_accounting
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpgen_jax import errors
from dpgen_jax.methods import averaging, protocol
from dpgen_jax.models import sinkhorn_generators as generators
from dpgen_jax.privacy import accounting, mechanisms
from dpgen_jax.sinkhorn import costs, loss as losses, solver

LOSSES = ("semi_debiased", "full_divergence")
NORM_EPS = 1e-6


def sampling_rate(batch_size: int, num_examples: int) -> float:
  """q = B / N (upstream: batch_size / len(train_data))."""
  return batch_size / num_examples


def fake_batch_sizes(config) -> tuple[int, int]:
  """(n, n'): B main fakes and floor(p B) extra fakes (0 for the full divergence)."""
  s = config.dp_sinkhorn
  n = int(config.train.batch_size)
  extra = int(math.floor(s.debias_ratio * n)) if s.loss == "semi_debiased" else 0
  return n, extra


def sanitizer(clip_norm: float, noise_multiplier: float) -> mechanisms.ImageGradientSanitizer:
  """The `img_grad` mechanism: the whole (n, ...) block of image gradients clipped to C
  (factor min(1, C / (||G||_F + 1e-6))), N(0, (2 C sigma)^2) on every entry."""
  return mechanisms.ImageGradientSanitizer(clip_norm=float(clip_norm),
                                           noise_multiplier=float(noise_multiplier),
                                           clip=mechanisms.BLOCK, norm_eps=NORM_EPS)


def declaration(config, num_examples: int, sigma: float) -> protocol.PrivacyDeclaration:
  """One step: PoissonSampled(B/N, Gaussian(sigma)) from the sanitiser."""
  q = sampling_rate(config.train.batch_size, num_examples)
  mech = sanitizer(config.privacy.clip_norm, sigma)
  return protocol.PrivacyDeclaration(
      step_event=dp_accounting.PoissonSampledDpEvent(q, mech.event()), sampling_rate=q,
      fields=lambda: privacy_fields(config, num_examples, sigma, mech))


def upstream_run_length(num_examples: int, batch_size: int, noise_multiplier: float,
                        delta: float, target_epsilon: float, *, max_epochs: int = 3000,
                        orders: str = "tf_privacy_ext") -> dict:
  """Upstream's run length (§3.5): the first epoch count i (<= max_epochs + 1) whose
  i * floor(N/B) steps exceed target_epsilon under TF-Privacy's classic RDP
  conversion on DP-Sinkhorn's order grid. Returns epochs, steps, the epsilon after
  them and one epoch earlier, and the optimal order."""
  per_epoch = num_examples // batch_size
  one = accounting.poisson_gaussian_event(batch_size / num_examples, noise_multiplier)
  order_grid, rdp_one = accounting.rdp_curve(one, orders=orders)
  epochs = np.arange(max_epochs + 2)
  # An order dp-accounting could not evaluate (RDP inf) is left out at every epoch
  # (never 0 * inf = nan).
  finite = np.isfinite(rdp_one)
  rdp_steps = np.outer(epochs * per_epoch, np.where(finite, rdp_one, 0.0))
  rdp_steps[:, ~finite] = np.inf
  eps = (rdp_steps + np.log(1.0 / delta) / (order_grid - 1.0)).min(axis=1)
  over = np.flatnonzero(eps > target_epsilon)
  i = int(over[0]) if len(over) else max_epochs + 1
  eps_i, order = accounting.classic_epsilon(order_grid, rdp_one * i * per_epoch, delta)
  return dict(epochs=i, steps=i * per_epoch, epsilon=eps_i, order=order,
              epsilon_one_epoch_earlier=float(eps[i - 1]) if i > 0 else 0.0)


def privacy_fields(config, num_examples: int, sigma: float,
                   mech: mechanisms.ImageGradientSanitizer) -> dict:
  p = config.privacy
  bsz = config.train.batch_size
  n, extra = fake_batch_sizes(config)
  mech = mech if p.enabled else None
  fields = dict(
      sampling_rate=sampling_rate(bsz, num_examples),
      noise_multiplier=sigma if p.enabled else None,
      clip_norm=p.clip_norm, sensitivity=2.0 * p.clip_norm,
      noise_std_per_pixel=mech.noise_std if mech is not None else None,
      expected_real_batch_size=float(bsz), fake_batch_size=n, extra_fake_batch_size=extra,
      mechanism="img_grad: the loss gradient w.r.t. the n generated images clipped as one "
                "block to C, plus N(0, (2 C sigma)^2) per pixel (sensitivity 2C); extra "
                "fakes clipped only; back-propagated through G (post-processing)",
      sampling_assumption="Poisson sampling, performed as accounted; fixed fake batch sizes")
  steps = config.train.num_steps
  if p.enabled and sigma and steps:
    # Upstream's own accounting (TF-Privacy classic conversion, its order grid), for
    # comparison with the dp-accounting epsilon this run reports.
    grid, rdp = accounting.rdp_curve(
        accounting.poisson_gaussian_event(fields["sampling_rate"], sigma, steps),
        orders="tf_privacy_ext")
    fields["epsilon_classic_tf_privacy"] = accounting.classic_epsilon(grid, rdp, p.delta)[0]
    if p.target_epsilon is not None:
      fields["upstream_run_length"] = upstream_run_length(
          num_examples, bsz, sigma, p.delta, p.target_epsilon)
  return fields


def validate(config, spec) -> None:
  """Config checks (spec may be None: --mode=privacy before the data is loaded)."""
  s = config.dp_sinkhorn
  require = errors.require
  require(s.generator in generators.GENERATORS,
          f"dp_sinkhorn.generator must be one of {generators.GENERATORS}, got {s.generator!r}.")
  require(s.cost in costs.COSTS, f"dp_sinkhorn.cost must be one of {costs.COSTS}, "
                                 f"got {s.cost!r}.")
  require(s.loss in LOSSES, f"dp_sinkhorn.loss must be one of {LOSSES}, got {s.loss!r}.")
  require(0.0 <= s.debias_ratio <= 1.0,
          f"dp_sinkhorn.debias_ratio must be in [0, 1], got {s.debias_ratio}.")
  require(s.blur > 0 and s.cost_exponent > 0,
          "dp_sinkhorn.blur and dp_sinkhorn.cost_exponent must be positive.")
  require(0.0 < s.scaling < 1.0, f"dp_sinkhorn.scaling must be in (0, 1), got {s.scaling}.")
  require(s.mixture_fraction >= 0, "dp_sinkhorn.mixture_fraction must be >= 0.")
  require(s.label_scale >= 0, "dp_sinkhorn.label_scale must be >= 0.")
  require(s.lr > 0 and s.weight_decay >= 0, "dp_sinkhorn.lr must be > 0, weight_decay >= 0.")
  require(0.0 <= s.g_ema_decay < 1.0,
          f"dp_sinkhorn.g_ema_decay must be in [0, 1) (0: no average), got {s.g_ema_decay}.")
  require(s.latent_dim > 0 and s.hidden_dim > 0 and s.embed_dim > 0,
          "dp_sinkhorn.latent_dim, hidden_dim and embed_dim must be positive.")
  if s.generator == "conv_cond":
    require(len(s.activations) == 4 and not set(s.activations) - set(generators.ACTIVATIONS),
            f"dp_sinkhorn.activations must be 4 letters of "
            f"{''.join(sorted(generators.ACTIVATIONS))}, got {s.activations!r}.")
  if s.max_loop_iterations is not None:
    require(s.max_loop_iterations >= 2, "dp_sinkhorn.max_loop_iterations must be >= 2.")
  if spec is None:
    return
  require(spec.kind == "image", f"dp_sinkhorn trains on images; {spec.name} is {spec.kind}.")
  h, w, _ = spec.example_shape
  size = 28 if s.generator == "conv_cond" else 32
  require(h == w == size, f"dp_sinkhorn's {s.generator} generator makes {size}x{size} images; "
                          f"{spec.name} has {h}x{w} (set data.image_size={size} to resize).")
  require(config.train.batch_size <= spec.num_train,
          f"train.batch_size = {config.train.batch_size} is larger than the dataset "
          f"({spec.num_train} examples).")
  needed = solver.loop_iterations_for(_max_diameter(config, spec), s.blur, s.cost_exponent,
                                      s.scaling)
  if s.max_loop_iterations is not None:
    require(s.max_loop_iterations >= needed,
            f"dp_sinkhorn.max_loop_iterations = {s.max_loop_iterations} is below the "
            f"{needed} iterations geomloss's schedule can take on these features.")


def _max_diameter(config, spec) -> float:
  return costs.max_feature_diameter(int(np.prod(spec.example_shape)), spec.num_classes,
                                    config.dp_sinkhorn.label_scale)


def sinkhorn_config(config, spec) -> solver.SinkhornConfig:
  s = config.dp_sinkhorn
  loops = s.max_loop_iterations or solver.loop_iterations_for(
      _max_diameter(config, spec), s.blur, s.cost_exponent, s.scaling)
  return solver.SinkhornConfig(blur=float(s.blur), exponent=float(s.cost_exponent),
                               scaling=float(s.scaling), max_loop_iterations=int(loops),
                               cost=s.cost, mixture=float(s.mixture_fraction))


@flax.struct.dataclass
class SinkhornState:
  params: dict
  batch_stats: dict  # BatchNorm running statistics (and BigGAN's spectral-norm vectors)
  opt: optax.OptState
  step: jax.Array
  ema_params: dict  # the average of G (dp_sinkhorn.g_ema_decay > 0) or a placeholder


class DPSinkhorn(protocol.Method):
  """DP-Sinkhorn as a `protocol.Method`."""

  # The extra fakes' block reads no real data; the parameter gradient is the pull-back
  # of the sanitised block. The loss and the clean image-gradient norm read the batch.
  public_metrics = frozenset({"extra_grad_norm", "param_grad_norm"})

  def __init__(self, plan, config, spec, mesh):
    super().__init__(plan, config, spec, mesh)
    s = config.dp_sinkhorn
    h, _, c = spec.example_shape
    if s.generator == "conv_cond":
      self.generator = generators.ConvCondGenerator(
          num_classes=spec.num_classes, latent_dim=s.latent_dim, embed_dim=s.embed_dim,
          hidden_dim=s.hidden_dim, channels=c, activations=s.activations)
    else:
      self.generator = generators.CondBigGANGenerator(
          num_classes=spec.num_classes, latent_dim=s.latent_dim, ch=s.hidden_dim, channels=c)
    # Upstream samples conv_cond with batch statistics, BigGAN in eval mode (§5.1).
    self.sample_with_batch_stats = s.generator == "conv_cond"
    self.num_fakes, self.num_extra = fake_batch_sizes(config)
    self.ot = sinkhorn_config(config, spec)
    self.sanitizer = sanitizer(plan.clip_norm, plan.noise_multiplier or 0.0)
    self.ema = float(s.g_ema_decay)
    self.tx = optax.chain(optax.add_decayed_weights(s.weight_decay),
                          optax.adam(s.lr, b1=s.beta1, b2=s.beta2, eps=1e-8))
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._sample = jax.jit(self._sample_impl)

  def _sampled_params(self, state):
    return state.ema_params if self.ema else state.params

  def released(self, state):
    return {"params": self._sampled_params(state), "batch_stats": state.batch_stats}

  def init(self, rng):
    return jax.jit(self._init_impl)(rng)

  def _init_impl(self, rng):
    s = self.config.dp_sinkhorn
    variables = self.generator.init(rng, jnp.zeros((2, s.latent_dim)),
                                    jnp.zeros((2,), jnp.int32), train=False)
    params = variables["params"]
    return SinkhornState(params=params, batch_stats=variables.get("batch_stats", {}),
                         opt=self.tx.init(params), step=jnp.zeros((), jnp.int32),
                         ema_params=averaging.initial(params, self.ema))

  def _generate(self, params, stats, z, labels):
    """Training-mode forward: (images, updated batch_stats)."""
    images, updates = self.generator.apply({"params": params, "batch_stats": stats}, z, labels,
                                           train=True, mutable=["batch_stats"])
    return images, updates.get("batch_stats", stats)

  def _features(self, images, labels):
    s = self.config.dp_sinkhorn
    return losses.features(images, labels, self.spec.num_classes, s.label_scale)

  def loss(self, x_main, x_extra, labels, real_x, real_y, real_mask):
    """The generator loss on images in [-1, 1] (the function whose image gradients the
    mechanism privatises)."""
    feat = self._features(x_main, labels)
    real = self._features(real_x, real_y)
    if self.config.dp_sinkhorn.loss == "full_divergence":
      return losses.full_divergence_loss(feat, real, real_mask, self.ot)
    n_extra = self.num_extra
    # X[n':n+n']: the last n - n' main fakes, then the extra fakes (labels l[:n']), so
    # the self term's second argument has the same label multiset as X.
    second = jnp.concatenate([feat[n_extra:], self._features(x_extra, labels[:n_extra])])
    return losses.semi_debiased_loss(feat, second, real, real_mask, self.ot)

  def _step(self, state: SinkhornState, batch, rngs):
    s = self.config.dp_sinkhorn
    k_z, k_extra, k_labels = jax.random.split(rngs["model"], 3)
    n, n_extra = self.num_fakes, self.num_extra
    z = jax.random.uniform(k_z, (n, s.latent_dim))
    labels = jax.random.randint(k_labels, (n,), 0, self.spec.num_classes)
    x_main, pull_main, stats = jax.vjp(
        lambda params: self._generate(params, state.batch_stats, z, labels), state.params,
        has_aux=True)
    z_extra = jax.random.uniform(k_extra, (n_extra, s.latent_dim))
    if n_extra:
      x_extra, pull_extra, stats = jax.vjp(
          lambda params: self._generate(params, stats, z_extra, labels[:n_extra]),
          state.params, has_aux=True)
    else:
      x_extra, pull_extra = jnp.zeros((0,) + x_main.shape[1:]), None
    real_x = batch["x"] * 2.0 - 1.0
    loss, (g_main, g_extra) = jax.value_and_grad(self.loss, argnums=(0, 1))(
        x_main, x_extra, labels, real_x, batch["y"], batch["mask"])
    if self.plan.private:
      g_main, main_norm = self.sanitizer(g_main, rngs["noise"])
      g_extra, extra_norm = self.sanitizer.clip_only(g_extra)
    else:  # non-private: the raw image gradients, as upstream without --dp
      main_norm = jnp.sqrt(jnp.sum(jnp.square(g_main)))
      extra_norm = jnp.sqrt(jnp.sum(jnp.square(g_extra)))
    (grads,) = pull_main(g_main)
    if pull_extra is not None:
      grads = jax.tree.map(jnp.add, grads, pull_extra(g_extra)[0])
    updates, opt = self.tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = (averaging.update(state.ema_params, params, state.step, self.ema) if self.ema
           else state.ema_params)
    new = SinkhornState(params=params, batch_stats=stats, opt=opt, step=state.step + 1,
                        ema_params=ema)
    metrics = {"g_loss": loss, "img_grad_norm": main_norm, "extra_grad_norm": extra_norm,
               "img_grad_clipped": (main_norm > self.plan.clip_norm).astype(jnp.float32),
               "param_grad_norm": optax.tree.norm(grads)}
    return new, metrics

  def train_step(self, state, batch, rngs):
    return self._train_step(state, batch, rngs)

  def _sample_impl(self, state, rng, labels):
    z = jax.random.uniform(rng, (labels.shape[0], self.config.dp_sinkhorn.latent_dim))
    variables = {"params": self._sampled_params(state), "batch_stats": state.batch_stats}
    if self.sample_with_batch_stats:  # statistics of this batch; running ones untouched
      images, _ = self.generator.apply(variables, z, labels, train=True,
                                       mutable=["batch_stats"])
    else:
      images = self.generator.apply(variables, z, labels, train=False)
    return (images + 1.0) / 2.0

  def sample(self, state, rng, labels):
    return self._sample(state, rng, labels)


DEFINITION = protocol.MethodDefinition(name="dp_sinkhorn", validate=validate,
                                       privacy=declaration, build=DPSinkhorn)
