"""CSL-GAN's losses and privacy mechanisms (docs/methods/cslgan.md §1.3, §2.4, §3).

Only D touches private data. Guarantees:

  gc (gradient clipping; DP).  Per step, with B = train.batch_size (the expected
    Poisson batch size, a constant) and C_tot = C (flat) or ||(C_1..C_P)||_2 (per
    layer):  grad = (S + N(0, sigma^2 C_tot^2 I)) / B  [+ penalty gradient], where
      split    S = sum_j m_j clip(g_real,j) + sum_f clip(g_fake,f): the B fakes are
               a fixed number of rows independent of the data (labels from the prior);
      combined S = sum_j m_j clip(g_real,j + g_fake,j): fake j is paired with real
               row j and dropped with it.
    Adding/removing one real example changes S by at most C_tot in both forms, so each
    step is the Poisson-subsampled Gaussian mechanism with noise multiplier sigma.
    The gradient penalty is computed on public data or on already-noised mean samples
    (never on the private batch) and added unclipped: post-processing.
    Adaptive thresholds come from public data / mean samples and D: no extra cost.
  is (immediate sensitivity; NOT formally DP).  The noise scale is computed from the
    private batch and is itself not privatised; its "epsilon" is approximate only.
  mean samples.  Per class, each example is kept with the fixed probability
    q = size / (smallest class size the accounting assumes) (size / N unconditional),
    the same for every class and never the class's own size, which would make the rate
    depend on the data; the kept images, centred at 0.5, are summed, divided by `size`,
    shifted back by 0.5 and get N(0, std^2) per pixel: a Poisson-subsampled Gaussian
    with L2 sensitivity sqrt(d)/(2 size) (d = the true number of pixel values),
    accounted with rate q over num_mean_samples x K releases (`mean_sample_mechanism`).
"""

import dataclasses
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpgen_jax import errors
from dpgen_jax.privacy import clipping, discriminator, mechanisms

PyTree = dict


@dataclasses.dataclass(frozen=True)
class LossSpec:
  arch: str  # 'none', 'CGAN', 'ACGAN', 'WCGAN'
  loss: str  # 'bce' or 'wgan'
  num_classes: int
  aux_type: str = "cross_entropy"  # or 'wasserstein'
  aux_scalar: float = 1.0
  fake_aux: bool = True
  aux_count: float = 1.0  # expected samples per class in a batch (wasserstein aux)
  penalty: str = "none"  # 'none', 'wgan-gp', 'wgan-gp-1' (one-sided)
  penalty_weight: float = 10.0
  aux_penalty: bool = False


def critic_value(spec: LossSpec, critic, aux, y):
  """D's adversarial output: the critic, or (WCGAN) the true class's output."""
  if spec.arch == "WCGAN":
    return jnp.sum(aux * jax.nn.one_hot(y, spec.num_classes), axis=-1)
  return critic


def adversarial_loss(spec: LossSpec, c, real: bool | jax.Array):
  """Per-example D loss: BCE (real -> 1, fake -> 0) or WGAN (-D(real), +D(fake))."""
  if spec.loss == "bce":
    return jnp.where(real, jax.nn.softplus(-c), jax.nn.softplus(c))
  return jnp.where(real, -c, c)


def generator_adversarial_loss(spec: LossSpec, c):
  return jax.nn.softplus(-c) if spec.loss == "bce" else -c


def aux_loss(spec: LossSpec, aux, y):
  """Per-example ACGAN auxiliary loss (0 for other archs).

  'wasserstein' divides each sample's term by the *expected* number of batch samples
  sharing its label (B / K), not the realised one: a realised count would couple the
  examples' losses and void the per-example sensitivity bound (documented deviation).
  """
  if spec.arch != "ACGAN":
    return jnp.zeros(y.shape, jnp.float32)
  onehot = jax.nn.one_hot(y, spec.num_classes)
  if spec.aux_type == "cross_entropy":
    term = optax.softmax_cross_entropy(aux, onehot)
  else:
    term = jnp.sum((1.0 - 2.0 * onehot) * jax.nn.sigmoid(aux), axis=-1) / spec.aux_count
  return spec.aux_scalar * term


def d_row_losses(spec: LossSpec, d_apply, params, x, y, real):
  """Per-row D loss (adversarial + auxiliary); `real` is a bool per row."""
  critic, aux = d_apply(params, x, y)
  c = critic_value(spec, critic, aux, y)
  loss = adversarial_loss(spec, c, real)
  if spec.arch == "ACGAN":
    weight = jnp.where(real, 1.0, 1.0 if spec.fake_aux else 0.0)
    loss = loss + weight * aux_loss(spec, aux, y)
  return loss


