"""CSL-GAN's `protocol.Method`: state, the D step (none / gc / is), the gated G step.

Privacy guarantees are stated in __init__.py and losses.py; this module wires them.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpgen_jax import errors
from dpgen_jax.log import get_logger
from dpgen_jax.methods import protocol
from dpgen_jax.methods.cslgan import losses as dp
from dpgen_jax.models import cslgan_nets as nets
from dpgen_jax.privacy import clipping, immediate_sensitivity


@flax.struct.dataclass
class CSLGANState:
  g_params: dict
  d_params: dict  # PRIVATE: never part of a released artifact (kept for the audit)
  g_opt: optax.OptState
  d_opt: optax.OptState
  d_step: jax.Array
  since_g: jax.Array
  adv_sum: jax.Array  # G-gate statistic since the last check
  g_steps: jax.Array
  last_g_loss: jax.Array
  means: jax.Array  # noised mean samples (data domain) or (0, ...)
  mean_labels: jax.Array
  is_skip: dict  # per D leaf: no IS noise (per-parameter IS, zero sensitivity at step 0)


class CSLGAN(protocol.Method):

  # Under DP, D is private (gc: DP-SGD); the clip total comes from public data: post-
  # processing. The adversarial loss is public only when computed on public data or mean
  # samples (set in __init__); gradient norms and the immediate sensitivity read the
  # private batch.
  public_metrics = frozenset({"g_loss", "g_steps", "d_clip_total"})

  supports_membership_audit = True

  def __init__(self, plan, config, spec, mesh, *, public_source, g_threshold):
    super().__init__(plan, config, spec, mesh)
    g, p = config.cslgan, config.privacy
    self.arch = g.conditional_arch
    self.k = spec.num_classes
    self.shape = tuple(spec.example_shape)
    self.generator, self.discriminator = nets.make_nets(
        g.model, self.shape, self.k, self.arch, latent_dim=g.latent_dim,
        label_mode=g.label_mode, width_divisor=g.width_divisor, hidden=g.hidden)
    self.tanh = g.model == "resnet" and self.shape[-1] == 3
    self.B = int(config.train.batch_size)
    self.loss_spec = dp.LossSpec(
        arch=self.arch, loss=g.loss, num_classes=self.k, aux_type=g.aux_loss_type,
        aux_scalar=float(g.aux_loss_scalar), fake_aux=bool(g.d_fake_aux_loss),
        aux_count=self.B / self.k, penalty=g.penalty,
        aux_penalty=bool(g.aux_penalty) and self.arch != "WCGAN")
    self.private = plan.private
    self.mode = p.mode if self.private else "none"
    self.source = public_source
    self.public_test_examples = int(g.public_set_size)
    if public_source in ("public", "mean_samples"):
      self.public_metrics = self.public_metrics | {"d_adv_loss"}
    self.g_threshold = float(g_threshold)
    self.g_tx = optax.adam(g.g_lr, b1=g.beta1, b2=g.beta2, eps=1e-8)
    self.d_tx = optax.chain(optax.add_decayed_weights(g.weight_decay),
                            optax.adam(g.d_lr, b1=g.beta1, b2=g.beta2, eps=1e-8))
    d_shapes = jax.eval_shape(self._d_init, jax.random.key(0))
    self.order = nets.torch_param_order(d_shapes)
    try:
      if p.grad_clip_mode == "constant-pl":
        vals = list(p.clipping_per_layer) or [1.0] * len(self.order)
        bounds = nets.tree_from_list(d_shapes, [float(v) for v in vals])
        self.clip = clipping.ClippingSpec(per_layer_bounds=bounds)
      else:
        self.clip = clipping.ClippingSpec(clip_norm=float(p.clip_norm))
      self.is_scaling = None
      if p.imm_sens_scaling_mode == "constant-pl":
        self.is_scaling = nets.tree_from_list(
            d_shapes, [float(v) for v in p.imm_sens_scaling_vec])
    except ValueError as e:
      raise errors.ConfigError(f"privacy.clipping_per_layer / imm_sens_scaling_vec: {e}")
    self.num_means = int(g.num_mean_samples) * (self.k if self.arch != "none" else 1)
    self.public = None  # (x, y) on device
    self.means_host = None
    self.shuffle = config.data.sampling == "shuffle"
    self._train_step = jax.jit(self._step, donate_argnums=(0,))
    self._sample = jax.jit(self._sample_impl)
    self._scores = jax.jit(self._scores_impl, static_argnums=(3,))

  # --------------------------------------------------------------- plumbing
  @property
  def data_use(self) -> str:
    # 'shuffle' (upstream's loader): the method draws its own shuffled batches.
    return "prepared" if self.shuffle else "poisson"

  def released(self, state):
    return {"g_params": state.g_params}  # D (and the raw mean samples) stay private

  def to_model(self, x):
    return 2.0 * x - 1.0 if self.tanh else x

  def _d_init(self, key):
    return self.discriminator.init(key, jnp.zeros((1,) + self.shape),
                                   jnp.zeros((1,), jnp.int32))["params"]

  def _d_apply(self, params, x, y):
    return self.discriminator.apply({"params": params}, x, y)

  def _g_apply(self, params, z, y):
    return self.generator.apply({"params": params}, z, y)

  def prepare(self, run, dataset, secret):
    g = self.config.cslgan
    self.secret = secret
    if g.public_set_size:
      n = int(g.public_set_size)
      self.public = (jnp.asarray(dataset.test_x[:n]), jnp.asarray(dataset.test_y[:n]))
    if g.num_mean_samples:
      # The rate is the accounted one, fixed by the config (never the classes' actual
      # sizes): the release is then a Poisson-subsampled Gaussian whatever the data.
      # Membership and noise come from the secret root, so a resumed run recomputes
      # exactly the stored (released) mean samples.
      self.means_host = dp.make_mean_samples(
          dataset.train_x, dataset.train_y, num=int(g.num_mean_samples),
          size=int(g.mean_sample_size), noise_std=float(g.mean_sample_noise_std),
          conditional=self.arch != "none", num_classes=self.k,
          rate=dp.mean_sample_rate(self.config, len(dataset.train_y)),
          rng=secret.numpy_generator("cslgan/mean_samples"),
          noise_key=secret.key("cslgan/mean_samples", self.config.train.prng_impl))
    if self.shuffle:
      get_logger().warning(
          "data.sampling='shuffle': batches are shuffled fixed-size batches (as upstream), but "
          "the accountant assumes Poisson sampling; the reported epsilon is NOT a proven "
          "guarantee for this run.")
      self.train_x, self.train_y = dataset.train_x, dataset.train_y
    return None

  def init(self, rng):
    return jax.jit(self._init_impl)(rng)

  def _init_impl(self, rng):
    kg, kd = jax.random.split(rng)
    g_params = self.generator.init(kg, jnp.zeros((1, self.config.cslgan.latent_dim)),
                                   jnp.zeros((1,), jnp.int32))["params"]
    d_params = self._d_init(kd)
    if self.means_host is not None:
      means, labels = jnp.asarray(self.means_host[0]), jnp.asarray(self.means_host[1])
    else:
      rows = max(1, self.num_means)  # orbax cannot save zero-size arrays
      means = jnp.zeros((rows,) + self.shape)
      labels = jnp.zeros((rows,), jnp.int32)
    zero = lambda dt=jnp.int32: jnp.zeros((), dt)
    return CSLGANState(g_params=g_params, d_params=d_params, g_opt=self.g_tx.init(g_params),
                       d_opt=self.d_tx.init(d_params), d_step=zero(), since_g=zero(),
                       adv_sum=zero(jnp.float32), g_steps=zero(),
                       last_g_loss=zero(jnp.float32), means=means, mean_labels=labels,
                       is_skip=jax.tree.map(lambda _: jnp.zeros((), bool), d_params))

  # --------------------------------------------------------------- pieces
  def _prior(self, key, n):
    return jax.random.randint(key, (n,), 0, self.k) if self.arch != "none" else \
        jnp.zeros((n,), jnp.int32)

  def _fakes(self, g_params, key, labels):
    z = jax.random.normal(key, (labels.shape[0], self.config.cslgan.latent_dim))
    return self._g_apply(g_params, z, labels)

  def _public_batch(self, state, key, n):
    """n "real" images in the model domain from public data or mean samples (+ the
    upstream post-processing jitter for mean samples)."""
    ki, kb, kp = jax.random.split(key, 3)
    if self.source == "public":
      x, y = self.public
      idx = jax.random.randint(ki, (n,), 0, x.shape[0])
      return self.to_model(x[idx]), y[idx]
    idx = jax.random.randint(ki, (n,), 0, state.means.shape[0])
    x = state.means[idx]
    x = x + 0.01 * jax.random.normal(kb, (n,) + (1,) * len(self.shape)) \
        + 0.01 * jax.random.normal(kp, x.shape)
    return self.to_model(x), state.mean_labels[idx]

  def _d_grad(self, state, real, keys):
    """The D gradient of the configured mode and the D-side metrics."""
    ls, p, B = self.loss_spec, self.config.privacy, self.B
    mask = real["mask"]
    n_fake = B if (self.mode != "gc" or p.grad_clip_split) else mask.shape[0]
    y_fake = self._prior(keys["y"], n_fake)
    x_fake = jax.lax.stop_gradient(self._fakes(state.g_params, keys["fake"], y_fake))
    has_pub = self.source in ("public", "mean_samples")
    if has_pub:
      pub_x, pub_y = self._public_batch(state, keys["pub"], B)
    else:  # non-private only: the private batch
      pub_x, pub_y = real["x"], real["y"]
    pen_fake = jax.lax.stop_gradient(self._fakes(state.g_params, keys["pen_fake"], pub_y))
    pen_mask = None if has_pub else mask

    def penalty(params):
      return dp.gradient_penalty(ls, self._d_apply, params, pub_x, pub_y, pen_fake,
                                 keys["alpha"], mask=pen_mask)

    def batch_loss(params, xr):
      lr = dp.d_row_losses(ls, self._d_apply, params, xr, real["y"], jnp.ones_like(mask))
      lf = dp.d_row_losses(ls, self._d_apply, params, x_fake, y_fake,
                           jnp.zeros((n_fake,), bool))
      mean_r = jnp.sum(jnp.where(mask, lr, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
      return mean_r + jnp.mean(lf) + penalty(params)

    metrics, skip = {}, state.is_skip
    if self.mode == "none":
      grad = jax.grad(batch_loss)(state.d_params, real["x"])
    elif self.mode == "gc":
      clip = self.clip
      c_tot = clip.sensitivity if not p.grad_clip_mode.startswith("adaptive") else None
      if c_tot is None:
        bounds, flat, c_tot = dp.adaptive_bounds(
            ls, self._d_apply, state.d_params, pub_x, pub_y, pen_fake, pub_y,
            per_layer=p.grad_clip_mode == "adaptive-pl", split=bool(p.grad_clip_split),
            scalar=float(p.adaptive_scalar), stat=p.adaptive_stat)
        clip = clipping.ClippingSpec(clip_norm=flat if flat is not None else 1.0,
                                     per_layer_bounds=bounds)
      grad, norms, row_mask = dp.gc_gradient(
          ls, self._d_apply, state.d_params, real, {"x": x_fake, "y": y_fake}, keys["noise"],
          clip, dp.gc_mechanism(self.plan.noise_multiplier, c_tot, B),
          split=bool(p.grad_clip_split),
          # Adaptive (traced) bounds: the reference strategy; fixed bounds: as configured.
          strategy="vmap" if p.grad_clip_mode.startswith("adaptive") else p.clipping_strategy)
      grad = jax.tree.map(jnp.add, grad, jax.grad(penalty)(state.d_params))
      metrics["d_clip_total"] = jnp.asarray(c_tot, jnp.float32)
      metrics["d_grad_norm_mean"] = jnp.sum(jnp.where(row_mask, norms, 0.0)) / jnp.maximum(
          jnp.sum(row_mask), 1)
    else:  # 'is': approximate, not formally DP
      g, sens = immediate_sensitivity.immediate_sensitivity(
          batch_loss, state.d_params, real["x"], scaling=self.is_scaling,
          per_param=bool(p.imm_sens_per_param))
      if p.imm_sens_per_param:
        skip = jax.tree.map(lambda s, old: jnp.where(state.d_step == 0, s == 0, old),
                            sens, state.is_skip)
        metrics["is_sensitivity_max"] = jnp.max(jnp.stack(jax.tree.leaves(sens)))
      else:
        metrics["is_sensitivity"] = sens
      grad = immediate_sensitivity.is_noise(g, sens, keys["noise"],
                                            noise_multiplier=self.plan.noise_multiplier,
                                            scaling=self.is_scaling, skip=skip)
    # The G gate and the logged adversarial loss: public data under DP.
    gate_x, gate_y = (pub_x, pub_y) if has_pub else (real["x"], real["y"])
    gate_mask = jnp.ones((gate_x.shape[0],), bool) if has_pub else mask
    cr, ar = self._d_apply(state.d_params, gate_x, gate_y)
    cf, af = self._d_apply(state.d_params, x_fake, y_fake)
    adv_r = dp.adversarial_loss(ls, dp.critic_value(ls, cr, ar, gate_y), True)
    adv_f = dp.adversarial_loss(ls, dp.critic_value(ls, cf, af, y_fake), False)
    adv = (jnp.sum(jnp.where(gate_mask, adv_r, 0.0)) / jnp.maximum(jnp.sum(gate_mask), 1)
           + jnp.mean(adv_f))
    metrics["d_adv_loss"] = adv
    return grad, skip, metrics

  def _g_update(self, state, key):
    ky, kz = jax.random.split(key)
    ls = self.loss_spec

    def g_loss(g_params):
      y = self._prior(ky, self.B)
      x = self._fakes(g_params, kz, y)
      critic, aux = self._d_apply(state.d_params, x, y)
      loss = jnp.mean(dp.generator_adversarial_loss(ls, dp.critic_value(ls, critic, aux, y)))
      return loss + jnp.mean(dp.aux_loss(ls, aux, y))

    loss, grad = jax.value_and_grad(g_loss)(state.g_params)
    updates, g_opt = self.g_tx.update(grad, state.g_opt, state.g_params)
    return state.replace(g_params=optax.apply_updates(state.g_params, updates), g_opt=g_opt,
                         g_steps=state.g_steps + 1, last_g_loss=loss)

  def _step(self, state, batch, rngs):
    names = ("y", "fake", "pub", "pen_fake", "alpha", "g")
    keys = dict(zip(names, jax.random.split(rngs["model"], len(names))))
    keys["noise"] = rngs["noise"]
    real = dict(batch, x=self.to_model(batch["x"]))
    grad, skip, metrics = self._d_grad(state, real, keys)
    updates, d_opt = self.d_tx.update(grad, state.d_opt, state.d_params)
    state = state.replace(d_params=optax.apply_updates(state.d_params, updates), d_opt=d_opt,
                          d_step=state.d_step + 1, since_g=state.since_g + 1,
                          adv_sum=state.adv_sum + metrics["d_adv_loss"], is_skip=skip)
    check = state.since_g >= self.config.cslgan.n_d_steps
    if self.private and self.source not in ("public", "mean_samples"):
      train_g = check  # no public data: the gate must not read the private batch (threshold 1e10)
    else:
      train_g = check & (state.adv_sum / state.since_g < self.g_threshold)
    state = jax.lax.cond(train_g, lambda s: self._g_update(s, keys["g"]), lambda s: s, state)
    state = state.replace(since_g=jnp.where(check, 0, state.since_g),
                          adv_sum=jnp.where(check, 0.0, state.adv_sum))
    metrics.update(g_loss=state.last_g_loss, g_steps=state.g_steps)
    return state, metrics

  def _shuffled_batch(self, step: int):
    """Upstream's loader: a fresh permutation per epoch, fixed batches, last one partial.
    The permutation comes from the run's secret root (which records form a batch is
    secret, as with Poisson sampling)."""
    n = len(self.train_x)
    per_epoch = -(-n // self.B)
    epoch, j = divmod(step, per_epoch)
    perm = self.secret.numpy_generator("cslgan/shuffle", epoch).permutation(n)
    idx = perm[j * self.B:(j + 1) * self.B]
    mask = np.zeros((self.B,), bool)
    mask[:len(idx)] = True
    full = np.zeros((self.B,), np.int64)
    full[:len(idx)] = idx
    return {"x": jnp.asarray(self.train_x[full]), "y": jnp.asarray(self.train_y[full]),
            "mask": jnp.asarray(mask)}

  def train_step(self, state, batch, rngs):
    if self.shuffle:
      batch = self._shuffled_batch(int(jax.device_get(state.d_step)))
    return self._train_step(state, batch, rngs)

  def _sample_impl(self, state, rng, labels):
    x = self._fakes(state.g_params, rng, labels)
    return (x + 1.0) / 2.0 if self.tanh else x

  def sample(self, state, rng, labels):
    return self._sample(state, rng, labels)

  # --------------------------------------------------------------- audit
  def _scores_impl(self, d_params, x, y, kind):
    critic, aux = self._d_apply(d_params, self.to_model(x), y)
    if kind == "aux":  # logit of the max softmax: same order, no float32 saturation at 1
      top = jnp.max(aux, axis=-1)
      others = jnp.where(aux == top[:, None], -jnp.inf, aux)
      return top - jax.nn.logsumexp(others, axis=-1)
    return dp.critic_value(self.loss_spec, critic, aux, y)

  def membership_scores(self, state, x, y, kind: str = "auto", batch: int = 1000):
    """The white-box attack value per example (higher = more likely a member): the max
    softmax of the ACGAN aux head ('aux', ranked by its logit log(p / (1 - p)), the same
    order without float32 ties at p = 1), or D's critic output ('critic')."""
    if kind == "auto":
      kind = "aux" if self.arch == "ACGAN" else "critic"
    errors.require(kind != "aux" or nets.has_aux(self.arch),
                   f"audit.score = 'aux' needs an auxiliary head (ACGAN/WCGAN), not {self.arch!r}.")
    out = [np.asarray(self._scores(state.d_params, jnp.asarray(x[i:i + batch]),
                                   jnp.asarray(y[i:i + batch]), kind))
           for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float64), kind

