"""Class-conditional DCGAN of "Private GANs, revisited" (dpgan-revisit), in Flax.

Implements the layer tables of docs/methods/dpgan.md §1 (upstream
`alexbie98/dpgan-revisit: dpgan/models/dcgan.py`):

- resolution 28 (MNIST / FashionMNIST, §1.2): one architecture;
- resolution 32 (CelebA, §1.3): DC32Small (`small=True`, what the upstream configs use)
  or DC32 (`small=False`).

Shared conventions (§1.1): the label is concatenated after the first layer. G feeds z and
the one-hot label (both as 1×1 images) through two separate first transposed
convolutions with identical hyperparameters; D feeds the image and a one-hot label image
(the channel of the true label all ones) through two separate first convolutions. Each
branch gets LeakyReLU(0.2) and the branches are concatenated on the channel axis
(z / image first, label second). Every hidden layer uses LeakyReLU(0.2); there is no
normalisation layer, so per-example gradients of D are well defined. G ends in
(tanh + 1)/2 ∈ [0, 1]; D ends in one logit per example. All layers use PyTorch's default
initialisation (`dpgen_jax.models.init`).

Layout is NHWC. Layer names follow upstream (`deconv1_1`, `deconv1_2`, `deconv2`, ...;
`conv1_1`, `conv1_2`, `conv2`, ...), so parameter trees map one to one onto upstream
state dicts (Flax transposed-conv kernels are PyTorch's flipped spatially).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from dpgen_jax.errors import ConfigError
from dpgen_jax.models import init
from dpgen_jax.models.phase_conv import deconv as _deconv

SUPPORTED_RESOLUTIONS = (28, 32)
LEAKY_SLOPE = 0.2


class UnsupportedModelError(ConfigError, ValueError):
  """The requested DCGAN configuration does not exist (e.g. an unsupported resolution).

  A `ValueError` for library callers and a `ConfigError` so that `main.py` reports it as a
  user mistake.
  """


class _Layer(NamedTuple):
  """One convolution of a layer table: output channels and PyTorch (k, s, p)."""
  features: int
  kernel: int
  stride: int
  padding: int


class _Table(NamedTuple):
  """A network: the first layer (each branch has `first.features` channels), then the trunk."""
  first: _Layer
  trunk: tuple[_Layer, ...]


def _check_config(resolution: int, width: int, what: str) -> None:
  if resolution not in SUPPORTED_RESOLUTIONS:
    raise UnsupportedModelError(
        f"DCGAN: unsupported resolution {resolution}; supported are "
        f"{SUPPORTED_RESOLUTIONS} (28: MNIST/FashionMNIST, 32: CelebA)")
  if width < 1:
    raise UnsupportedModelError(f"DCGAN: {what} must be positive, got {width}")


def _generator_table(resolution: int, small: bool, width: int,
                     channels: int) -> _Table:
  """Generator layers of §1.2 / §1.3 for width d = `width`."""
  _check_config(resolution, width, "generator width")
  d = width
  if resolution == 28:
    # deconv2 uses k=3 so that 4 -> 7 (then 14 -> 28).
    return _Table(_Layer(2 * d, 4, 1, 0),
                  (_Layer(2 * d, 3, 2, 1), _Layer(d, 4, 2, 1),
                   _Layer(channels, 4, 2, 1)))
  if small:
    return _Table(_Layer(2 * d, 4, 1, 0),
                  (_Layer(2 * d, 4, 2, 1), _Layer(d, 4, 2, 1),
                   _Layer(channels, 4, 2, 1)))
  return _Table(_Layer(4 * d, 4, 2, 1),
                (_Layer(4 * d, 4, 2, 1), _Layer(2 * d, 4, 2, 1),
                 _Layer(d, 4, 2, 1), _Layer(channels, 4, 2, 1)))


def _discriminator_table(resolution: int, small: bool, width: int) -> _Table:
  """Discriminator layers of §1.2 / §1.3 for width d = `width` (d/2 per first branch)."""
  _check_config(resolution, width, "discriminator width")
  if width % 2:
    raise UnsupportedModelError(
        f"DCGAN: discriminator width must be even (each first branch has width/2 "
        f"channels), got {width}")
  d = width
  first = _Layer(d // 2, 4, 2, 1)
  if resolution == 28:
    # conv3 uses k=3 so that 7 -> 4.
    return _Table(first, (_Layer(2 * d, 4, 2, 1), _Layer(4 * d, 3, 2, 1),
                          _Layer(1, 4, 1, 0)))
  if small:
    return _Table(first, (_Layer(2 * d, 4, 2, 1), _Layer(4 * d, 4, 2, 1),
                          _Layer(1, 4, 1, 0)))
  return _Table(first, (_Layer(2 * d, 4, 2, 1), _Layer(4 * d, 4, 2, 1),
                        _Layer(8 * d, 4, 2, 1), _Layer(1, 4, 2, 1)))


def _leaky_relu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


G_NORM_MODES = ("none", "batch")


class BatchStatNorm(nn.Module):
  """Batch normalisation that always uses the current batch's statistics.

  y = (x - mean) / sqrt(var + eps) * scale + bias, mean and (biased) variance per
  channel over the batch and spatial axes; scale starts at 1, bias at 0. There are no
  running averages, so the module is a pure function of its parameters and the batch
  (samples are drawn the same way, in batches: `eval.batch_size`). Only for the
  generator, which is trained without per-example clipping.
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class DCGANGenerator(nn.Module):
  """Class-conditional DCGAN generator (docs/methods/dpgan.md §1.2, §1.3).

  Attributes:
    resolution: 28 (MNIST-like) or 32 (CelebA-like); output images are
      resolution × resolution.
    channels: image channels (1 for MNIST, 3 for CelebA).
    num_classes: number of labels L.
    small: for resolution 32, DC32Small (True) or DC32 (False); unused for 28, which
      has a single architecture.
    width: d; the first layer has 2d (4d for DC32) channels per branch.
    latent_dim: dimension of z.
    norm: 'none' (upstream: no normalisation) or 'batch': `BatchStatNorm` on every
      hidden layer (the concatenated first layer and every trunk layer but the last),
      before its LeakyReLU, as in DCGAN (Radford et al. 2016).
  """
  resolution: int = 28
  channels: int = 1
  num_classes: int = 10
  small: bool = True
  width: int = 128
  latent_dim: int = 128
  norm: str = "none"

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array) -> jax.Array:
    """Maps latents and labels to images.

    Args:
      z: (B, latent_dim) latents, in the paper z ~ N(0, I).
      labels: (B,) integer labels in [0, num_classes). Out-of-range labels give an
        all-zero one-hot vector (this cannot be checked under jit).

    Returns:
      (B, resolution, resolution, channels) images in [0, 1].
    """
    if z.ndim != 2 or z.shape[-1] != self.latent_dim:
      raise ValueError(
          f"DCGANGenerator: z must have shape (B, {self.latent_dim}), got {z.shape}")
    if labels.shape != z.shape[:1]:
      raise ValueError(
          f"DCGANGenerator: labels must have shape {z.shape[:1]}, got {labels.shape}")
    if self.norm not in G_NORM_MODES:
      raise UnsupportedModelError(
          f"DCGAN: generator norm must be one of {G_NORM_MODES}, got {self.norm!r}")
    table = _generator_table(self.resolution, self.small, self.width, self.channels)
    normed = (lambda h, name: BatchStatNorm(name=name)(h)) if self.norm == "batch" else (
        lambda h, name: h)

    # Both inputs enter as 1×1 images so that the first layer is a transposed conv.
    x = z[:, None, None, :]
    y = jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)[:, None, None, :]
    f = table.first
    x = _deconv(f.features, f.kernel, f.stride, f.padding, name="deconv1_1")(x)
    y = _deconv(f.features, f.kernel, f.stride, f.padding, name="deconv1_2")(y)
    x = _leaky_relu(normed(jnp.concatenate([x, y], axis=-1), "norm1"))

    last = len(table.trunk) - 1
    for i, layer in enumerate(table.trunk):
      x = _deconv(layer.features, layer.kernel, layer.stride, layer.padding,
                  name=f"deconv{i + 2}")(x)
      if i < last:
        x = _leaky_relu(normed(x, f"norm{i + 2}"))
    return (jnp.tanh(x) + 1.0) * 0.5


