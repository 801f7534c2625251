"""DP-Sinkhorn's class-conditional generators in Flax (dp_sinkhorn.md §1), NHWC.

  ConvCondGenerator   `conv_cond` (MNIST / Fashion-MNIST): 957,969 parameters at
                      latent 16, embedding 8, h = 64, 1 channel.
  CondBigGANGenerator `cond_biggan` (CelebA 32x32): the 32x32 BigGAN generator with
                      G_shared False, no attention: 3,886,595 parameters at ch = 64,
                      latent 32, 2 classes.

Both take (z, labels, train) and return images in (-1, 1) (tanh). Mutable state is the
'batch_stats' collection: BatchNorm running statistics and, for BigGAN, the spectral
norm's power-iteration vectors.

BatchNorm and privacy: BatchNorm normalises over the generated batch only. Its
statistics are functions of the latents, labels and parameters, never of real data,
and the parameters only move by privatised gradients, so BatchNorm (training-mode
statistics, running statistics, their gradients) is post-processing of the DP release
and costs no privacy. (This is unlike a discriminator, where BatchNorm would mix real
examples and break per-example clipping.)

Modes: train=True uses batch statistics and updates the running statistics and the
spectral-norm vectors (call with mutable=['batch_stats']). train=False uses running
statistics and the stored spectral-norm vectors without updating them. Upstream
generates conv_cond samples with batch statistics (its BatchNorm layers stay in
training mode) and BigGAN samples in eval mode; the method chooses accordingly.
Flax updates running variances with the biased batch variance (PyTorch: unbiased);
with B*H*W values per channel the difference is negligible.
"""

from flax import linen as nn
import jax
import jax.numpy as jnp

from dpgen_jax.models import init

ACTIVATIONS = {
    "l": lambda x: nn.leaky_relu(x, 0.2),
    "t": jnp.tanh,
    "s": nn.sigmoid,
    "e": lambda x: nn.elu(x, 0.2),
    "n": lambda x: x,
}
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPS = 1e-5


def conv_transpose_k4s2p1(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) without bias: (N, H, W, I) -> (N, 2H, 2W, O).

  `kernel[ky, kx, i, o]` is PyTorch's weight[i, o, ky, kx] (no spatial flip). Output
  row 2m takes input rows m (tap 1) and m - 1 (tap 3); row 2m + 1 takes rows m + 1
  (tap 0) and m (tap 2); the same for columns. So the four output phases are 2x2
  stride-1 convolutions of the zero-padded input, computed as one VALID convolution
  with 4*O output channels and interleaved. XLA's CPU backend runs stride-1
  convolutions (and their gradients) about 8x faster than the input-dilated
  convolution `nn.ConvTranspose` lowers to, and this form does 1/4 of its FLOPs.
  """
  n, h, w, i = x.shape
  o = kernel.shape[-1]
  taps = (jnp.array([3, 1]), jnp.array([2, 0]))  # phase 0: rows (m-1, m); phase 1: (m, m+1)
  k = jnp.stack([kernel[taps[a]][:, taps[b]] for a in (0, 1) for b in (0, 1)], axis=-2)
  y = jax.lax.conv_general_dilated(
      jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), k.reshape(2, 2, i, 4 * o), (1, 1),
      "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(n, h + 1, w + 1, 4, o)
  rows = [jnp.stack([y[:, a:a + h, b:b + w, 2 * a + b] for b in (0, 1)], axis=3)
          for a in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, o)


class ConvTranspose4x2(nn.Module):
  """PyTorch ConvTranspose2d(in, features, 4, 2, 1, bias=False) with its default
  initialisation U(-b, b), b = 1/sqrt(features * 16); see conv_transpose_k4s2p1."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", init.torch_uniform(self.features * 16),
                        (4, 4, x.shape[-1], self.features))
    return conv_transpose_k4s2p1(x, kernel)


def _batch_norm(train: bool, name: str, affine: bool = True) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                      use_bias=affine, use_scale=affine, name=name)


class ConvCondGenerator(nn.Module):
  """upstream `ConvCondGenerator` (src/architecture/dcgan.py), table of §1.1.

  Embedding(K, e)(y) after z -> ConvT(k7) to 4h x 7 x 7 -> BN -> act -> ConvT(k4, s2,
  p1) to 2h x 14 x 14 -> BN -> act -> ConvT(k4, s2, p1) to h x 28 x 28 -> BN -> act ->
  Conv(k3, p1, bias) to C channels -> act. Activations from `activations` ("lllt":
  LeakyReLU(0.2) x 3 then tanh). PyTorch default initialisation; the embedding is
  N(0, 1) as nn.Embedding. The first ConvT acts on a 1x1 input, so it is the Dense
  layer (z_e -> 7*7*4h) it equals, with ConvTranspose2d's initialisation bound
  1/sqrt(4h * 49) (same parameter count, 1/50 of the FLOPs of a padded convolution).
  """
  num_classes: int = 10
  latent_dim: int = 16
  embed_dim: int = 8
  hidden_dim: int = 64
  channels: int = 1
  activations: str = "lllt"

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
    if len(self.activations) != 4 or set(self.activations) - set(ACTIVATIONS):
      raise ValueError(f"activations must be 4 of {sorted(ACTIVATIONS)}, got "
                       f"{self.activations!r}")
    act = [ACTIVATIONS[a] for a in self.activations]
    h = self.hidden_dim
    embed = nn.Embed(self.num_classes, self.embed_dim,
                     embedding_init=nn.initializers.normal(1.0), name="embed_label")(labels)
    x = jnp.concatenate([z, embed], axis=-1)
    x = nn.Dense(7 * 7 * 4 * h, use_bias=False, kernel_init=init.torch_uniform(4 * h * 49),
                 name="conv1")(x).reshape(-1, 7, 7, 4 * h)
    x = act[0](_batch_norm(train, "norm1")(x))
    x = ConvTranspose4x2(2 * h, name="conv2")(x)
    x = act[1](_batch_norm(train, "norm2")(x))
    x = ConvTranspose4x2(h, name="conv3")(x)
    x = act[2](_batch_norm(train, "norm3")(x))
    x = init.torch_conv(h, self.channels, 3, 1, 1, name="conv4")(x)
    return act[3](x)


