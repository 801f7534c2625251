"""DP-NTK (Yang, Adamczewski, Sutherland, Li, Park; AISTATS 2023): neural tangent features.

Spec: docs/methods/dp_ntk.md. The feature of an example is the normalised gradient, with
respect to all parameters theta, of the sum of the outputs of a randomly initialised
(never trained) network f(x) = W2 LN(relu(W1 x + b1)) + b2 (width 800, 10 outputs,
LayerNorm without affine parameters, PyTorch's default initialisation from the public
`dp_ntk.feature_seed`):

    psi(x) = g(x) / ||g(x)||,   g(x) = d/d theta sum_k f_k(x)   (636,010 numbers for MNIST).

The class-conditional mean embedding (1/n) sum_i psi(x_i) onehot(y_i)^T is released once
(mean_embedding.py). Neither the release nor generator training ever holds per-example
gradients: with r = relu(a), a = W1 x + b1, h = LN(r) = (r - mean r) / s,
u = W2^T 1, the gradient has the closed form

    d/db2 = 1,  d/dW2 = 1 h^T (10 equal rows),  delta = d/da = [a > 0] (u - mean(u)
    - h mean(u h)) / s,  d/dW1 = delta x^T,  d/db1 = delta,

so ||g||^2 = ||delta||^2 (||x||^2 + 1) + 10 ||h||^2 + 10, the embedding is accumulated
as C x (800 x 784 + 800 + 10 x 800 + 10) sums of outer products, and the generator's
loss needs only <embedding_c, g(x)> = delta^T (M1_c x + m1_c) + sum_rows(M2_c) h +
sum(m2_c) and, within each class, the kernel <g(x), g(x')> = (delta . delta')(x . x' + 1)
+ 10 h . h' + 10 (generated batches hold B / C examples of every class).
tests/methods/test_dp_ntk.py checks the closed form against jax.grad.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax import errors
from dpgen_jax.methods import mean_embedding as me, protocol

SECTION = "dp_ntk"
LN_EPS = 1e-5
HIGHEST = jax.lax.Precision.HIGHEST


def init_ntk_params(dim_in: int, width: int, outputs: int, seed: int) -> dict:
  """PyTorch Linear defaults: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  rs = np.random.default_rng(int(seed))
  b1, b2 = 1 / math.sqrt(dim_in), 1 / math.sqrt(width)
  u = lambda b, shape: jnp.asarray(rs.uniform(-b, b, shape), jnp.float32)
  return {"w1": u(b1, (width, dim_in)), "b1": u(b1, (width,)),
          "w2": u(b2, (outputs, width)), "b2": u(b2, (outputs,))}


def ntk_output_sum(params: dict, x_flat: jax.Array) -> jax.Array:
  """sum_k f_k(x) for one example (the function whose gradient is the feature)."""
  a = params["w1"] @ x_flat + params["b1"]
  r = jax.nn.relu(a)
  h = (r - r.mean()) / jnp.sqrt(r.var() + LN_EPS)
  return jnp.sum(params["w2"] @ h + params["b2"])


