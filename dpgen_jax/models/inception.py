"""The FID Inception-v3 of pytorch-fid, in Flax, and the function that embeds images.

FID is only comparable across papers when it is computed with the same network as
everybody else: the Inception-v3 graph TensorFlow released on 2015-12-05, whose pool3
layer (2048 features after the last global average pool) the original TTUR FID code
used. pytorch-fid (`fid_inception_v3`) ports those weights to a torchvision
Inception-v3 whose blocks are patched to keep the TF graph's quirks:

* the pool branch of Mixed_5b-d (A), Mixed_6b-e (C) and Mixed_7b (E_1) is a 3x3
  stride-1 average pool with one pixel of padding that does *not* count the padding
  in the divisor (TF 'SAME' average pooling, PyTorch `count_include_pad=False`);
* the pool branch of Mixed_7c (E_2) is a 3x3 stride-1 *max* pool, not an average.

`FIDInceptionV3` reproduces that network layer by layer (NHWC); module names follow
the PyTorch attribute names so weights convert by renaming (see
`experiments/convert_pytorch_fid_weights.py`). Nothing here downloads weights:
`load_inception_params` reads the .npz that the converter writes.
"""

from collections.abc import Callable
import functools
import os
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from dpgen_jax.models import inception_weights

INCEPTION_SIZE = 299
FEATURE_DIM = 2048

__all__ = [
    'FEATURE_DIM',
    'FIDInceptionV3',
    'INCEPTION_SIZE',
    'inception_feature_fn',
    'inception_variable_shapes',
    'load_inception_params',
    'preprocess_for_inception',
    'save_inception_params',
]


def _pool_3x3_stride1_pad1(x: jax.Array, kind: str) -> jax.Array:
  """3x3 stride-1 pooling with one pixel of padding, as the FID blocks pool (NHWC).

  'max' pads with -inf (as PyTorch's max_pool2d does). 'avg' divides each window sum
  by the number of *real* pixels in the window (4 at corners, 6 on edges, 9 inside),
  i.e. `F.avg_pool2d(..., count_include_pad=False)`; flax's `avg_pool` default would
  divide by 9 everywhere and bias every border feature.
  """
  window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  if kind == 'max':
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding)
  summed = lax.reduce_window(x, 0.0, lax.add, window, strides, padding)
  _, height, width, _ = x.shape
  counts = np.outer(_real_pixels_per_window(height), _real_pixels_per_window(width))
  return summed / jnp.asarray(counts[None, :, :, None], dtype=x.dtype)


def _real_pixels_per_window(length: int) -> np.ndarray:
  """Per output position, how many of the 3 window taps fall inside [0, length)."""
  counts = np.full(length, 3.0)
  counts[0] -= 1  # left neighbour is padding
  counts[-1] -= 1  # right neighbour is padding (both, when length == 1)
  return counts


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  # PyTorch MaxPool2d(3, stride=2) with ceil_mode=False: no padding, floor division.
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class BasicConv2d(nn.Module):
  """Conv without bias -> BatchNorm(eps=1e-3, running statistics) -> ReLU."""

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)  # symmetric (height, width) padding, as PyTorch
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad_h, pad_w = self.padding
    x = nn.Conv(
        self.features,
        self.kernel_size,
        strides=self.strides,
        padding=((pad_h, pad_h), (pad_w, pad_w)),
        use_bias=False,
        precision=self.precision,
        name='conv',
    )(x)
    # Always inference mode: the statistics are the TF graph's, never re-estimated.
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


class _Block(nn.Module):
  """Shared plumbing: `self.conv(name, features, kernel, ...)` builds a BasicConv2d."""

  precision: Any = None

  def conv(self, name: str, features: int, kernel: int | tuple[int, int],
           strides: int = 1, padding: int | tuple[int, int] = 0) -> BasicConv2d:
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (padding, padding) if isinstance(padding, int) else padding
    return BasicConv2d(features, kernel, (strides, strides), padding,
                       precision=self.precision, name=name)


