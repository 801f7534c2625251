"""PyTorch-default initialisation and padding for Flax convolutions and dense layers.

Several upstream systems (dpgan-revisit, GS-WGAN, CSL-GAN) rely on PyTorch's default
layer initialisation, and their training dynamics (in particular the size of the
discriminator's gradients relative to the clip norm) depend on it. PyTorch initialises
`Conv2d`, `ConvTranspose2d` and `Linear` with `kaiming_uniform_(a=sqrt(5))` for the
weight, which equals U(-b, b) with b = 1/sqrt(fan_in), and draws the bias from the same
U(-b, b). The fan-in is computed from the PyTorch weight tensor:

| layer | PyTorch weight | fan_in |
|---|---|---|
| `Linear(in, out)` | (out, in) | in |
| `Conv2d(in, out, k)` | (out, in, k, k) | in·k·k |
| `ConvTranspose2d(in, out, k)` | (in, out, k, k) | **out**·k·k (weight dim 1) |

Flax's defaults differ (lecun_normal kernels, zero biases), and a shape-derived
variance-scaling rule on a Flax `ConvTranspose` kernel (k, k, in, out) would use k·k·in.
See docs/methods/dpgan.md §1.1 ("Initialisation" and "JAX/Flax layout and padding").

The helpers below return ordinary `nn.Conv`, `nn.ConvTranspose` and `nn.Dense` modules
(parameters named `kernel` and `bias`, Flax layouts) with these initialisers and with
explicit padding that reproduces PyTorch's output sizes and alignment:

- `Conv2d(k, s, p)` pads p zeros on both sides: Flax padding ((p, p), (p, p)).
  (`'SAME'` pads asymmetrically for stride 2 and differs.)
- `ConvTranspose2d(k, s, p)` yields (i - 1)·s - 2p + k outputs; in Flax this is
  `nn.ConvTranspose` with padding ((k-1-p, k-1-p), ...). PyTorch's `output_padding` is not
  supported. With the default `transpose_kernel=False` the Flax kernel is the PyTorch
  kernel with its spatial axes flipped; that only matters when porting weights.

Flax passes a bias initialiser only the bias shape (features,), so the fan-in of `Conv`
and `Dense` layers must be given as `in_features`; inside an `@nn.compact` method pass
`x.shape[-1]`. The kernel initialiser checks that the kernel it creates has that many
input features, so a wrong `in_features` fails at `init` instead of silently changing
the initial scale. `ConvTranspose` needs no `in_features`: its PyTorch fan-in depends
only on its output features and kernel size.
"""

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = jax.nn.initializers.Initializer
IntOrSeq = int | Sequence[int]


def torch_uniform(fan_in: int) -> Initializer:
  """Returns an initialiser drawing U(-1/sqrt(fan_in), 1/sqrt(fan_in)) of any shape."""
  if fan_in <= 0:
    raise ValueError(f"fan_in must be positive, got {fan_in}")
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


def _checked_torch_uniform(fan_in: int, in_features: int) -> Initializer:
  """Like `torch_uniform`, but the kernel's input-feature axis (-2) must be in_features."""
  base = torch_uniform(fan_in)

  def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    if shape[-2] != in_features:
      raise ValueError(
          f"kernel of shape {tuple(shape)} has {shape[-2]} input features but the layer "
          f"was declared with in_features={in_features}; the PyTorch-default init "
          "bounds would be wrong")
    return base(key, shape, dtype)

  return init


def _as_tuple(value: IntOrSeq, ndim: int, what: str) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * ndim
  value = tuple(int(v) for v in value)
  if len(value) != ndim:
    raise ValueError(f"{what} {value} does not have {ndim} spatial dimensions")
  return value


def _spatial(kernel_size: IntOrSeq, stride: IntOrSeq,
             padding: IntOrSeq) -> tuple[tuple[int, ...], ...]:
  """Normalises (kernel, stride, padding); an int kernel means a square 2-D kernel."""
  ndim = 2 if isinstance(kernel_size, int) else len(kernel_size)
  kernel = _as_tuple(kernel_size, ndim, "kernel_size")
  strides = _as_tuple(stride, ndim, "stride")
  pads = _as_tuple(padding, ndim, "padding")
  if min(kernel) < 1 or min(strides) < 1 or min(pads) < 0:
    raise ValueError(
        f"invalid kernel_size={kernel}, stride={strides}, padding={pads}")
  return kernel, strides, pads


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
  """Spatial output size of PyTorch `Conv2d(k, s, p)` along one axis."""
  return (size + 2 * padding - kernel_size) // stride + 1