class NTKFeatures:
  """Closed-form NTK features of `ntk_output_sum` (module docstring)."""

  def __init__(self, dim_in: int, width: int, outputs: int, seed: int):
    self.params = init_ntk_params(dim_in, width, outputs, seed)
    self.outputs = int(outputs)
    self.u = jnp.sum(self.params["w2"], axis=0)  # W2^T 1

  def parts(self, x_flat: jax.Array):
    """(delta (n, width), h (n, width), ||g|| (n,)) for a batch of flattened inputs."""
    a = jnp.dot(x_flat, self.params["w1"].T, precision=HIGHEST) + self.params["b1"]
    r = jax.nn.relu(a)
    mean = r.mean(axis=-1, keepdims=True)
    s = jnp.sqrt(jnp.mean(jnp.square(r - mean), axis=-1, keepdims=True) + LN_EPS)
    h = (r - mean) / s
    u = self.u[None, :]
    dr = (u - jnp.mean(u, axis=-1, keepdims=True)
          - h * jnp.mean(u * h, axis=-1, keepdims=True)) / s
    delta = jnp.where(a > 0, dr, 0.0)
    sq = (jnp.sum(jnp.square(delta), -1) * (jnp.sum(jnp.square(x_flat), -1) + 1.0)
          + self.outputs * jnp.sum(jnp.square(h), -1) + self.outputs)
    return delta, h, jnp.sqrt(sq)

  def full_features(self, x_flat: jax.Array) -> dict:
    """psi(x) as a parameter-shaped pytree per example (tests only: large)."""
    delta, h, norm = self.parts(x_flat)
    inv = (1.0 / norm)[:, None]
    n = x_flat.shape[0]
    return {"w1": (delta * inv)[:, :, None] * x_flat[:, None, :], "b1": delta * inv,
            "w2": jnp.broadcast_to((h * inv)[:, None, :], (n, self.outputs, h.shape[-1])),
            "b2": jnp.broadcast_to(inv, (n, self.outputs))}

  def zeros(self, num_classes: int) -> dict:
    return {k: jnp.zeros((num_classes,) + v.shape, jnp.float32) for k, v in self.params.items()}

  def data_sum(self, x: jax.Array, y_onehot: jax.Array) -> dict:
    """sum_i onehot(y_i) (x) psi(x_i), per parameter leaf with a leading class axis."""
    x_flat = x.reshape(x.shape[0], -1)
    delta, h, norm = self.parts(x_flat)
    wy = y_onehot / norm[:, None]  # (n, C): 1/||g_i|| in the column of y_i
    return {
        "w1": jnp.einsum("nc,nk,nd->ckd", wy, delta, x_flat, precision=HIGHEST),
        "b1": jnp.einsum("nc,nk->ck", wy, delta, precision=HIGHEST),
        "w2": jnp.broadcast_to(jnp.einsum("nc,nk->ck", wy, h, precision=HIGHEST)[:, None, :],
                               (y_onehot.shape[1], self.outputs, h.shape[-1])),
        "b2": jnp.broadcast_to(jnp.sum(wy, axis=0)[:, None], (y_onehot.shape[1], self.outputs)),
    }

  def loss(self, target: dict, x_blocks: jax.Array) -> jax.Array:
    """||target - (1/B) sum_j psi(x_j) y_j^T||^2 for generated examples in class blocks
    (x_blocks: (C, m, d), block c labelled c, B = C m), from inner products only: each
    example meets its own class's embedding, and the kernel is needed within a class."""
    num_classes, m, d = x_blocks.shape
    delta, h, norm = jax.vmap(self.parts)(x_blocks)  # (C, m, width), (C, m)
    m1x = jnp.einsum("ckd,cmd->cmk", target["w1"], x_blocks) + target["b1"][:, None, :]
    cross = (jnp.sum(m1x * delta, -1) + jnp.einsum("ck,cmk->cm", target["w2"].sum(axis=1), h)
             + target["b2"].sum(axis=1)[:, None]) / norm  # <target_c, psi(x_cj)>
    gram = ((jnp.einsum("cik,cjk->cij", delta, delta)
             * (jnp.einsum("cid,cjd->cij", x_blocks, x_blocks) + 1.0)
             + self.outputs * jnp.einsum("cik,cjk->cij", h, h) + self.outputs)
            / (norm[:, :, None] * norm[:, None, :]))
    b = num_classes * m
    target_sq = sum(jnp.sum(jnp.square(t)) for t in jax.tree.leaves(target))
    return target_sq - 2.0 * jnp.sum(cross) / b + jnp.sum(gram) / b ** 2


def features_for(config, spec) -> NTKFeatures:
  g = config[SECTION]
  return NTKFeatures(int(np.prod(spec.example_shape)), int(g.width), int(g.outputs),
                     int(g.feature_seed))


def feature_dim(dim_in: int, width: int, outputs: int) -> int:
  return width * dim_in + width + outputs * width + outputs


def declaration(config, num_examples: int, sigma: float):
  g = config[SECTION]
  return me.declaration(config, num_examples, sigma, SECTION, "neural tangent features",
                        dict(ntk_width=int(g.width), ntk_outputs=int(g.outputs)))


def validate(config, spec) -> None:
  g = config[SECTION]
  me.validate_common(config, spec, SECTION)
  errors.require(g.width >= 1 and g.outputs >= 1,
                 f"dp_ntk.width and dp_ntk.outputs must be positive, got {g.width}, {g.outputs}.")


class DPNTK(me.EmbeddingMatcher):
  section = SECTION


def build(plan, config, spec, mesh) -> DPNTK:
  return DPNTK(plan, config, spec, mesh, features_for(config, spec))


DEFINITION = protocol.MethodDefinition(name=SECTION, validate=validate, privacy=declaration,
                                       build=build)
