"""GS-WGAN's pure building blocks, shared by warm-start pretraining and main training.

All functions act on ONE discriminator and ONE generator, so they can be vmapped over
stacked discriminators (pretraining) or applied to one gathered from the stack (main
training). Spec: docs/methods/gswgan.md §2-§3.

Privacy: only the sanitiser (privacy.mechanisms.ImageGradientSanitizer, per row) used by
`generator_step_sanitized` is part of the released mechanism; the critic steps and the
pretraining generator steps train discriminators non-privately on their own shard, and
discriminators are never released (docs/methods/gswgan.md).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from dpgen_jax.models import spectral_norm
from dpgen_jax.privacy import mechanisms

PyTree = Any
SN = spectral_norm.COLLECTION
NORM_EPS = 1e-10  # upstream's clip-coefficient epsilon


@flax.struct.dataclass
class Net:
  """A network's trainable parameters, its spectral-norm u/v state and its Adam state.

  `opt` holds Adam's moments and its own step counter, so a stack of Nets has one
  counter per network (gswgan.md §1.6).
  """
  params: PyTree
  sn: PyTree
  opt: PyTree


@flax.struct.dataclass
class Discriminator:
  """One critic: its Net and how many batches it has drawn from its shard iterator."""
  net: Net
  batches: jax.Array  # int32 scalar


def sanitizer(clip_norm: float, noise_multiplier: float) -> mechanisms.ImageGradientSanitizer:
  """GS-WGAN's per-example sanitiser (docs/methods/gswgan.md): each row clipped to C with
  upstream's factor min(1, C / (||g|| + 1e-10)), N(0, (2 C sigma)^2) per pixel.

  Under replace-one of a training record, only the critic of that record's shard
  changes, so each clipped row moves by at most 2C: each row is a Gaussian mechanism
  with multiplier sigma. Which critic serves which row is sampled by the caller."""
  return mechanisms.ImageGradientSanitizer(clip_norm=float(clip_norm),
                                           noise_multiplier=float(noise_multiplier),
                                           clip=mechanisms.ROWS, norm_eps=NORM_EPS)


def sanitize_image_grads(grads: jax.Array, key: jax.Array, *, clip_norm: float,
                         noise_multiplier: float, private: bool = True
                         ) -> tuple[jax.Array, jax.Array]:
  """The private sanitiser (`sanitizer(...)`), or with private=False upstream's
  non-private mode: g_i C / (||g_i|| + 1e-10), every row rescaled to norm C, no noise.
  Returns (rows, shape of `grads`; per-row L2 norms before clipping)."""
  if private:
    return sanitizer(clip_norm, noise_multiplier)(grads, key)
  flat = grads.reshape(grads.shape[0], -1)
  norms = jnp.linalg.norm(flat, axis=1)
  coef = clip_norm / (norms + NORM_EPS)
  return (flat * coef[:, None]).reshape(grads.shape), norms


def ema_decay(step: jax.Array, max_decay: float = 0.999) -> jax.Array:
  """min(1 - 1/(t + 1), max_decay) for the t-th generator iteration (0 at t = 0)."""
  return jnp.minimum(1.0 - 1.0 / (step.astype(jnp.float32) + 1.0), max_decay)


class Core:
  """The networks, losses and updates of GS-WGAN with fixed hyperparameters.

  Args:
    generator, discriminator: Flax modules (gswgan_nets).
    config: the `config.gswgan` section.
    batch_size: B, the critic batch (and main G batch).
    num_classes: labels.
  """

  def __init__(self, generator, discriminator, config, *, batch_size: int, num_classes: int):
    self.g = generator
    self.d = discriminator
    self.c = config
    self.batch_size = int(batch_size)
    self.num_classes = int(num_classes)
    self.g_tx = optax.adam(config.g_lr, b1=config.beta1, b2=config.beta2, eps=1e-8)
    self.d_tx = optax.adam(config.d_lr, b1=config.beta1, b2=config.beta2, eps=1e-8)

  # ---- networks ----

  def latents(self, key: jax.Array, n: int) -> jax.Array:
    if self.c.latent_type == "bernoulli":
      return jax.random.bernoulli(key, 0.5, (n, self.c.z_dim)).astype(jnp.float32)
    return jax.random.normal(key, (n, self.c.z_dim))

  def init_generator(self, key: jax.Array) -> Net:
    v = self.g.init(key, jnp.zeros((1, self.c.z_dim)), jnp.zeros((1,), jnp.int32))
    params = v["params"]
    return Net(params=params, sn=v.get(SN, {}), opt=self.g_tx.init(params))

  def init_discriminator(self, key: jax.Array) -> Net:
    v = self.d.init(key, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,), jnp.int32))
    params = v["params"]
    return Net(params=params, sn=v[SN], opt=self.d_tx.init(params))

  def generate(self, params, sn, z, labels) -> tuple[jax.Array, PyTree]:
    """G(z, labels) and G's SN state after this forward's power iteration."""
    x, upd = self.g.apply({"params": params, SN: sn}, z, labels, mutable=[SN])
    return x, upd.get(SN, sn)

  def critic(self, params, sn, x, labels) -> tuple[jax.Array, PyTree]:
    """D(x, labels) (one score per example) and D's SN state after this forward."""
    scores, upd = self.d.apply({"params": params, SN: sn}, x, labels, mutable=[SN])
    return scores, upd[SN]

  # ---- the critic ----

  @staticmethod
  def shard_batch(x_shard: jax.Array, y_shard: jax.Array, key: jax.Array, count: jax.Array,
                  batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Batch number `count` of a shard iterator (gswgan.md §2.1).

    Like upstream's DataLoader(batch_size, drop_last=False, SubsetRandomSampler): each
    pass over the n shard examples is a fresh permutation (from `key` and the pass
    number) cut into ceil(n / B) batches, so with n = 60, B = 32 batches alternate
    between 32 and 28 examples. Batches have a fixed shape (B, ...) with a mask;
    padding rows repeat examples of the pass and are masked out of every loss.
    """
    n = x_shard.shape[0]
    per_pass = -(-n // batch_size)
    perm = jax.random.permutation(jax.random.fold_in(key, count // per_pass), n)
    pos = (count % per_pass) * batch_size + jnp.arange(batch_size)
    idx = perm[pos % n]
    x = x_shard[idx]
    if x.dtype == jnp.uint8:
      x = x.astype(jnp.float32) / 255.0
    return x, y_shard[idx], pos < n

  def critic_step(self, d: Net, g_params, g_sn, x_real, labels, mask, key):
    """One WGAN-GP + drift update of D on a real batch (gswgan.md §2.3); non-private.

    Fakes use the real batch's labels and advance G's SN state (one G forward), and D's
    SN state advances three times (real, fake, gradient-penalty forwards), as upstream.
    Returns (D, G's SN state, metrics).
    """
    kz, ka = jax.random.split(key)
    x_fake, g_sn = self.generate(g_params, g_sn, self.latents(kz, x_real.shape[0]), labels)
    x_fake = jax.lax.stop_gradient(x_fake)
    alpha = jax.random.uniform(ka, (x_real.shape[0], 1, 1, 1))
    x_hat = alpha * x_real + (1.0 - alpha) * x_fake
    m = mask.astype(jnp.float32)
    count = jnp.sum(m)
    mean = lambda v: jnp.sum(m * v) / count

    def loss(params):
      s_real, sn = self.critic(params, d.sn, x_real, labels)
      s_fake, sn = self.critic(params, sn, x_fake, labels)

      def total_score(xh):
        s, sn_gp = self.critic(params, sn, xh, labels)
        return jnp.sum(s), sn_gp

      grads, sn = jax.grad(total_score, has_aux=True)(x_hat)
      # sqrt(. + tiny): finite gradient even for an all-zero row (upstream has none).
      gnorm = jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)) + 1e-20)
      d_real, d_fake = -mean(s_real), mean(s_fake)
      gp = self.c.gp_weight * mean(jnp.square(gnorm - 1.0))
      drift = self.c.drift_weight * mean(jnp.square(s_real))
      cost = d_fake + d_real + gp + drift
      return cost, (sn, {"d_cost": cost, "wasserstein": -d_real - d_fake, "gp": gp})

    (_, (sn, metrics)), grads = jax.value_and_grad(loss, has_aux=True)(d.params)
    updates, opt = self.d_tx.update(grads, d.opt, d.params)
    return Net(optax.apply_updates(d.params, updates), sn, opt), g_sn, metrics

  def critic_steps(self, disc: Discriminator, g_params, g_sn, x_shard, y_shard, shard_key,
                   key) -> tuple[Discriminator, PyTree, dict]:
    """`critic_iters` critic steps on consecutive batches of the shard iterator."""

    def body(i, carry):
      net, count, g_sn, _ = carry
      x, y, mask = self.shard_batch(x_shard, y_shard, shard_key, count, self.batch_size)
      net, g_sn, metrics = self.critic_step(net, g_params, g_sn, x, y, mask,
                                            jax.random.fold_in(key, i))
      return net, count + 1, g_sn, metrics

    zeros = {"d_cost": 0.0, "wasserstein": 0.0, "gp": 0.0}
    zeros = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), zeros)
    net, count, g_sn, metrics = jax.lax.fori_loop(
        0, int(self.c.critic_iters), body, (disc.net, disc.batches, g_sn, zeros))
    return Discriminator(net, count), g_sn, metrics

  # ---- the generator ----

  def _fake_labels(self, key, n):
    kz, ky = jax.random.split(key)
    return self.latents(kz, n), jax.random.randint(ky, (n,), 0, self.num_classes)

  def generator_step_plain(self, g: Net, d_params, d_sn, key, n: int):
    """Pretraining's non-private G step: Adam on -mean D(G(z, y), y), uniform labels."""
    z, y = self._fake_labels(key, n)

    def loss(params):
      x, g_sn = self.generate(params, g.sn, z, y)
      scores, d_sn_new = self.critic(d_params, d_sn, x, y)
      return -jnp.mean(scores), (g_sn, d_sn_new)

    (g_loss, (g_sn, d_sn)), grads = jax.value_and_grad(loss, has_aux=True)(g.params)
    updates, opt = self.g_tx.update(grads, g.opt, g.params)
    return Net(optax.apply_updates(g.params, updates), g_sn, opt), d_sn, g_loss

  def critic_image_grads(self, d_params, d_sn, images, labels):
    """One critic for every row: (d D(x_i, y_i)/d x_i per row, scores, D's SN state),
    from one gradient of sum_i D(x_i, y_i) (no cross-example coupling in D)."""
    def total_score(imgs):
      scores, sn = self.critic(d_params, d_sn, imgs, labels)
      return jnp.sum(scores), (sn, scores)

    grads, (sn, scores) = jax.grad(total_score, has_aux=True)(images)
    return grads, scores, sn

  def per_row_image_grads(self, d_params, d_sn, images, labels, chunk: int):
    """Row i's image gradient from its own critic (`d_params`, `d_sn` stacked over the B
    rows); `chunk` rows at a time (lax.map: 1 = one after another, B = one vmap)."""
    def one(args):
      p, sn, x, y = args
      g, s, sn = self.critic_image_grads(p, sn, x[None], y[None])
      return g[0], s[0], sn

    return jax.lax.map(one, (d_params, d_sn, images, labels), batch_size=chunk)

  def generator_step_sanitized(self, g: Net, image_grads_fn, key, noise_key, *,
                               clip_norm: float, noise_multiplier: float, private: bool):
    """The private G step (docs/methods/gswgan.md).

    x_i = G(z_i, y_i) for B = batch_size fakes with uniform labels; g_i = d D(x_i, y_i)/d x_i
    from `image_grads_fn(x, y) -> (grads, scores, critic state)` (one critic for all rows,
    or one per row); the rows are sanitised and -(1/B) * sanitised is pulled back through
    G with a VJP; Adam on G. Returns (G, the critic state, metrics).
    """
    n = self.batch_size
    z, y = self._fake_labels(key, n)
    x, pullback, g_sn = jax.vjp(lambda p: self.generate(p, g.sn, z, y), g.params, has_aux=True)
    image_grads, scores, d_state = image_grads_fn(x, y)
    sanitized, norms = sanitize_image_grads(image_grads, noise_key, clip_norm=clip_norm,
                                            noise_multiplier=noise_multiplier, private=private)
    (grads,) = pullback(-sanitized / n)
    updates, opt = self.g_tx.update(grads, g.opt, g.params)
    metrics = {"g_loss": -jnp.mean(scores), "image_grad_norm": jnp.mean(norms),
               "clip_fraction": jnp.mean((norms > clip_norm).astype(jnp.float32)),
               # A function of the sanitised rows and G only: public.
               "g_update_norm": optax.tree.norm(grads)}
    return Net(optax.apply_updates(g.params, updates), g_sn, opt), d_state, metrics


def tree_index(tree: PyTree, i) -> PyTree:
  """Element i of every leaf's leading axis."""
  return jax.tree.map(lambda a: a[i], tree)


def num_shards_examples(num_examples: int, num_discriminators: int) -> tuple[int, int]:
  """(examples per shard n = floor(N / K), examples used n K), as upstream."""
  n = num_examples // num_discriminators
  return n, n * num_discriminators


def chunks(total: int, size: int) -> list[tuple[int, int]]:
  return [(s, min(s + size, total)) for s in range(0, total, size)]