# How the discriminator sees the label (dpgan.d_label).
D_LABEL_MODES = ("planes", "embedding", "projection", "auxiliary")


def _label_embedding_init(taps: int, fan_in: int):
  """Init of the 'embedding' label branch: distributed as the interior value of the
  upstream label branch, a sum of `taps` kernel taps plus a bias, each U(-b, b) with
  b = 1/sqrt(fan_in) (PyTorch's Conv2d default)."""
  base = init.torch_uniform(fan_in)

  def initializer(key, shape, dtype=jnp.float32):
    return jnp.sum(base(key, (taps + 1,) + tuple(shape), dtype), axis=0)

  return initializer


class DCGANDiscriminator(nn.Module):
  """Class-conditional DCGAN discriminator (docs/methods/dpgan.md §1.2, §1.3).

  Attributes:
    resolution: 28 (MNIST-like) or 32 (CelebA-like); inputs are
      resolution × resolution.
    channels: image channels (1 for MNIST, 3 for CelebA).
    num_classes: number of labels L.
    small: for resolution 32, DC32Small (True) or DC32 (False); unused for 28.
    width: d (even); each first-layer branch has d/2 channels.
    label_mode: how the label enters (D_LABEL_MODES):
      'planes' (upstream): the first layer's label branch convolves L constant one-hot
        planes at full resolution (`conv1_2`, k x k x L x d/2 weights).
      'embedding': the label branch is a learned vector of d/2 channels per class
        (`label_embed`), broadcast over the first layer's output grid. That is what
        'planes' computes away from the image border (a convolution of constant planes
        is constant), without the convolution: ~15% fewer D FLOPs at d = 32.
      'projection' (Miyato & Koyama 2018, DPImageBench's D): no label branch (the image
        branch `conv1_1` has all d channels); the logit gains <e_y, sum of the features
        entering the last layer over positions>, with a learned e_y per class
        (`label_embed`, PyTorch Linear init with the last layer's fan-in).
      'auxiliary' (Odena et al. 2017, AC-GAN): D does not see the label (the image branch
        has all d channels, as 'projection'); a second last layer (`aux_head`, the last
        layer's shape with L outputs, averaged over positions) predicts the class.
        `__call__` then returns (logits, class_logits).
  """
  resolution: int = 28
  channels: int = 1
  num_classes: int = 10
  small: bool = True
  width: int = 128
  label_mode: str = "planes"

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    """Scores images given their labels.

    Works per example under `jax.vmap(jax.grad(...))` when called on `x[None]`,
    `labels[None]`: every operation acts on each batch row independently.

    Args:
      x: (B, resolution, resolution, channels) images, in the paper in [0, 1].
      labels: (B,) integer labels in [0, num_classes). Out-of-range labels give an
        all-zero label image (this cannot be checked under jit).

    Returns:
      (B,) logits (shape (1,) for a single example, never a scalar); with label_mode
      'auxiliary', (logits, (B, L) class logits).
    """
    expected = (self.resolution, self.resolution, self.channels)
    if x.ndim != 4 or x.shape[1:] != expected:
      raise ValueError(
          f"DCGANDiscriminator: x must have shape (B, {', '.join(map(str, expected))}), "
          f"got {x.shape}")
    if labels.shape != x.shape[:1]:
      raise ValueError(
          f"DCGANDiscriminator: labels must have shape {x.shape[:1]}, got {labels.shape}")
    if self.label_mode not in D_LABEL_MODES:
      raise UnsupportedModelError(
          f"DCGAN: discriminator label_mode must be one of {D_LABEL_MODES}, got "
          f"{self.label_mode!r}")
    table = _discriminator_table(self.resolution, self.small, self.width)

    batch, height, width = x.shape[:3]
    f = table.first
    if self.label_mode in ("projection", "auxiliary"):
      h = _leaky_relu(init.torch_conv(x.shape[-1], 2 * f.features, f.kernel, f.stride,
                                      f.padding, name="conv1_1")(x))
    else:
      h = init.torch_conv(x.shape[-1], f.features, f.kernel, f.stride, f.padding,
                          name="conv1_1")(x)
      if self.label_mode == "planes":
        one_hot = jax.nn.one_hot(labels, self.num_classes, dtype=x.dtype)
        y = jnp.broadcast_to(one_hot[:, None, None, :],
                             (batch, height, width, self.num_classes))
        y = init.torch_conv(y.shape[-1], f.features, f.kernel, f.stride, f.padding,
                            name="conv1_2")(y)
      else:
        e = nn.Embed(self.num_classes, f.features, name="label_embed",
                     embedding_init=_label_embedding_init(
                         f.kernel * f.kernel, self.num_classes * f.kernel * f.kernel))(labels)
        y = jnp.broadcast_to(e[:, None, None, :], h.shape[:3] + (f.features,))
      h = jnp.concatenate([_leaky_relu(h), _leaky_relu(y)], axis=-1)

    last = len(table.trunk) - 1
    for i, layer in enumerate(table.trunk):
      features = h
      h = init.torch_conv(h.shape[-1], layer.features, layer.kernel, layer.stride,
                          layer.padding, name=f"conv{i + 2}")(h)
      if i < last:
        h = _leaky_relu(h)
    # The last layer leaves (B, 1, 1, 1); reshape keeps the batch axis even for B = 1.
    logits = h.reshape(batch)
    if self.label_mode == "projection":
      fan_in = features.shape[-1] * table.trunk[-1].kernel ** 2
      e = nn.Embed(self.num_classes, features.shape[-1], name="label_embed",
                   embedding_init=init.torch_uniform(fan_in))(labels)
      logits = logits + jnp.sum(e * jnp.sum(features, axis=(1, 2)), axis=-1)
    if self.label_mode == "auxiliary":
      layer = table.trunk[-1]
      classes = init.torch_conv(features.shape[-1], self.num_classes, layer.kernel,
                                layer.stride, layer.padding, name="aux_head")(features)
      return logits, jnp.mean(classes.reshape(batch, -1, self.num_classes), axis=1)
    return logits


