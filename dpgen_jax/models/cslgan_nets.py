"""CSL-GAN's networks (docs/methods/cslgan.md §1), in Flax, NHWC.

  Vanilla (MNIST default, §1.1)
    G: concat(z, one-hot y) -> Linear 128 -> ReLU -> Linear prod(shape) -> sigmoid
    D: concat(flatten(x), one-hot y) -> Linear 128 -> ReLU -> Linear 1 ('critic')
       [+ Linear(128 -> K) 'aux' head for ACGAN / WCGAN; WCGAN has no 'critic']
  DeepConvResNet (CelebA default, §1.2; the WGAN-GP ResNet)
    G: Linear(z [+ one-hot y] -> f*f*c0) -> ResBlockUp per channel pair -> Norm -> ReLU
       -> Conv 3x3 -> tanh (or sigmoid for [0, 1] data)
    D: Conv(k5, s2, p2) + LeakyReLU(0.2) per channel pair -> flatten -> Linear(-> 1,
       no bias) 'critic' [+ Linear(-> K) 'aux'], no normalisation.

Both discriminators return (critic [B], aux [B, K] or None). D has no normalisation
layer, so per-example gradients through it are well defined. PyTorch-default
initialisation (models/init.py). G's normalisation is GroupNorm(32) here (upstream
uses BatchNorm in G when the DP mode has no per-example gradients; deviation noted in
the spec notes of the README).

`torch_param_order(params)` lists D's parameter tensors in PyTorch's order (module
definition order, weight before bias): per-layer clip bounds and IS scaling vectors
(cslgan.md §3.2, §3.4) are given in that order.
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from dpgen_jax.models import init as tinit

ARCHS = ("none", "CGAN", "ACGAN", "WCGAN")


def has_critic(arch: str) -> bool:
  return arch != "WCGAN"


def has_aux(arch: str) -> bool:
  return arch in ("ACGAN", "WCGAN")


def pixel_shuffle(x: jax.Array, r: int = 2) -> jax.Array:
  """PyTorch's pixel_shuffle in NHWC: out[c, r*h + a, r*w + b] = in[c*r*r + a*r + b, h, w]."""
  b, h, w, c = x.shape
  out_c = c // (r * r)
  x = x.reshape(b, h, w, out_c, r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # b, h, a, w, b', c
  return x.reshape(b, h * r, w * r, out_c)


class UpsampleConv(nn.Module):
  """Input tiled 4x along channels, PyTorch pixel_shuffle(2), then a 'same' conv."""
  features: int
  kernel_size: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    x = pixel_shuffle(jnp.concatenate([x] * 4, axis=-1), 2)
    k = self.kernel_size
    return tinit.torch_conv(x.shape[-1], self.features, k, 1, k // 2, use_bias=self.use_bias,
                            name="conv")(x)


def _norm(channels: int, name: str) -> nn.Module:
  return nn.GroupNorm(num_groups=min(32, channels), name=name)


class ResBlockUp(nn.Module):
  features: int
  kernel_size: int = 5

  @nn.compact
  def __call__(self, x):
    shortcut = UpsampleConv(self.features, 1, use_bias=True, name="shortcut")(x)
    h = nn.relu(_norm(x.shape[-1], "norm1")(x))
    h = UpsampleConv(self.features, self.kernel_size, use_bias=False, name="up")(h)
    h = nn.relu(_norm(self.features, "norm2")(h))
    k = self.kernel_size
    h = tinit.torch_conv(self.features, self.features, k, 1, k // 2, name="conv")(h)
    return h + shortcut


class VanillaG(nn.Module):
  out_shape: Sequence[int]
  num_classes: int
  conditional: bool
  hidden: int = 128

  @nn.compact
  def __call__(self, z, y):
    h = z
    if self.conditional:
      h = jnp.concatenate([z, jax.nn.one_hot(y, self.num_classes)], axis=-1)
    h = nn.relu(tinit.torch_dense(h.shape[-1], self.hidden, name="hidden")(h))
    out = tinit.torch_dense(self.hidden, math.prod(self.out_shape), name="out")(h)
    return jax.nn.sigmoid(out).reshape((z.shape[0],) + tuple(self.out_shape))


class VanillaD(nn.Module):
  num_classes: int
  arch: str  # ARCHS
  hidden: int = 128

  @nn.compact
  def __call__(self, x, y):
    h = x.reshape(x.shape[0], -1)
    if self.arch != "none":  # the Vanilla D concatenates the label in every conditional arch
      h = jnp.concatenate([h, jax.nn.one_hot(y, self.num_classes)], axis=-1)
    h = nn.relu(tinit.torch_dense(h.shape[-1], self.hidden, name="hidden")(h))
    critic = (tinit.torch_dense(self.hidden, 1, name="critic")(h)[:, 0]
              if has_critic(self.arch) else None)
    aux = (tinit.torch_dense(self.hidden, self.num_classes, name="aux")(h)
           if has_aux(self.arch) else None)
    return critic, aux


class ResNetG(nn.Module):
  channels: Sequence[int]  # c0, c1, ...
  first_size: int
  out_channels: int
  num_classes: int
  conditional: bool
  label_mode: str = "concat"  # 'concat' or 'embed'
  output: str = "tanh"

  @nn.compact
  def __call__(self, z, y):
    h = z
    if self.conditional and self.label_mode == "concat":
      h = jnp.concatenate([z, jax.nn.one_hot(y, self.num_classes)], axis=-1)
    elif self.conditional and self.label_mode == "embed":
      h = z * nn.Embed(self.num_classes, z.shape[-1], name="embed")(y)
    f, c0 = self.first_size, self.channels[0]
    h = tinit.torch_dense(h.shape[-1], f * f * c0, name="fc")(h).reshape(-1, f, f, c0)
    for i, c in enumerate(self.channels[1:]):
      h = ResBlockUp(c, name=f"block{i + 1}")(h)
    h = nn.relu(_norm(h.shape[-1], "norm_out")(h))
    h = tinit.torch_conv(h.shape[-1], self.out_channels, 3, 1, 1, name="conv_out")(h)
    return jnp.tanh(h) if self.output == "tanh" else jax.nn.sigmoid(h)


class ResNetD(nn.Module):
  channels: Sequence[int]  # [in_channels, c1, c2, ...]
  num_classes: int
  arch: str

  @nn.compact
  def __call__(self, x, y):
    h = x
    if self.arch in ("CGAN",) and self.num_classes > 1:  # concat mode, not ACGAN
      onehot = jax.nn.one_hot(y, self.num_classes)[:, None, None, :]
      h = jnp.concatenate([h, jnp.broadcast_to(onehot, h.shape[:3] + (self.num_classes,))], -1)
    for i, c in enumerate(self.channels[1:]):
      h = tinit.torch_conv(h.shape[-1], c, 5, 2, 2, name=f"conv{i + 1}")(h)
      h = nn.leaky_relu(h, 0.2)
    h = h.reshape(h.shape[0], -1)
    critic = (tinit.torch_dense(h.shape[-1], 1, use_bias=False, name="critic")(h)[:, 0]
              if has_critic(self.arch) else None)
    aux = (tinit.torch_dense(h.shape[-1], self.num_classes, name="aux")(h)
           if has_aux(self.arch) else None)
    return critic, aux


# (G channels, first spatial size, D channels) of §1.2's presets.
RESNET_PRESETS = {
    64: ((512, 512, 256, 128, 64), 4, (3, 64, 128, 256, 512)),
    48: ((512, 512, 256, 128), 6, (3, 128, 256, 512)),
    28: ((128, 128, 64), 7, (1, 64, 128)),
}


def make_nets(model: str, image_shape, num_classes: int, arch: str, *, latent_dim: int,
              label_mode: str = "concat", width_divisor: int = 1, hidden: int = 128):
  """(G, D) for `model` in {'vanilla', 'resnet'}; `width_divisor` shrinks the ResNet
  channel widths (cpu/smoke presets; 1 = the spec)."""
  conditional = arch != "none"
  if model == "vanilla":
    return (VanillaG(tuple(image_shape), num_classes, conditional, hidden),
            VanillaD(num_classes, arch, hidden))
  h, _, c = image_shape
  g_ch, first, d_ch = RESNET_PRESETS[h]
  shrink = lambda chs: tuple(max(1, v // width_divisor) for v in chs)
  g = ResNetG(shrink(g_ch), first, c, num_classes, conditional, label_mode,
              output="tanh" if c == 3 else "sigmoid")
  d = ResNetD((c,) + shrink(d_ch[1:]), num_classes, arch)
  return g, d


def torch_param_order(params) -> list[tuple[str, ...]]:
  """Paths of D's parameter leaves in PyTorch order (module order, kernel before bias)."""
  def module_rank(name: str):
    if name.startswith("conv") and name[4:].isdigit():
      return (0, int(name[4:]))
    return {"hidden": (0, 0), "critic": (1, 0), "aux": (2, 0)}.get(name, (3, 0))

  out = []
  for mod in sorted(params, key=module_rank):
    for leaf in ("kernel", "bias"):
      if leaf in params[mod]:
        out.append((mod, leaf))
  return out


def tree_from_list(params, values) -> dict:
  """A params-shaped tree holding values[i] at the i-th leaf of torch_param_order."""
  order = torch_param_order(params)
  if len(values) != len(order):
    raise ValueError(f"expected {len(order)} values (one per D parameter tensor: "
                     f"{['/'.join(p) for p in order]}), got {len(values)}")
  out = {m: {} for m in params}
  for (m, leaf), v in zip(order, values):
    out[m][leaf] = v
  return out
