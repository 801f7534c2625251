"""Classifiers used by the evaluation protocols (all return logits).

Every model maps NHWC images (float32) to unnormalised logits of shape (B, K); the
log-softmax of the upstream PyTorch models lives in the loss
(`optax.softmax_cross_entropy_with_integer_labels` is log-softmax + NLL). Dropout is
active only with `train=True` and then needs a `'dropout'` rng.

Weights follow PyTorch's default initialisation (kernel and bias both
U(-1/sqrt(fan_in), 1/sqrt(fan_in))), because the protocols were tuned with it.
Flattening happens in NHWC order rather than PyTorch's NCHW: a fixed permutation of
the first dense layer's rows, irrelevant for models trained from scratch.

| model       | upstream protocol                                     | params (28x28x1, K=10) |
|-------------|-------------------------------------------------------|------------------------|
| DpganCNN    | dpgan-revisit `dpgan/eval/acc.py` (PyTorch MNIST CNN) | 1,199,882              |
| SinkhornCNN | DP-Sinkhorn `src/train_mnist_classifier.py` `CNN`     | 241,546                |
| MLP         | DP-Sinkhorn `MLP` (D -> 100 -> K)                     | 79,510                 |
| LogReg      | DP-Sinkhorn `LogReg` (D -> K)                         | 7,850                  |
| LeNet5      | GS-WGAN `evaluation/classification_networks/lenet.py` | 61,706                 |
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = Any

# U(+-1/sqrt(fan_in)) for kernels: kaiming_uniform(a=sqrt(5)) in PyTorch.
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
  """PyTorch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _dense(features: int, x: Array, name: str | None = None) -> Array:
  """A PyTorch-initialised nn.Dense applied to x (must be called inside compact)."""
  return nn.Dense(features, kernel_init=_torch_kernel_init,
                  bias_init=_torch_bias_init(x.shape[-1]), name=name)(x)