def make_dcgan(
    resolution: int,
    channels: int,
    num_classes: int,
    *,
    small: bool = True,
    g_width: int = 128,
    d_width: int = 128,
    latent_dim: int = 128,
    d_label: str = "planes",
    g_norm: str = "none",
) -> tuple[DCGANGenerator, DCGANDiscriminator]:
  """Builds the dpgan-revisit generator and discriminator (docs/methods/dpgan.md §1).

  The paper uses g_width = d_width = latent_dim = 128 everywhere; `d_width` can be set
  separately so that a CPU preset can shrink the (privately trained) discriminator.

  Args:
    resolution: 28 (MNIST / FashionMNIST) or 32 (CelebA).
    channels: image channels.
    num_classes: number of labels L.
    small: for resolution 32, DC32Small (True, the upstream default) or DC32 (False);
      ignored for resolution 28, which has a single architecture.
    g_width: generator width d.
    d_width: discriminator width d (even).
    latent_dim: dimension of z.
    d_label: how D sees the label, one of D_LABEL_MODES ('planes': upstream).
    g_norm: the generator's normalisation, one of G_NORM_MODES ('none': upstream).

  Returns:
    (generator, discriminator), unbound Flax modules.

  Raises:
    UnsupportedModelError (a ValueError and a ConfigError): unsupported resolution or
      invalid sizes.
  """
  for what, value in (("channels", channels), ("num_classes", num_classes),
                      ("latent_dim", latent_dim)):
    if value < 1:
      raise UnsupportedModelError(f"DCGAN: {what} must be positive, got {value}")
  if d_label not in D_LABEL_MODES:
    raise UnsupportedModelError(
        f"DCGAN: d_label must be one of {D_LABEL_MODES}, got {d_label!r}")
  if g_norm not in G_NORM_MODES:
    raise UnsupportedModelError(
        f"DCGAN: g_norm must be one of {G_NORM_MODES}, got {g_norm!r}")
  # Build both tables now so that configuration errors surface before any tracing.
  _generator_table(resolution, small, g_width, channels)
  _discriminator_table(resolution, small, d_width)
  generator = DCGANGenerator(resolution=resolution, channels=channels,
                             num_classes=num_classes, small=small, width=g_width,
                             latent_dim=latent_dim, norm=g_norm)
  discriminator = DCGANDiscriminator(resolution=resolution, channels=channels,
                                     num_classes=num_classes, small=small,
                                     width=d_width, label_mode=d_label)
  return generator, discriminator