def gradient_penalty(spec: LossSpec, d_apply, params, x_real, y_real, x_fake, key, mask=None):
  """weight * mean_j (||grad_x D(x_hat_j, y_j)|| - 1)^2, x_hat = a x_real + (1 - a) x_fake.

  One-sided ('wgan-gp-1'): max(0, ||.|| - 1)^2. With aux_penalty, repeated (and added)
  for every aux output (ACGAN). `x_real` must be public data or mean samples under DP.
  """
  if spec.penalty == "none":
    return jnp.zeros(())
  alpha = jax.random.uniform(key, (x_real.shape[0],) + (1,) * (x_real.ndim - 1))
  x_hat = alpha * x_real + (1.0 - alpha) * x_fake

  def outputs(xh):
    critic, aux = d_apply(params, xh, y_real)
    outs = [critic_value(spec, critic, aux, y_real)]
    if spec.aux_penalty and spec.arch == "ACGAN":
      outs += [aux[:, k] for k in range(spec.num_classes)]
    return outs

  total = jnp.zeros(())
  for k in range(len(jax.eval_shape(outputs, x_hat))):
    g = jax.grad(lambda xh: jnp.sum(outputs(xh)[k]))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=-1) + 1e-12)
    gap = norms - 1.0
    if spec.penalty == "wgan-gp-1":
      gap = jnp.maximum(gap, 0.0)
    sq = jnp.square(gap)
    mean = (jnp.mean(sq) if mask is None
            else jnp.sum(jnp.where(mask, sq, 0.0)) / jnp.maximum(jnp.sum(mask), 1))
    total = total + spec.penalty_weight * mean
  return total


# ----------------------------------------------------------------------------- gc mode

def gc_gradient(spec: LossSpec, d_apply, params, real, fake, noise_key,
                clip: clipping.ClippingSpec, mechanism: mechanisms.GaussianSum, *, split: bool,
                strategy: str = "vmap"):
  """(S + N(0, (sigma C_tot)^2)) / B from privacy.discriminator, and the record norms.

  real: {'x', 'y', 'mask'} (padded Poisson batch); fake: {'x', 'y'} (split: any number
  of rows, each its own record; combined: as many rows as `real`, paired with it).
  Returns (gradient, norms, record mask).
  """
  def row_loss(p, x, y, is_real):
    return d_row_losses(spec, d_apply, p, x[None], y[None], jnp.asarray(is_real)[None])[0]

  grad, norms, present, _ = discriminator.real_fake_gradient(
      row_loss, params, real, fake, noise_key, mechanism=mechanism, clip=clip,
      grouping="rows" if split else "pairs", strategy=strategy)
  return grad, norms, present


def gc_mechanism(noise_multiplier: float, sensitivity, divisor: float) -> mechanisms.GaussianSum:
  """(S + N(0, (sigma * C_tot)^2)) / B: one draw for the whole step; C_tot may be a traced
  adaptive bound (from public data), the event is Gaussian(sigma) either way. Split
  clipping ('rows') and combined ('pairs') both give sensitivity C_tot."""
  return discriminator.mechanism(noise_multiplier, sensitivity, divisor, "rows")


def adaptive_bounds(spec: LossSpec, d_apply, params, pub_x, pub_y, fake_x, fake_y, *,
                    per_layer: bool, split: bool, scalar: float, stat: str):
  """Thresholds from public data / mean samples (§3.3): per leaf, the mean (or max) of
  the per-sample gradient norms of the real loss (+ paired fake loss if not split);
  per-layer C_i = scalar * stat_i, flat C = scalar * ||stat||. Returns (bounds tree or
  None, flat C, C_tot)."""
  def loss(p, x, y, xf, yf):
    lr = d_row_losses(spec, d_apply, p, x[None], y[None], jnp.ones((1,), bool))[0]
    if split:
      return lr
    return lr + d_row_losses(spec, d_apply, p, xf[None], yf[None], jnp.zeros((1,), bool))[0]

  grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0, 0, 0))(params, pub_x, pub_y,
                                                              fake_x, fake_y)
  leaf_norms = jax.tree.map(
      lambda g: jnp.sqrt(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=-1)), grads)
  reduce = jnp.mean if stat == "mean" else jnp.max
  stats = jax.tree.map(reduce, leaf_norms)
  total = jnp.sqrt(sum(jnp.square(s) for s in jax.tree.leaves(stats)))
  if per_layer:
    bounds = jax.tree.map(lambda s: scalar * s, stats)
    return bounds, None, scalar * total
  return None, scalar * total, scalar * total


