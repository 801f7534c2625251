"""GS-WGAN's networks in Flax (docs/methods/gswgan.md §1; upstream source/models.py).

- `ResNetGenerator` (default): SN Linear(z + onehot -> 4*4*C) -> ReLU -> pixel norm,
  three up-sampling `GBlock`s, SN Conv 3x3 with padding 0 (32 -> 30), sigmoid, then the
  crop that drops the LAST two rows and columns (30 -> 28). C = 4 * model_dim.
  model_dim 64: 3,826,177 trainable parameters and 23,317 SN u/v entries.
- `DCGANGenerator` (no spectral norm): 1,114,305 parameters at model_dim 64.
- `ProjectionDiscriminator`: three SN Conv(k5, s2, explicit (2, 2) padding) + ReLU,
  SN Linear(4*4*4*d -> 1) plus the projection sum(SN Embedding(y) * h).
  d = 64: 1,071,105 parameters and 13,476 SN u/v entries.

Images are NHWC (B, 28, 28, 1) in [0, 1]. Feature maps that upstream flattens or
views in NCHW order are reshaped in that order here too, so parameters map one to one
onto upstream state dicts (Flax conv kernels are (kh, kw, in, out)).

Spectral-norm state lives in the `'spectral'` collection (see spectral_norm.py): apply
with `mutable=['spectral']` to advance the power iteration as upstream does on every
forward call.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from dpgen_jax.models import init
from dpgen_jax.models.spectral_norm import SNConv, SNDense, SNEmbed

IMAGE_SIZE = 28
PIXEL_NORM_EPS = 1e-10


def pixel_norm(x: jax.Array, eps: float = PIXEL_NORM_EPS) -> jax.Array:
  """PGGAN pixel norm over the channel axis (NHWC: the last one)."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling of an NHWC map (F.interpolate's default)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _nchw_to_nhwc(flat: jax.Array, channels: int, size: int) -> jax.Array:
  """Upstream's `view(-1, C, size, size)` of a flat vector, in NHWC."""
  return jnp.transpose(flat.reshape(-1, channels, size, size), (0, 2, 3, 1))


class GBlock(nn.Module):
  """Up-sampling residual block: h = conv2(relu(pn(conv1(up(pn(x)))))) + conv_sc(up(x))."""
  in_features: int
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = upsample_nearest(pixel_norm(x))
    x = upsample_nearest(x)
    h = SNConv(self.in_features, self.features, 3, padding=1, name="conv1")(h)
    h = nn.relu(pixel_norm(h))
    h = SNConv(self.features, self.features, 3, padding=1, name="conv2")(h)
    return h + SNConv(self.in_features, self.features, 1, name="conv_sc")(x)


class ResNetGenerator(nn.Module):
  """GS-WGAN's default generator: (z, labels) -> images (B, 28, 28, 1) in (0, 1)."""
  z_dim: int = 10
  model_dim: int = 64
  num_classes: int = 10

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array) -> jax.Array:
    c = 4 * self.model_dim
    h = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], axis=1)
    h = SNDense(self.z_dim + self.num_classes, 4 * 4 * c, name="fc")(h)
    h = pixel_norm(nn.relu(_nchw_to_nhwc(h, c, 4)))
    for i in range(3):
      h = GBlock(c, c, name=f"block{i + 1}")(h)
    h = nn.sigmoid(SNConv(c, 1, 3, padding=0, name="output")(h))  # 32 -> 30
    return h[:, :IMAGE_SIZE, :IMAGE_SIZE, :]  # upstream drops the last two rows/cols


class DCGANGenerator(nn.Module):
  """GS-WGAN's alternative generator (no spectral norm), gswgan.md §1.3."""
  z_dim: int = 10
  model_dim: int = 64
  num_classes: int = 10

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array) -> jax.Array:
    d = self.model_dim
    h = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], axis=1)
    h = init.torch_dense(h.shape[-1], 4 * 4 * 4 * d, name="fc")(h)
    h = pixel_norm(nn.relu(_nchw_to_nhwc(h, 4 * d, 4)))
    h = init.torch_conv_transpose(2 * d, 5, name="deconv1")(h)[:, :7, :7, :]  # 8 -> 7
    h = pixel_norm(nn.relu(h))
    h = pixel_norm(nn.relu(init.torch_conv_transpose(d, 5, name="deconv2")(h)))  # 11
    h = init.torch_conv_transpose(1, 8, stride=2, name="deconv3")(h)  # 28
    return nn.sigmoid(h)


class ProjectionDiscriminator(nn.Module):
  """GS-WGAN's critic: (images, labels) -> one score per example.

  No normalisation across examples, and the spectral-norm iteration does not depend
  on the inputs, so score i depends on example i alone: the gradient of the summed
  scores with respect to the image batch is the batch of per-example input gradients.
  """
  model_dim: int = 64
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    d = self.model_dim
    x = x.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
    h = nn.relu(SNConv(1, d, 5, stride=2, padding=2, name="conv1")(x))  # 14
    h = nn.relu(SNConv(d, 2 * d, 5, stride=2, padding=2, name="conv2")(h))  # 7
    h = nn.relu(SNConv(2 * d, 4 * d, 5, stride=2, padding=2, name="conv3")(h))  # 4
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)  # NCHW flatten
    out = SNDense(4 * 4 * 4 * d, 1, name="linear")(h)[:, 0]
    return out + jnp.sum(SNEmbed(self.num_classes, 4 * 4 * 4 * d, name="linear_y")(labels) * h,
                         axis=1)


GENERATORS = {"ResNet": ResNetGenerator, "DCGAN": DCGANGenerator}


def make_generator(arch: str, *, z_dim: int, model_dim: int, num_classes: int) -> nn.Module:
  if arch not in GENERATORS:
    raise ValueError(f"unknown GS-WGAN generator {arch!r}; known: {sorted(GENERATORS)}")
  return GENERATORS[arch](z_dim=z_dim, model_dim=model_dim, num_classes=num_classes)