def conv_transpose_output_size(size: int, kernel_size: int, stride: int,
                               padding: int) -> int:
  """Spatial output size of PyTorch `ConvTranspose2d(k, s, p)` along one axis."""
  return (size - 1) * stride - 2 * padding + kernel_size


def torch_conv(
    in_features: int,
    features: int,
    kernel_size: IntOrSeq,
    stride: IntOrSeq = 1,
    padding: IntOrSeq = 0,
    *,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Conv:
  """Flax equivalent of PyTorch `Conv2d(in_features, features, kernel_size, stride, padding)`.

  Kernel (k, k, in, out) and bias ~ U(-b, b), b = 1/sqrt(in_features·k·k); zero padding
  of `padding` on both sides of every spatial axis (inputs are NHWC).

  Args:
    in_features: channels of the input; fixes the fan-in of the bias (inside an
      `@nn.compact` method pass `x.shape[-1]`).
    features: output channels.
    kernel_size: an int (square kernel) or one size per spatial axis.
    stride: an int or one stride per spatial axis.
    padding: PyTorch's symmetric zero padding; an int or one value per spatial axis.
    use_bias: whether the layer has a bias.
    name: the Flax module name (and parameter-tree key).

  Returns:
    An `nn.Conv`.
  """
  kernel, strides, pads = _spatial(kernel_size, stride, padding)
  fan_in = in_features * math.prod(kernel)
  return nn.Conv(
      features=features,
      kernel_size=kernel,
      strides=strides,
      padding=tuple((p, p) for p in pads),
      use_bias=use_bias,
      kernel_init=_checked_torch_uniform(fan_in, in_features),
      bias_init=torch_uniform(fan_in),
      name=name,
  )


def torch_conv_transpose(
    features: int,
    kernel_size: IntOrSeq,
    stride: IntOrSeq = 1,
    padding: IntOrSeq = 0,
    *,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.ConvTranspose:
  """Flax equivalent of PyTorch `ConvTranspose2d(in, features, kernel_size, stride, padding)`.

  Output size per spatial axis is (i - 1)·stride - 2·padding + k. As in PyTorch, the map
  (without bias) is the adjoint of a `Conv2d(features -> in, k, stride, padding)`; its
  kernel is this layer's kernel with spatial axes flipped and the last two axes
  swapped. Kernel (k, k, in, out) and bias ~ U(-b, b) with
  b = 1/sqrt(features·k·k): PyTorch takes the fan-in from dimension 1 of its
  (in, out, k, k) weight, i.e. from the *output* channels (docs/methods/dpgan.md §1.1).

  Args:
    features: output channels.
    kernel_size: an int (square kernel) or one size per spatial axis.
    stride: an int or one stride per spatial axis.
    padding: PyTorch's `padding` (must be at most k - 1); an int or one per axis.
    use_bias: whether the layer has a bias.
    name: the Flax module name (and parameter-tree key).

  Returns:
    An `nn.ConvTranspose`.
  """
  kernel, strides, pads = _spatial(kernel_size, stride, padding)
  if any(p > k - 1 for k, p in zip(kernel, pads)):
    raise ValueError(
        f"ConvTranspose padding {pads} must be at most kernel_size - 1 for {kernel}")
  fan_in = features * math.prod(kernel)
  return nn.ConvTranspose(
      features=features,
      kernel_size=kernel,
      strides=strides,
      padding=tuple((k - 1 - p, k - 1 - p) for k, p in zip(kernel, pads)),
      use_bias=use_bias,
      kernel_init=torch_uniform(fan_in),
      bias_init=torch_uniform(fan_in),
      name=name,
  )


def torch_dense(
    in_features: int,
    features: int,
    *,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Dense:
  """Flax equivalent of PyTorch `Linear(in_features, features)`.

  Kernel (in, out) and bias ~ U(-b, b), b = 1/sqrt(in_features).

  Args:
    in_features: input features (inside an `@nn.compact` method pass `x.shape[-1]`).
    features: output features.
    use_bias: whether the layer has a bias.
    name: the Flax module name (and parameter-tree key).

  Returns:
    An `nn.Dense`.
  """
  return nn.Dense(
      features=features,
      use_bias=use_bias,
      kernel_init=_checked_torch_uniform(in_features, in_features),
      bias_init=torch_uniform(in_features),
      name=name,
  )