# ------------------------------------------------------------------------ mean samples

def mean_sample_mechanism(noise_std: float, mean_size: int, image_shape) -> mechanisms.GaussianSum:
  """One noised mean sample as a GaussianSum: the sum of centred images (each of norm at
  most sqrt(d)/2, d = the true number of pixel values), noise std noise_std * size,
  divided by size; i.e. N(0, noise_std^2) per pixel of the mean."""
  half_norm = math.sqrt(math.prod(image_shape)) / 2.0
  return mechanisms.GaussianSum(noise_multiplier=float(noise_std) * mean_size / half_norm,
                                clip_norm=half_norm, sensitivity_factor=1.0,
                                divisor=float(mean_size))


def mean_sample_noise_multiplier(noise_std: float, mean_size: int, image_shape) -> float:
  """noise std / L2 sensitivity, sensitivity sqrt(d) / (2 size) (true image shape)."""
  return mean_sample_mechanism(noise_std, mean_size, image_shape).effective_noise_multiplier


def mean_sample_event(noise_std, mean_size, image_shape, rate, num_mean_samples,
                      num_releases_per_sample) -> dp_accounting.DpEvent:
  one = mean_sample_mechanism(noise_std, mean_size, image_shape).poisson_event(rate)
  return dp_accounting.SelfComposedDpEvent(one, int(num_mean_samples * num_releases_per_sample))


def make_mean_samples(train_x: np.ndarray, train_y: np.ndarray, *, num: int, size: int,
                      noise_std: float, conditional: bool, num_classes: int, rate: float,
                      rng: np.random.Generator, noise_key: jax.Array):
  """`num` rounds of noised means (one per class if conditional); (images, labels).

  Each example of a group joins a release with probability `rate`, the rate the
  accountant composes (the same for every class); membership is drawn with `rng` and
  the noise with `noise_key`, both from the run's secret root."""
  if not 0.0 < rate <= 1.0:
    raise ValueError(f"mean-sample rate must be in (0, 1], got {rate}")
  groups = ([np.flatnonzero(train_y == k) for k in range(num_classes)] if conditional
            else [np.arange(len(train_x))])
  mechanism = mean_sample_mechanism(noise_std, size, train_x.shape[1:])
  images, labels = [], []
  for r in range(num):
    for k, idx in enumerate(groups):
      keep = idx[rng.random(len(idx)) < rate]
      centred_sum = np.sum(train_x[keep].astype(np.float64) - 0.5, axis=0)
      key = jax.random.fold_in(jax.random.fold_in(noise_key, r), k)
      mean = mechanism(jnp.asarray(centred_sum, jnp.float32), key)
      images.append(0.5 + np.asarray(mean, np.float64))
      labels.append(k)
  return np.asarray(images, np.float32), np.asarray(labels, np.int32)


# Per-class sizes of the standard MNIST training split (smallest: 5421, digit 5).
MNIST_CLASS_SIZES = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)


def min_class_size(config, num_examples: int) -> int | None:
  """Smallest class size of the private set (for the conditional mean-sample rate)."""
  if config.cslgan.get("mean_sample_min_class_size"):
    return int(config.cslgan.mean_sample_min_class_size)
  if config.data.name == "mnist" and num_examples == 60_000:
    return min(MNIST_CLASS_SIZES)
  return None


def conditional(config) -> bool:
  return config.cslgan.conditional_arch != "none"


def mean_sample_rate(config, num_examples: int) -> float:
  """The Poisson rate of every mean-sample release: size / N, or for a conditional model
  size / (the smallest class size of the config or of the standard MNIST split), the
  same for every class. It depends on the config only, never on the private labels."""
  g = config.cslgan
  smallest = min_class_size(config, num_examples) if conditional(config) else num_examples
  errors.require(smallest is not None,
                 "conditional mean samples need cslgan.mean_sample_min_class_size (the smallest "
                 "class size of the training set) for their sampling rate.")
  rate = g.mean_sample_size / smallest
  errors.require(rate <= 1.0, f"cslgan.mean_sample_size = {g.mean_sample_size} exceeds the "
                              f"smallest group size {smallest}.")
  return float(rate)
