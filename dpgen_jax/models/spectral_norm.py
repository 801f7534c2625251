"""Spectral normalisation as GS-WGAN implements it (docs/methods/gswgan.md §1.1).

Each layer keeps its trainable weight W and two non-trainable unit vectors u (length
= rows of W viewed as a matrix) and v (length = columns), both drawn N(0, 1) and
L2-normalised (eps 1e-10) at initialisation. Every forward call runs one power
iteration from the stored u and divides the weight by the resulting estimate of its
largest singular value:

    v <- normalise(W^T u),  u <- normalise(W v),  sigma_W = u . (W v),  W_used = W / sigma_W

with u and v treated as constants (the gradient flows through W only). The matrix
view of W is PyTorch's: `weight.view(out, -1)`, i.e. rows are output features and
columns run over (in, kh, kw) for a convolution.

u and v live in the Flax collection `'spectral'`. When it is passed as mutable
(`mutable=['spectral']`) the updated vectors are written back, so successive calls
must thread the state in call order (upstream updates on *every* forward: real, fake
and gradient-penalty forwards of the critic, the generator step, and sampling). When it
is immutable the call still uses the fresh power iteration but stores nothing. The
iteration depends on W and u only, never on the inputs, so it couples no examples:
per-example gradients through an SN layer are the per-example gradients of the
network with W / sigma_W held at this call's value.

Flax's `nn.SpectralNorm` differs (it stores sigma, updates only when asked, and uses
its own matrix layout), hence these hand-rolled layers.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from dpgen_jax.models import init

COLLECTION = "spectral"
NORM_EPS = 1e-10


def l2_normalize(v: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """v / (||v||_2 + eps), as upstream's `l2_norm`."""
  return v / (jnp.linalg.norm(v) + eps)


def power_iteration(w_mat: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One power-iteration step on the (rows, cols) matrix `w_mat` from the unit vector u.

  Returns (sigma, u_new, v_new) with v_new = normalise(W^T u), u_new = normalise(W v_new)
  and sigma = u_new . (W v_new); u_new and v_new carry no gradient, sigma's gradient
  flows through W.
  """
  w_const = jax.lax.stop_gradient(w_mat)
  u = jax.lax.stop_gradient(u)
  v_new = l2_normalize(w_const.T @ u)
  u_new = l2_normalize(w_const @ v_new)
  sigma = u_new @ (w_mat @ v_new)
  return sigma, u_new, v_new


class _SpectralState(nn.Module):
  """Mixin: the u, v variables of one layer and the normalised weight."""

  def normalized(self, w_mat: jax.Array) -> jax.Array:
    rows, cols = w_mat.shape

    def unit(shape):
      key = self.make_rng("params")
      return l2_normalize(jax.random.normal(key, shape, jnp.float32))

    u = self.variable(COLLECTION, "u", unit, (rows,))
    v = self.variable(COLLECTION, "v", unit, (cols,))
    sigma, u_new, v_new = power_iteration(w_mat, u.value)
    # Upstream creates u, v at construction and iterates only when called: `init`
    # must store the initial draw, not one iteration ahead.
    if self.is_mutable_collection(COLLECTION) and not self.is_initializing():
      u.value = u_new
      v.value = v_new
    return w_mat / sigma


class SNDense(_SpectralState):
  """Spectrally normalised PyTorch `Linear(in_features, features)` (default init)."""
  in_features: int
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", init.torch_uniform(self.in_features),
                        (self.in_features, self.features))
    w = self.normalized(kernel.T)  # PyTorch weight (out, in)
    y = x @ w.T
    if self.use_bias:
      y = y + self.param("bias", init.torch_uniform(self.in_features), (self.features,))
    return y


class SNConv(_SpectralState):
  """Spectrally normalised PyTorch `Conv2d(in, features, k, stride, padding)`, NHWC.

  Kernel (k, k, in, out) and bias ~ U(+-1/sqrt(in k k)); symmetric zero padding
  `padding` (PyTorch's; not 'SAME', which pads (1, 2) for k5 s2 on even inputs).
  """
  in_features: int
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    fan_in = self.in_features * k * k
    kernel = self.param("kernel", init.torch_uniform(fan_in),
                        (k, k, self.in_features, self.features))
    # PyTorch's weight.view(out, -1): columns in (in, kh, kw) order.
    w_mat = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(self.features, -1)
    w = self.normalized(w_mat)
    kernel_n = jnp.transpose(w.reshape(self.features, self.in_features, k, k), (2, 3, 1, 0))
    p = self.padding
    y = jax.lax.conv_general_dilated(
        x, kernel_n, window_strides=(self.stride, self.stride), padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.param("bias", init.torch_uniform(fan_in), (self.features,))


class SNEmbed(_SpectralState):
  """Spectrally normalised PyTorch `Embedding(num_embeddings, features)` (N(0, 1) init).

  The matrix is the embedding table itself (rows = embeddings), as upstream.
  """
  num_embeddings: int
  features: int

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    table = self.param("embedding", jax.nn.initializers.normal(1.0),
                       (self.num_embeddings, self.features))
    return jnp.take(self.normalized(table), ids, axis=0)


def spectral_state_size(variables: dict) -> int:
  """Number of u/v entries in `variables[COLLECTION]` (0 if absent)."""
  tree = variables.get(COLLECTION, {})
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def param_count(variables: dict, collection: str = "params") -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(variables.get(collection, {})))


