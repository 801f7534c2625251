"""The conditional MLP GAN of DP-CGAN (docs/methods/dpcgan.md §1), in Flax.

  G: concat(z, one-hot(y)) -> Dense(hidden) -> ReLU -> Dense(prod(output_shape)) -> head
  D: concat(flatten(x), one-hot(y)) -> Dense(hidden) -> ReLU -> Dense(1)  (a logit)

Keras defaults as upstream: Glorot-uniform kernels, zero biases. Parameter counts
(hidden 128, z 100): MNIST G 115,344 and D 101,889; Thyroid G 16,021 and D 3,329.
D has no normalisation layer, so its per-example gradients are well defined.

Everything here works in the *model domain*: images and tabular rows mapped from the
loader's [0, 1] to [-1, 1] by 2x - 1 (the method does the mapping, dpcgan.py).

Generator heads:
  tanh (default, upstream)  tanh on every output: (-1, 1), i.e. (0, 1) in data units.
  TabularHead               for tables with continuous and binary columns (a public
                            schema, data/tabular.py):
    continuous columns: tanh, i.e. the public data range [0, 1] rescaled to [-1, 1];
    binary columns: p = sigmoid(logit), emitted as 2b - 1 with b in {0, 1}:
      'sigmoid'           b = p during training (soft); thresholded (p > 1/2) when
                          sampling for release;
      'straight_through'  b = 1[p > 1/2] in the forward pass, the gradient of p in the
                          backward pass (training and release alike);
      'gumbel'            b = 1[sigmoid((logit + L) / tau) > 1/2] with logistic noise
                          L (a Bernoulli(p) draw), straight-through gradient of the
                          relaxed sigmoid((logit + L) / tau); needs the 'gumbel' rng.
  Why: real binary columns are exactly 0 or 1. A tanh output never is, so D can tell
  fakes apart by that alone and G's gradient is spent pushing outputs to the ends;
  hard outputs (straight-through, Gumbel) live on the real support, and the Gumbel
  form also lets G express a probability instead of a deterministic bit.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from dpgen_jax.data import tabular

BINARY_MODES = ("sigmoid", "straight_through", "gumbel")
HEADS = ("tanh", "tabular")


def _dense(features: int, name: str) -> nn.Dense:
  # Keras Dense defaults: glorot_uniform kernel, zero bias.
  return nn.Dense(features, kernel_init=nn.initializers.glorot_uniform(),
                  bias_init=nn.initializers.zeros, name=name)


@dataclasses.dataclass(frozen=True)
class TabularHead:
  """Output head for a table: per-column kinds and how binary columns are produced."""
  kinds: tuple[str, ...]
  binary_mode: str = "straight_through"
  temperature: float = 0.5

  def __post_init__(self):
    if self.binary_mode not in BINARY_MODES:
      raise ValueError(f"binary_mode must be one of {BINARY_MODES}, got {self.binary_mode!r}")
    if not self.temperature > 0:
      raise ValueError(f"temperature must be positive, got {self.temperature}")

  @property
  def needs_rng(self) -> bool:
    return self.binary_mode == "gumbel" and tabular.BINARY in self.kinds

  def __call__(self, logits: jax.Array, *, train: bool,
               rng: jax.Array | None = None) -> jax.Array:
    """Model-domain outputs ([-1, 1]) from the final layer's pre-activations."""
    is_binary = jnp.asarray([k == tabular.BINARY for k in self.kinds])
    continuous = jnp.tanh(logits)
    p = jax.nn.sigmoid(logits)
    if self.binary_mode == "gumbel":
      u = jax.random.uniform(rng, logits.shape, minval=1e-6, maxval=1.0 - 1e-6)
      soft = jax.nn.sigmoid((logits + jnp.log(u) - jnp.log1p(-u)) / self.temperature)
      hard = (soft > 0.5).astype(logits.dtype)
      bit = hard + (soft - jax.lax.stop_gradient(soft))  # exactly `hard` forward
    else:
      hard = (p > 0.5).astype(logits.dtype)
      straight = hard + (p - jax.lax.stop_gradient(p))
      if self.binary_mode == "sigmoid":
        bit = p if train else hard
      else:
        bit = straight
    return jnp.where(is_binary, 2.0 * bit - 1.0, continuous)


class ConditionalMLPGenerator(nn.Module):
  """G(z, y): model-domain samples of shape (batch,) + output_shape.

  Attributes:
    output_shape: one example's shape ((28, 28, 1) for MNIST, (21,) for Thyroid).
    num_classes: number of labels (one-hot concatenated to z).
    hidden: width of the hidden layer (128 upstream).
    head: None for tanh on every output (upstream), or a TabularHead.
  """
  output_shape: tuple[int, ...]
  num_classes: int
  hidden: int = 128
  head: TabularHead | None = None

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array, *, train: bool = True) -> jax.Array:
    h = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], -1)
    h = nn.relu(_dense(self.hidden, "hidden")(h))
    logits = _dense(math.prod(self.output_shape), "out")(h)
    if self.head is None:
      out = jnp.tanh(logits)
    else:
      if len(self.head.kinds) != logits.shape[-1]:
        raise ValueError(f"tabular head has {len(self.head.kinds)} columns, G outputs "
                         f"{logits.shape[-1]}")
      rng = self.make_rng("gumbel") if self.head.needs_rng else None
      out = self.head(logits, train=train, rng=rng)
    return out.reshape((z.shape[0],) + tuple(self.output_shape))


class ConditionalMLPDiscriminator(nn.Module):
  """D(x, y): one logit per example (no sigmoid)."""
  num_classes: int
  hidden: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    h = x.reshape((x.shape[0], -1))
    h = jnp.concatenate([h, jax.nn.one_hot(labels, self.num_classes, dtype=h.dtype)], -1)
    h = nn.relu(_dense(self.hidden, "hidden")(h))
    return _dense(1, "out")(h)[:, 0]


def make_mlp_gan(output_shape: tuple[int, ...], num_classes: int, *, hidden: int = 128,
                 g_hidden: int | None = None, head: TabularHead | None = None
                 ) -> tuple[ConditionalMLPGenerator, ConditionalMLPDiscriminator]:
  """(G, D) of dpcgan.md §1 for examples of `output_shape`."""
  g = ConditionalMLPGenerator(tuple(output_shape), num_classes, g_hidden or hidden, head)
  return g, ConditionalMLPDiscriminator(num_classes, hidden)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