def conv2d_as_matmul(x: Array, kernel: Array) -> Array:
  """A VALID, stride-1 NHWC convolution computed as one patches @ kernel matmul.

  Same result as `lax.conv_general_dilated(x, kernel, (1, 1), 'VALID')` with an HWIO
  kernel. On XLA:CPU the gradient of a real convolution inside a `lax.scan` body is
  roughly 8x slower than outside it (measured on jax 0.10.2), while a matmul is not;
  the patch order (row, column, channel) matches the HWIO kernel reshaped to 2-D.
  """
  kh, kw, cin, cout = kernel.shape
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  patches = jnp.concatenate(
      [x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)
  return patches @ kernel.reshape(kh * kw * cin, cout)


class Conv2d(nn.Module):
  """Stride-1 square convolution with PyTorch-default init; parameters like nn.Conv.

  `padding` is the number of zero rows/columns added on each side (PyTorch's
  `padding=`). `impl='auto'` uses `conv2d_as_matmul` on CPU and XLA's convolution
  on accelerators; both compute the same function.
  """
  features: int
  kernel_size: int
  padding: int = 0
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", _torch_kernel_init, (k, k, cin, self.features))
    bias = self.param("bias", _torch_bias_init(cin * k * k), (self.features,))
    if self.padding:
      p = self.padding
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    impl = self.impl
    if impl == "auto":
      impl = "matmul" if jax.default_backend() == "cpu" else "xla"
    if impl == "matmul":
      y = conv2d_as_matmul(x, kernel)
    elif impl == "xla":
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      raise ValueError(f"Conv2d impl must be 'auto', 'matmul' or 'xla', got {impl!r}.")
    return y + bias


def _conv(features: int, kernel: int, x: Array, impl: str, padding: int = 0,
          name: str | None = None) -> Array:
  """A PyTorch-initialised stride-1 Conv2d applied to NHWC x."""
  return Conv2d(features, kernel, padding, impl, name=name)(x)


def max_pool_2x2(x: Array) -> Array:
  """2x2 max pooling, stride 2, floor mode (PyTorch `F.max_pool2d(x, 2)`).

  Written as reshape + max rather than `nn.max_pool`: on XLA:CPU the gradient of
  reduce_window (select_and_scatter) is several times slower than the gradient of a
  plain reduction. The two differ only in how a tie inside a window shares the
  gradient, which after a ReLU only happens at exact zeros, whose ReLU gradient is 0.
  """
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2, :]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class DpganCNN(nn.Module):
  """The downstream classifier of dpgan-revisit (the PyTorch MNIST-example CNN).

  Conv(32, 3x3, VALID) -> ReLU -> Conv(64, 3x3, VALID) -> ReLU -> MaxPool 2 ->
  Dropout 0.25 -> Flatten -> Dense 128 -> ReLU -> Dropout 0.5 -> Dense K.
  1,199,882 parameters at 28x28x1 with K=10; 1,625,410 at 32x32x3 with K=2.
  Both dropouts are element-wise (`torch.nn.Dropout`, not Dropout2d, upstream).
  """
  num_classes: int = 10
  conv_impl: str = "auto"  # See Conv2d.

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    x = nn.relu(_conv(32, 3, x, self.conv_impl))
    x = nn.relu(_conv(64, 3, x, self.conv_impl))
    x = max_pool_2x2(x)
    x = nn.Dropout(0.25, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(_dense(128, x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return _dense(self.num_classes, x)


class SinkhornCNN(nn.Module):
  """The CNN of DP-Sinkhorn's final evaluation (`CNN` in train_mnist_classifier.py).

  Conv(32, 3) -> MaxPool 2 -> ReLU -> Dropout2d 0.5 -> Conv(64, 3) -> MaxPool 2 ->
  ReLU -> Dropout2d 0.5 -> Conv(128, 3) -> ReLU -> Flatten (1152 at 28 px, 2048 at
  32 px) -> Dense 128 -> ReLU -> Dropout 0.5 -> Dense K. All convs VALID.
  Dropout2d zeroes whole feature maps (broadcast over H and W); the last dropout is
  `Dropout2d` on a 2-D tensor upstream, which PyTorch applies element-wise.
  """
  num_classes: int = 10
  conv_impl: str = "auto"  # See Conv2d.

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    x = nn.relu(max_pool_2x2(_conv(32, 3, x, self.conv_impl)))
    x = nn.Dropout(0.5, broadcast_dims=(1, 2), deterministic=not train)(x)
    x = nn.relu(max_pool_2x2(_conv(64, 3, x, self.conv_impl)))
    x = nn.Dropout(0.5, broadcast_dims=(1, 2), deterministic=not train)(x)
    x = nn.relu(_conv(128, 3, x, self.conv_impl))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(_dense(128, x))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return _dense(self.num_classes, x)


class MLP(nn.Module):
  """DP-Sinkhorn's `MLP`: Flatten -> Dense 100 -> ReLU -> Dense K."""
  num_classes: int = 10
  hidden: int = 100

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train  # No dropout; the flag keeps one call signature for every model.
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(_dense(self.hidden, x))
    return _dense(self.num_classes, x)


class LogReg(nn.Module):
  """DP-Sinkhorn's `LogReg`: Flatten -> Dense K (multinomial logistic regression)."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    return _dense(self.num_classes, x.reshape(x.shape[0], -1))


LENET_FEATURE_DIM = 84


class LeNet5(nn.Module):
  """GS-WGAN's LeNet (`evaluation/classification_networks/lenet.py`); FID features.

  Conv(6, 5x5, padding 2 at 28 px, VALID otherwise) -> ReLU -> MaxPool 2 ->
  Conv(16, 5x5, VALID) -> ReLU -> MaxPool 2 -> Flatten (400 at 28 and 32 px) ->
  Dense 120 -> ReLU -> Dense 84 -> ReLU -> Dense K. 61,706 parameters at 28x28x1,
  K=10. (Upstream uses a single logit when K <= 2; here K logits always.)

  With `features=True` the call returns the 84-d output of the second dense layer
  *before* its ReLU (the penultimate layer, `fc2`). We take it before the ReLU
  because units that are dead on some data would otherwise make the feature
  covariance singular; the pre-activation carries the same information plus sign.
  """
  num_classes: int = 10
  conv_impl: str = "auto"  # See Conv2d.

  @nn.compact
  def __call__(self, x: Array, train: bool = False, features: bool = False) -> Array:
    del train
    # Upstream pads only 28-px inputs, so both 28 and 32 px give 5x5x16 = 400.
    padding = 2 if x.shape[1] == 28 else 0
    x = max_pool_2x2(nn.relu(_conv(6, 5, x, self.conv_impl, padding, "conv1")))
    x = max_pool_2x2(nn.relu(_conv(16, 5, x, self.conv_impl, name="conv2")))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(_dense(120, x, name="fc1"))
    feats = _dense(LENET_FEATURE_DIM, x, name="fc2")
    if features:
      return feats
    return _dense(self.num_classes, nn.relu(feats), name="fc3")


def count_params(params: Any) -> int:
  """Total number of scalars in a parameter pytree."""
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
