"""GS-WGAN's warm start as a Stage: K discriminators on disjoint shards, pretrained
non-privately (docs/methods/gswgan.md).

Discriminator i owns shard i of one seeded permutation of the training set (n = N // K
examples) and is trained with its own throwaway generator for `pretrain_iterations`
outer iterations of `critic_iters` WGAN-GP critic steps and one plain generator step.
Only the discriminator (parameters and spectral-norm state) is kept.

The generic training loop runs the stage chunk by chunk (gswgan.pretrain_chunk
discriminators at once, one jit-compiled `jax.vmap` over stacked discriminators, sharded
over the mesh's 'data' axis when there is more than one device) and saves every chunk in
the run folder (stages/pretrain, or gswgan.pretrained_dir), resumable chunk by chunk. A
vmap over per-discriminator weights turns every convolution into a grouped convolution,
which XLA:CPU does not run faster than one discriminator at a time
(experiments/bench_gswgan_pretrain.py): on a CPU use gswgan.pretrain_chunk = 1. Every
discriminator's randomness is derived from (train.seed, its id) alone (threefry keys),
so a discriminator ends in the same state whatever the chunking.

Privacy: pretraining touches each record through one discriminator only and releases
nothing; the generator later sees discriminators only through sanitised gradients, so
it costs no privacy. The pretrained discriminators are private artefacts (like
checkpoints), and so are their training losses, which are not logged. The shard
partition and the pretraining randomness come from public seeds: the analysis treats
each critic as an arbitrary function of its shard and needs only the later choice of
critics and the noise to be secret.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dpgen_jax import parallel
from dpgen_jax.methods import protocol
from dpgen_jax.methods.gswgan import core

PyTree = Any
_PRETRAIN_SALT = 0x5EED


def partition(num_examples: int, num_discriminators: int, seed: int) -> np.ndarray:
  """(K, n) training indices: shard i is row i of one seeded shuffle (upstream's).

  Upstream seeds numpy with `seed` and shuffles arange(N) with the global generator
  before any other numpy draw, which RandomState(seed).shuffle reproduces. The
  N - nK examples left over when K does not divide N are unused, as upstream.
  """
  n, used = core.num_shards_examples(num_examples, num_discriminators)
  indices = np.arange(num_examples)
  np.random.RandomState(seed).shuffle(indices)
  return indices[:used].reshape(num_discriminators, n)


def recipe(config, spec) -> dict:
  g = config.gswgan
  n, _ = core.num_shards_examples(spec.num_train, g.num_discriminators)
  return dict(dataset=spec.name, num_examples=spec.num_train,
              num_discriminators=int(g.num_discriminators), shard_size=n,
              partition_seed=int(g.partition_seed), d_model_dim=int(g.d_model_dim),
              num_classes=spec.num_classes, gen_arch=g.gen_arch, g_model_dim=int(g.model_dim),
              z_dim=int(g.z_dim), latent_type=g.latent_type,
              pretrain_iterations=int(g.pretrain_iterations), critic_iters=int(g.critic_iters),
              batch_size=int(config.train.batch_size), seed=int(config.train.seed),
              d_lr=float(g.d_lr), g_lr=float(g.g_lr), betas=[float(g.beta1), float(g.beta2)],
              gp_weight=float(g.gp_weight), drift_weight=float(g.drift_weight))


def discriminator_keys(seed: int, ids: np.ndarray) -> jax.Array:
  """One key per discriminator id, independent of chunking.

  Threefry, whatever train.prng_impl says: 'rbg' draws different bits for a key under
  vmap than alone, threefry draws the same, so a discriminator's pretraining does not
  depend on the chunk it is trained in.
  """
  base = jax.random.fold_in(jax.random.key(seed, impl="threefry2x32"), _PRETRAIN_SALT)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(ids, jnp.int32))


class Pretrainer:
  """Vmapped pretraining of chunks of discriminators (with their own generators)."""

  def __init__(self, gan: core.Core, config, mesh, shards_x, shards_y):
    self.gan = gan
    self.config = config
    self.mesh = mesh
    self.shards_x = shards_x  # (K, n, 28, 28, 1) uint8, on the host
    self.shards_y = shards_y  # (K, n) int32
    self._init = jax.jit(jax.vmap(self._init_one))
    self._iteration = jax.jit(jax.vmap(self._iteration_one, in_axes=(0, 0, 0, 0, 0, None)),
                              donate_argnums=(0, 1))

  def _init_one(self, key):
    kd, kg = jax.random.split(jax.random.fold_in(key, 0))
    disc = core.Discriminator(self.gan.init_discriminator(kd), jnp.zeros((), jnp.int32))
    return disc, self.gan.init_generator(kg)

  def _iteration_one(self, disc, gen, x_shard, y_shard, key, t):
    """One outer pretraining iteration of one discriminator (gswgan.md §2.2)."""
    it_key = jax.random.fold_in(jax.random.fold_in(key, 1), t)
    k_critic, k_g = jax.random.split(it_key)
    disc, g_sn, metrics = self.gan.critic_steps(disc, gen.params, gen.sn, x_shard, y_shard,
                                                jax.random.fold_in(key, 2), k_critic)
    # Upstream's G batch is the last critic batch (32 or 28); we use the fixed B.
    gen, d_sn, g_loss = self.gan.generator_step_plain(
        gen.replace(sn=g_sn), disc.net.params, disc.net.sn, k_g, self.gan.batch_size)
    disc = disc.replace(net=disc.net.replace(sn=d_sn))
    return disc, gen, dict(metrics, g_loss=g_loss)

  def _place(self, tree):
    """Shards the chunk axis over the mesh (when it divides evenly)."""
    size = jax.tree.leaves(tree)[0].shape[0]
    if self.mesh.size > 1 and size % self.mesh.size == 0:
      return jax.device_put(tree, NamedSharding(self.mesh, P(parallel.DATA_AXIS)))
    return tree

  def run_chunk(self, start: int, end: int) -> PyTree:
    """Pretrains discriminators start..end-1; returns {'params', 'sn'} stacked."""
    ids = np.arange(start, end)
    keys = discriminator_keys(int(self.config.train.seed), ids)
    disc, gen = self._init(keys)
    disc, gen, keys = self._place((disc, gen, keys))
    xs, ys = self._place((jnp.asarray(self.shards_x[start:end]),
                          jnp.asarray(self.shards_y[start:end])))
    for t in range(int(self.config.gswgan.pretrain_iterations)):
      disc, gen, _ = self._iteration(disc, gen, xs, ys, keys, jnp.asarray(t, jnp.int32))
    return {"params": disc.net.params, "sn": disc.net.sn}


class PretrainStage(protocol.Stage):
  """The warm start as a Stage of the generic loop (module docstring)."""
  name = "pretrain"

  def __init__(self, gan: core.Core, config, spec, mesh, dataset=None):
    self.gan, self.config, self.spec, self.mesh = gan, config, spec, mesh
    self.dataset = dataset
    self._pretrainer = None

  def recipe(self) -> dict:
    return recipe(self.config, self.spec)

  def num_items(self) -> int:
    return int(self.config.gswgan.num_discriminators)

  def chunk_size(self) -> int:
    return int(self.config.gswgan.pretrain_chunk)

  def item_structure(self):
    one = jax.eval_shape(lambda: self.gan.init_discriminator(jax.random.key(0)))
    return {"params": one.params, "sn": one.sn}

  def run_items(self, start: int, end: int):
    if self._pretrainer is None:
      self._pretrainer = Pretrainer(self.gan, self.config, self.mesh,
                                    *shard_arrays(self.dataset, self.config, self.spec))
    return self._pretrainer.run_chunk(start, end)

  def directory(self, run) -> str:
    return self.config.gswgan.pretrained_dir or run.stage_dir(self.name)


def shard_arrays(dataset, config, spec) -> tuple[np.ndarray, np.ndarray]:
  """(K, n, 28, 28, 1) images (uint8 when exactly 8-bit) and (K, n) labels of the shards."""
  indices = partition(spec.num_train, int(config.gswgan.num_discriminators),
                      int(config.gswgan.partition_seed))
  x = dataset.train_x[indices]
  scaled = x * 255.0
  if np.array_equal(scaled, np.round(scaled)):
    x = np.round(scaled).astype(np.uint8)
  return x, dataset.train_y[indices].astype(np.int32)
