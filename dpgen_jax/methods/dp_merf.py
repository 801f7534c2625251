"""DP-MERF (Harder, Adamczewski, Park; AISTATS 2021): random Fourier features, one release.

Spec: docs/methods/dp_merf.md. The mean embedding of the private data under a Gaussian
kernel k(x, x') = exp(-||x - x'||^2 / (2 sigma_rff^2)) is approximated with D random
Fourier features

    phi(x) = [cos(W x), sin(W x)] / sqrt(D / 2),   W ~ N(0, I / sigma_rff^2), (D/2, d),

whose norm is exactly 1 (cos^2 + sin^2 = 1). The frequencies W are drawn from the public
`dp_merf.feature_seed` (they do not depend on the data) and the bandwidth is a fixed
config value (`rff_sigma2` = sigma_rff^2: 105 for MNIST, 127 for Fashion-MNIST, as
upstream; a bandwidth chosen from the private data would have to be accounted). The
class-conditional embedding (1/n) sum_i phi(x_i) onehot(y_i)^T (a D x C matrix) is
released once with Gaussian noise (mean_embedding.py); a generator is then trained to
minimise || released - (1/B) sum_j phi(G(z_j, y_j)) onehot(y_j)^T ||_F^2 for as many
steps as you like, at no privacy cost.
"""


import jax
import jax.numpy as jnp
import numpy as np

from dpgen_jax.methods import mean_embedding as me, protocol

SECTION = "dp_merf"


class RandomFourierFeatures:
  """phi(x) = [cos(W x), sin(W x)] / sqrt(D/2) on flattened x; ||phi(x)|| = 1."""

  def __init__(self, dim_in: int, num_features: int, sigma2: float, seed: int):
    if num_features % 2:
      raise ValueError(f"num_features must be even (cos and sin pairs), got {num_features}")
    rs = np.random.default_rng(int(seed))
    self.w = jnp.asarray(rs.normal(size=(num_features // 2, dim_in)) / np.sqrt(sigma2),
                         jnp.float32)
    self.num_features = int(num_features)

  def __call__(self, x_flat: jax.Array) -> jax.Array:
    proj = jnp.dot(x_flat, self.w.T, precision=jax.lax.Precision.HIGHEST)
    phi = jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=-1)
    return phi / np.sqrt(self.num_features / 2)

  def zeros(self, num_classes: int):
    return jnp.zeros((num_classes, self.num_features), jnp.float32)

  def data_sum(self, x: jax.Array, y_onehot: jax.Array) -> jax.Array:
    """sum_i onehot(y_i) phi(x_i)^T, (C, D)."""
    phi = self(x.reshape(x.shape[0], -1))
    return jnp.dot(y_onehot.T, phi, precision=jax.lax.Precision.HIGHEST)

  def loss(self, target: jax.Array, x_blocks: jax.Array) -> jax.Array:
    """||target - (1/B) sum_j phi(x_j) y_j^T||^2, x_blocks (C, m, d): block c labelled c."""
    num_classes, m, _ = x_blocks.shape
    gen = jnp.sum(jax.vmap(self)(x_blocks), axis=1) / (num_classes * m)
    return jnp.sum(jnp.square(target - gen))


def features_for(config, spec) -> RandomFourierFeatures:
  g = config[SECTION]
  return RandomFourierFeatures(int(np.prod(spec.example_shape)), int(g.num_features),
                               float(g.rff_sigma2), int(g.feature_seed))


def declaration(config, num_examples: int, sigma: float):
  g = config[SECTION]
  return me.declaration(config, num_examples, sigma, SECTION, "random Fourier features",
                        dict(num_features=int(g.num_features), rff_sigma2=float(g.rff_sigma2)))


def validate(config, spec) -> None:
  from dpgen_jax import errors
  g = config[SECTION]
  me.validate_common(config, spec, SECTION)
  errors.require(g.num_features >= 2 and g.num_features % 2 == 0,
                 f"dp_merf.num_features must be a positive even number, got {g.num_features}.")
  errors.require(g.rff_sigma2 > 0, f"dp_merf.rff_sigma2 must be positive, got {g.rff_sigma2}.")


class DPMERF(me.EmbeddingMatcher):
  section = SECTION


def build(plan, config, spec, mesh) -> DPMERF:
  return DPMERF(plan, config, spec, mesh, features_for(config, spec))


DEFINITION = protocol.MethodDefinition(name=SECTION, validate=validate, privacy=declaration,
                                       build=build)