class FIDInceptionA(_Block):
  """Mixed_5b/c/d: 35x35 block; 224 + pool_features output channels."""

  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv('branch1x1', 64, 1)(x)
    b5 = self.conv('branch5x5_1', 48, 1)(x)
    b5 = self.conv('branch5x5_2', 64, 5, padding=2)(b5)
    b3 = self.conv('branch3x3dbl_1', 64, 1)(x)
    b3 = self.conv('branch3x3dbl_2', 96, 3, padding=1)(b3)
    b3 = self.conv('branch3x3dbl_3', 96, 3, padding=1)(b3)
    bp = _pool_3x3_stride1_pad1(x, 'avg')
    bp = self.conv('branch_pool', self.pool_features, 1)(bp)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a: 35x35 -> 17x17 reduction (unpatched torchvision block)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv('branch3x3', 384, 3, strides=2)(x)
    bd = self.conv('branch3x3dbl_1', 64, 1)(x)
    bd = self.conv('branch3x3dbl_2', 96, 3, padding=1)(bd)
    bd = self.conv('branch3x3dbl_3', 96, 3, strides=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionC(_Block):
  """Mixed_6b/c/d/e: 17x17 block with factorised 7x7 convolutions; 768 channels."""

  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = self.conv('branch1x1', 192, 1)(x)
    b7 = self.conv('branch7x7_1', c7, 1)(x)
    b7 = self.conv('branch7x7_2', c7, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv('branch7x7_3', 192, (7, 1), padding=(3, 0))(b7)
    bd = self.conv('branch7x7dbl_1', c7, 1)(x)
    bd = self.conv('branch7x7dbl_2', c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv('branch7x7dbl_3', c7, (1, 7), padding=(0, 3))(bd)
    bd = self.conv('branch7x7dbl_4', c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv('branch7x7dbl_5', 192, (1, 7), padding=(0, 3))(bd)
    bp = _pool_3x3_stride1_pad1(x, 'avg')
    bp = self.conv('branch_pool', 192, 1)(bp)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a: 17x17 -> 8x8 reduction (unpatched torchvision block)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv('branch3x3_1', 192, 1)(x)
    b3 = self.conv('branch3x3_2', 320, 3, strides=2)(b3)
    b7 = self.conv('branch7x7x3_1', 192, 1)(x)
    b7 = self.conv('branch7x7x3_2', 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv('branch7x7x3_3', 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv('branch7x7x3_4', 192, 3, strides=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionE(_Block):
  """Mixed_7b (pool='avg', FIDInceptionE_1) and Mixed_7c (pool='max', E_2); 2048 ch."""

  pool: str = 'avg'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv('branch1x1', 320, 1)(x)
    b3 = self.conv('branch3x3_1', 384, 1)(x)
    b3 = jnp.concatenate([
        self.conv('branch3x3_2a', 384, (1, 3), padding=(0, 1))(b3),
        self.conv('branch3x3_2b', 384, (3, 1), padding=(1, 0))(b3),
    ], axis=-1)
    bd = self.conv('branch3x3dbl_1', 448, 1)(x)
    bd = self.conv('branch3x3dbl_2', 384, 3, padding=1)(bd)
    bd = jnp.concatenate([
        self.conv('branch3x3dbl_3a', 384, (1, 3), padding=(0, 1))(bd),
        self.conv('branch3x3dbl_3b', 384, (3, 1), padding=(1, 0))(bd),
    ], axis=-1)
    bp = _pool_3x3_stride1_pad1(x, self.pool)
    bp = self.conv('branch_pool', 192, 1)(bp)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's `fid_inception_v3` up to pool3, NHWC.

  Input: (N, H, W, 3) float images scaled to [-1, 1] (use `preprocess_for_inception`),
  normally H = W = 299; any H, W >= 75 runs, but only 299 gives comparable FIDs.
  Output: (N, 2048) pool3 features (global average after Mixed_7c; no dropout, no fc).

  Variables: 'params' (conv kernels HWIO, BN scale/bias) and 'batch_stats' (BN
  mean/var). BatchNorm always uses the stored statistics.

  Attributes:
    precision: passed to every convolution. HIGHEST by default because on TPUs and
      recent GPUs the default float32 convolution rounds inputs to bfloat16/TF32,
      which moves FID by more than the differences papers report.
  """

  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.precision

    def conv(name, features, kernel, strides=1, padding=0):
      return BasicConv2d(features, (kernel, kernel), (strides, strides),
                         (padding, padding), precision=p, name=name)

    x = conv('Conv2d_1a_3x3', 32, 3, strides=2)(x)  # 149x149
    x = conv('Conv2d_2a_3x3', 32, 3)(x)  # 147x147
    x = conv('Conv2d_2b_3x3', 64, 3, padding=1)(x)
    x = _max_pool_3x3_stride2(x)  # 73x73
    x = conv('Conv2d_3b_1x1', 80, 1)(x)
    x = conv('Conv2d_4a_3x3', 192, 3)(x)  # 71x71
    x = _max_pool_3x3_stride2(x)  # 35x35
    x = FIDInceptionA(p, pool_features=32, name='Mixed_5b')(x)  # 256 ch
    x = FIDInceptionA(p, pool_features=64, name='Mixed_5c')(x)  # 288 ch
    x = FIDInceptionA(p, pool_features=64, name='Mixed_5d')(x)
    x = InceptionB(p, name='Mixed_6a')(x)  # 17x17x768
    x = FIDInceptionC(p, channels_7x7=128, name='Mixed_6b')(x)
    x = FIDInceptionC(p, channels_7x7=160, name='Mixed_6c')(x)
    x = FIDInceptionC(p, channels_7x7=160, name='Mixed_6d')(x)
    x = FIDInceptionC(p, channels_7x7=192, name='Mixed_6e')(x)
    x = InceptionD(p, name='Mixed_7a')(x)  # 8x8x1280
    x = FIDInceptionE(p, pool='avg', name='Mixed_7b')(x)  # 8x8x2048
    x = FIDInceptionE(p, pool='max', name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


def preprocess_for_inception(images: jax.typing.ArrayLike) -> jax.Array:
  """Maps [0, 1] images to the network's input, as pytorch-fid's InceptionV3 does.

  Args:
    images: (N, H, W, C) floats in [0, 1], C = 1 (grayscale) or 3 (RGB). The range is
      not checked.

  Returns:
    (N, 299, 299, 3) float32 in [-1, 1]: bilinear resize with half-pixel centres
    (`F.interpolate(mode='bilinear', align_corners=False)`), grayscale repeated to
    three channels, then x -> 2x - 1.
  """
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
        f'expected (N, H, W, 1 or 3) images, got shape {tuple(images.shape)}')
  n, height, width, channels = images.shape
  if (height, width) != (INCEPTION_SIZE, INCEPTION_SIZE):
    # antialias=False: PyTorch's bilinear interpolate never low-pass filters, so
    # downscaling (inputs above 299) must not either. Upscaling is unaffected.
    images = jax.image.resize(
        images, (n, INCEPTION_SIZE, INCEPTION_SIZE, channels), 'bilinear',
        antialias=False)
  if channels == 1:
    images = jnp.repeat(images, 3, axis=-1)
  return 2.0 * images - 1.0


@jax.jit
def _embed_batch(variables: Any, images: jax.Array) -> jax.Array:
  # Module-level so that every feature function shares one compilation cache, and
  # the variables are an argument rather than 90 MB of constants baked into the HLO.
  return FIDInceptionV3().apply(variables, preprocess_for_inception(images))


def inception_feature_fn(
    variables: Any, batch_size: int = 128
) -> Callable[[Any], np.ndarray]:
  """Returns `features(images) -> (N, 2048) float32 numpy` for [0, 1] NHWC images.

  `features` runs `preprocess_for_inception` and `FIDInceptionV3` under one `jax.jit`
  on chunks of exactly `batch_size` images (the last chunk is zero-padded and the
  padding rows dropped), so it compiles once per (batch_size, H, W, C), whatever N is.
  Each image's features depend on that image alone (BatchNorm uses stored
  statistics), so chunking and padding do not change them.

  Args:
    variables: {'params': ..., 'batch_stats': ...}, e.g. from `load_inception_params`.
    batch_size: images per network call; pytorch-fid's FID uses 128 too. It changes
      memory and speed, not the features.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}')

  def features(images: Any) -> np.ndarray:
    if not hasattr(images, 'shape'):
      images = np.asarray(images)
    if len(images.shape) != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(
          f'expected (N, H, W, 1 or 3) images, got shape {tuple(images.shape)}')
    chunks = []
    for start in range(0, images.shape[0], batch_size):
      chunk = jnp.asarray(images[start:start + batch_size], jnp.float32)
      real = chunk.shape[0]
      if real < batch_size:
        chunk = jnp.pad(chunk, ((0, batch_size - real), (0, 0), (0, 0), (0, 0)))
      chunks.append(np.asarray(_embed_batch(variables, chunk))[:real])
    if not chunks:
      return np.zeros((0, FEATURE_DIM), np.float32)
    return np.concatenate(chunks, axis=0)

  return features


def inception_variable_shapes() -> dict[str, tuple[int, ...]]:
  """Flat .npz key -> shape of every variable of `FIDInceptionV3` (params + BN stats).

  Shapes do not depend on the image size, so they are traced (never computed) at the
  smallest input the network accepts, 75x75.
  """
  return dict(_variable_shapes())


@functools.lru_cache(maxsize=1)
def _variable_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  abstract = jax.eval_shape(
      FIDInceptionV3().init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  flat = inception_weights.flatten_variables(abstract)
  return tuple((key, tuple(value.shape)) for key, value in flat.items())


def save_inception_params(variables: Any, path: str | os.PathLike) -> None:
  """Writes `FIDInceptionV3` variables to `path` in the .npz format read back below."""
  inception_weights.save_flat_npz(inception_weights.flatten_variables(variables), path)


def load_inception_params(path: str | os.PathLike) -> dict[str, Any]:
  """Reads FID Inception weights (.npz from the converter) as Flax variables.

  Every key of `inception_variable_shapes()` must be present with exactly that shape,
  and no other key; see `inception_weights` for the key scheme.

  Returns:
    {'params': ..., 'batch_stats': ...} for `FIDInceptionV3().apply`.

  Raises:
    UserError: the file is missing or not an .npz, or a key is missing, unexpected or
      of the wrong shape (the message names the first such key and both shapes).
  """
  flat = inception_weights.load_flat_npz(
      path, inception_variable_shapes(), what='FID Inception weights')
  return inception_weights.unflatten_variables(flat)
