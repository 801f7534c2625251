"""Class-conditional generators of DP-MERF and DP-NTK (docs/methods/dp_merf.md), NHWC.

  ConvCondGen  upstream `ConvCondGen` (ParkLabML/DP-MERF code_balanced/models_gen.py,
               also DP-NTK's): [z (d_code), one-hot(y)] -> Dense(fc) -> BN -> ReLU ->
               Dense(c1 * (H/4) * (W/4)) -> BN -> reshape (H/4, W/4, c1) -> bilinear x2
               (align_corners, as nn.UpsamplingBilinear2d) -> Conv(k, c2) -> ReLU ->
               bilinear x2 -> Conv(k, channels) -> sigmoid. MNIST defaults (d_code 5,
               fc 200, channels 16, 8, kernels 5, 5): 166,161 parameters.
  MLPGen       [z, one-hot(y)] -> (Dense(h) -> BN -> ReLU) x layers -> Dense(H*W*C) ->
               sigmoid.

Both return images in [0, 1] and take `train` for BatchNorm (batch statistics while
training; running statistics when sampling). BatchNorm normalises generated samples
only: the generator never sees private data (it is trained against the released
noisy embedding), so nothing here touches privacy. PyTorch default initialisation.
"""

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax.models import init

GENERATORS = ("conv", "mlp")
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPS = 1e-5


def _bn(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                      name=name)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) linear interpolation with align_corners=True."""
  m = np.zeros((n_out, n_in), np.float32)
  if n_in == 1:
    m[:, 0] = 1.0
    return m
  pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
  frac = pos - lo
  m[np.arange(n_out), lo] = 1.0 - frac
  m[np.arange(n_out), lo + 1] = frac
  return m


def upsample_bilinear_x2(x: jax.Array) -> jax.Array:
  """PyTorch nn.UpsamplingBilinear2d(scale_factor=2) (align_corners=True), NHWC."""
  _, h, w, _ = x.shape
  mh, mw = jnp.asarray(_interp_matrix(h, 2 * h)), jnp.asarray(_interp_matrix(w, 2 * w))
  return jnp.einsum("ph,nhwc,qw->npqc", mh, x, mw)


class ConvCondGen(nn.Module):
  num_classes: int = 10
  latent_dim: int = 5
  fc_dim: int = 200
  channels: tuple[int, int] = (16, 8)
  kernels: tuple[int, int] = (5, 5)
  image_shape: tuple[int, int, int] = (28, 28, 1)

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
    h, w, c = self.image_shape
    if h % 4 or w % 4:
      raise ValueError(f"ConvCondGen needs image sides divisible by 4, got {h}x{w}")
    c1, c2 = self.channels
    x = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], -1)
    x = init.torch_dense(x.shape[-1], self.fc_dim, name="fc1")(x)
    x = nn.relu(_bn(train, "bn1")(x))
    x = init.torch_dense(self.fc_dim, c1 * (h // 4) * (w // 4), name="fc2")(x)
    x = _bn(train, "bn2")(x)  # no ReLU here, as upstream
    x = x.reshape(-1, c1, h // 4, w // 4).transpose(0, 2, 3, 1)  # PyTorch's view order
    k1, k2 = self.kernels
    x = upsample_bilinear_x2(x)
    x = nn.relu(init.torch_conv(c1, c2, k1, 1, k1 // 2, name="conv1")(x))
    x = upsample_bilinear_x2(x)
    x = init.torch_conv(c2, c, k2, 1, k2 // 2, name="conv2")(x)
    return nn.sigmoid(x)


class MLPGen(nn.Module):
  num_classes: int = 10
  latent_dim: int = 10
  hidden: tuple[int, ...] = (500, 500)
  image_shape: tuple[int, int, int] = (28, 28, 1)

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
    x = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], -1)
    for i, width in enumerate(self.hidden):
      x = init.torch_dense(x.shape[-1], width, name=f"fc{i + 1}")(x)
      x = nn.relu(_bn(train, f"bn{i + 1}")(x))
    size = int(np.prod(self.image_shape))
    x = init.torch_dense(x.shape[-1], size, name="out")(x)
    return nn.sigmoid(x).reshape((-1,) + tuple(self.image_shape))


def make_generator(kind: str, num_classes: int, image_shape, *, latent_dim: int, fc_dim: int,
                   channels, kernels, hidden) -> nn.Module:
  if kind == "conv":
    return ConvCondGen(num_classes=num_classes, latent_dim=latent_dim, fc_dim=fc_dim,
                       channels=tuple(channels), kernels=tuple(kernels),
                       image_shape=tuple(image_shape))
  if kind == "mlp":
    return MLPGen(num_classes=num_classes, latent_dim=latent_dim, hidden=tuple(hidden),
                  image_shape=tuple(image_shape))
  raise ValueError(f"unknown generator {kind!r}; known: {GENERATORS}")