def _sn(layer: nn.Module, name: str) -> nn.SpectralNorm:
  # BigGAN-PyTorch's SN: one power iteration per forward, u ~ N(0, 1), eps 1e-12; the
  # weight is divided by sigma = v W u (gradient through sigma, not through u, v).
  return nn.SpectralNorm(layer, n_steps=1, epsilon=1e-12, name=name)


def _sn_conv(features: int, in_features: int, kernel: int, name: str) -> nn.SpectralNorm:
  pad = kernel // 2
  conv = nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                 kernel_init=nn.initializers.orthogonal(),
                 bias_init=init.torch_uniform(in_features * kernel * kernel))
  return _sn(conv, name)


class ConditionalBatchNorm(nn.Module):
  """BigGAN's `ccbn`: BatchNorm without affine, then * (1 + gain[y]) + bias[y], with two
  orthogonally initialised Embedding(K, C) tables (G_shared False)."""
  num_classes: int
  features: int

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array, train: bool) -> jax.Array:
    gain = nn.Embed(self.num_classes, self.features,
                    embedding_init=nn.initializers.orthogonal(), name="gain")(labels)
    bias = nn.Embed(self.num_classes, self.features,
                    embedding_init=nn.initializers.orthogonal(), name="bias")(labels)
    x = _batch_norm(train, "bn", affine=False)(x)
    return x * (1.0 + gain[:, None, None, :]) + bias[:, None, None, :]


def _upsample2(x: jax.Array) -> jax.Array:
  """F.interpolate(scale_factor=2), mode 'nearest'."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class GBlock(nn.Module):
  """h = conv2(relu(ccbn2(conv1(up(relu(ccbn1(x))))))); out = h + conv_sc(up(x))."""
  num_classes: int
  in_features: int
  features: int

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array, train: bool) -> jax.Array:
    h = nn.relu(ConditionalBatchNorm(self.num_classes, self.in_features, name="bn1")(
        x, labels, train))
    h, x = _upsample2(h), _upsample2(x)
    h = _sn_conv(self.features, self.in_features, 3, "conv1")(h, update_stats=train)
    h = nn.relu(ConditionalBatchNorm(self.num_classes, self.features, name="bn2")(
        h, labels, train))
    h = _sn_conv(self.features, self.features, 3, "conv2")(h, update_stats=train)
    return h + _sn_conv(self.features, self.in_features, 1, "conv_sc")(x, update_stats=train)


class CondBigGANGenerator(nn.Module):
  """upstream `BigGan` at resolution 32 (src/architecture/biggan/), table of §1.2.

  SN Linear(z -> 4ch * 4 * 4) -> 3 GBlocks (4ch -> 4ch, x2 each) -> BatchNorm(affine)
  -> ReLU -> SN Conv3x3(4ch -> C) -> tanh. Orthogonal initialisation of every
  Conv/Linear/Embedding weight, PyTorch-default biases. (The activation string and
  the embedding size of the upstream command do not apply to this generator.)
  """
  num_classes: int = 2
  latent_dim: int = 32
  ch: int = 64
  channels: int = 3
  bottom_width: int = 4
  num_blocks: int = 3

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
    width = 4 * self.ch
    linear = nn.Dense(width * self.bottom_width ** 2,
                      kernel_init=nn.initializers.orthogonal(),
                      bias_init=init.torch_uniform(self.latent_dim))
    # PyTorch reshapes (N, C*4*4) to NCHW: channel-major, hence the transpose.
    h = _sn(linear, "linear")(z, update_stats=train)
    h = h.reshape(-1, width, self.bottom_width, self.bottom_width).transpose(0, 2, 3, 1)
    for i in range(self.num_blocks):
      h = GBlock(self.num_classes, width, width, name=f"block{i}")(h, labels, train)
    h = nn.relu(_batch_norm(train, "output_bn")(h))
    h = _sn_conv(self.channels, width, 3, "output_conv")(h, update_stats=train)
    return jnp.tanh(h)


GENERATORS = ("conv_cond", "cond_biggan")


def count_params(params) -> int:
  return int(sum(p.size for p in jax.tree.leaves(params)))
