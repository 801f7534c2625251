"""GS-WGAN's warm start: K discriminators on disjoint shards, pretrained non-privately.

Spec: docs/methods/gswgan.md §2.1-§2.2 (upstream source/pretrain.py). Each
discriminator i owns shard i of one seeded permutation of the training set (n = N // K
examples) and is trained with its own throwaway generator for `pretrain_iterations`
outer iterations of `critic_iters` WGAN-GP critic steps and one plain generator step.
Only the discriminator (parameters and spectral-norm state) is kept.

Many discriminators train at once: one jit-compiled `jax.vmap` of the outer iteration
over a chunk of stacked discriminators (and their generators), sharded over the
device mesh's 'data' axis when there is more than one device. A vmap over
per-discriminator weights turns every convolution into a grouped convolution, which
XLA:CPU does not run faster than one discriminator at a time (see
experiments/bench_gswgan_pretrain.py): on a CPU use gswgan.pretrain_chunk = 1. Every
discriminator's randomness is derived from (train.seed, its id) alone (threefry keys),
so a discriminator ends in the same state whatever the chunking (up to floating-point
reassociation of batched kernels); tests check this against one at a time.

Storage (Orbax): PRETRAINED_DIR/meta.json (what was pretrained), partition.npy (the
permutation, (K, n) indices) and one StandardCheckpointer folder per finished chunk,
chunk_<start>_<end>/ = {'params', 'sn'} stacked over the chunk's discriminators. Orbax
renames a folder into place only when complete, so an interrupted run resumes at the
first unfinished chunk.

Privacy: pretraining touches each record through one discriminator only, never
releases anything, and the generator later sees discriminators only through sanitised
gradients, so it costs no privacy (docs/methods/gswgan.md). The ledger covers main
training. The pretrained discriminators are private artefacts (like checkpoints), and so
are their training losses: the critic costs are logged (to the log and to
PRETRAINED_DIR/log.jsonl) only with train.log_private_metrics; otherwise only progress
and timing are. The shard partition and the pretraining randomness come from public
seeds: the analysis treats each critic as an arbitrary function of its shard and needs
only the later choice of critics and the noise to be secret.
"""

import json
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from dpgen_jax import errors, parallel
from dpgen_jax.log import get_logger
from dpgen_jax.methods import gswgan_core as core

PyTree = Any
_PRETRAIN_SALT = 0x5EED
_CHUNK = re.compile(r"^chunk_(\d+)_(\d+)$")
# meta.json fields that must match for pretrained discriminators to be reused.
RECIPE_FIELDS = ("dataset", "num_examples", "num_discriminators", "shard_size",
                 "partition_seed", "d_model_dim", "num_classes", "gen_arch", "g_model_dim",
                 "z_dim", "latent_type", "pretrain_iterations", "critic_iters", "batch_size",
                 "seed", "d_lr", "g_lr", "betas", "gp_weight", "drift_weight")


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


def pretrained_dir(config, workdir: str) -> str:
  return config.gswgan.pretrained_dir or os.path.join(workdir, "pretrained")


class PretrainStore:
  """The pretrained discriminators of one recipe in one folder."""

  def __init__(self, directory: str, recipe_: dict):
    self.directory = os.path.abspath(directory)
    self.recipe = recipe_

  def _path(self, name: str) -> str:
    return os.path.join(self.directory, name)

  def exists(self) -> bool:
    return os.path.exists(self._path("meta.json"))

  def check_or_create(self, indices: np.ndarray) -> None:
    """Creates the folder for this recipe, or checks that it holds this recipe."""
    if self.exists():
      self.check_recipe()
      return
    os.makedirs(self.directory, exist_ok=True)
    np.save(self._path("partition.npy"), indices)
    with open(self._path("meta.json"), "w") as f:
      json.dump(self.recipe, f, indent=2, sort_keys=True)

  def check_recipe(self) -> None:
    with open(self._path("meta.json")) as f:
      saved = json.load(f)
    diff = [f"{k}: saved {saved.get(k)!r}, config {self.recipe[k]!r}" for k in RECIPE_FIELDS
            if saved.get(k) != self.recipe[k]]
    errors.require(not diff, f"{self.directory} holds discriminators pretrained with another "
                             f"recipe ({'; '.join(diff)}). Use another gswgan.pretrained_dir "
                             f"(or --workdir), or delete that folder to pretrain again.")

  def partition(self) -> np.ndarray:
    return np.load(self._path("partition.npy"))

  def finished_chunks(self) -> list[tuple[int, int]]:
    if not os.path.isdir(self.directory):
      return []
    found = [m for m in map(_CHUNK.match, os.listdir(self.directory)) if m]
    return sorted((int(m.group(1)), int(m.group(2))) for m in found)

  def missing(self, chunk_size: int) -> list[tuple[int, int]]:
    """Ranges of discriminator ids not yet pretrained, cut into chunks of chunk_size."""
    todo, pos = [], 0
    total = self.recipe["num_discriminators"]
    for start, end in self.finished_chunks() + [(total, total)]:
      todo += [(s + pos, e + pos) for s, e in core.chunks(max(0, start - pos), chunk_size)]
      pos = max(pos, end)
    return todo

  def save_chunk(self, start: int, end: int, nets: PyTree) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(self._path(f"chunk_{start:05d}_{end:05d}"), nets)
    checkpointer.wait_until_finished()
    checkpointer.close()

  def load(self, abstract_one: PyTree) -> PyTree:
    """All K discriminators {'params', 'sn'} stacked on a leading axis.

    Raises a UserError if the folder is missing, holds another recipe or is incomplete.
    """
    total = self.recipe["num_discriminators"]
    errors.require(self.exists(),
                   f"No pretrained discriminators in {self.directory}. Run pretraining first "
                   f"(--config.gswgan.stage=pretrain or =both on this --workdir), or point "
                   f"gswgan.pretrained_dir at a folder that holds them.")
    self.check_recipe()
    chunks, pos = self.finished_chunks(), 0
    for start, end in chunks:
      errors.require(start == pos, f"{self.directory} is incomplete: discriminators "
                                   f"{pos}..{start - 1} are not pretrained yet; resume "
                                   f"pretraining with --config.gswgan.stage=pretrain.")
      pos = end
    errors.require(pos == total, f"{self.directory} is incomplete: {pos} of {total} "
                                 f"discriminators are pretrained; resume pretraining with "
                                 f"--config.gswgan.stage=pretrain.")
    checkpointer = ocp.StandardCheckpointer()
    parts = []
    for start, end in chunks:
      abstract = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct((end - start,) + tuple(a.shape), a.dtype), abstract_one)
      parts.append(jax.device_get(checkpointer.restore(self._path(
          f"chunk_{start:05d}_{end:05d}"), abstract)))
    checkpointer.close()
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)

  def log(self, record: dict) -> None:
    with open(self._path("log.jsonl"), "a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")


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

  def run_chunk(self, start: int, end: int, *, log_every: int = 0,
                log_private: bool = False) -> tuple[PyTree, dict]:
    """Pretrains discriminators start..end-1; returns ({'params', 'sn'} stacked, metrics)."""
    ids = np.arange(start, end)
    keys = discriminator_keys(int(self.config.train.seed), ids)
    disc, gen = self._init(keys)
    disc, gen, keys = self._place((disc, gen, keys))
    xs, ys = self._place((jnp.asarray(self.shards_x[start:end]),
                          jnp.asarray(self.shards_y[start:end])))
    metrics = {}
    iterations = int(self.config.gswgan.pretrain_iterations)
    for t in range(iterations):
      disc, gen, metrics = self._iteration(disc, gen, xs, ys, keys, jnp.asarray(t, jnp.int32))
      if log_every and (t + 1) % log_every == 0 and t + 1 < iterations:
        get_logger().info("  pretraining discriminators %d..%d: iteration %d/%d%s", start,
                          end - 1, t + 1, iterations,
                          f", private: {_summary(metrics)}" if log_private else "")
    return {"params": disc.net.params, "sn": disc.net.sn}, _summary(metrics)


def _summary(metrics: dict) -> dict:
  return {k: float(np.mean(np.asarray(v))) for k, v in jax.device_get(metrics).items()}


def run_pretraining(pretrainer: Pretrainer, store: PretrainStore, *, chunk_size: int,
                    log_every: int, log_private: bool = False) -> dict:
  """Pretrains every discriminator not yet in `store`, chunk by chunk; returns a summary.
  The critics' losses are logged only with `log_private` (they read the private shards)."""
  log = get_logger()
  todo = store.missing(chunk_size)
  total = store.recipe["num_discriminators"]
  done = total - sum(e - s for s, e in todo)
  if not todo:
    log.info("All %d discriminators are already pretrained in %s.", total, store.directory)
  t0 = time.time()
  for start, end in todo:
    t = time.time()
    nets, metrics = pretrainer.run_chunk(start, end, log_every=log_every,
                                         log_private=log_private)
    store.save_chunk(start, end, nets)
    done += end - start
    seconds = time.time() - t
    if not log_private:
      metrics = {}
    store.log(dict(start=start, end=end, seconds=seconds,
                   **{"private/" + k: v for k, v in metrics.items()}))
    log.info("Pretrained discriminators %d..%d (%d/%d) in %.0f s (%.2f per minute)%s",
             start, end - 1, done, total, seconds, 60.0 * (end - start) / max(seconds, 1e-9),
             (": private/ " + " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
             if metrics else "")
  return dict(stage="pretrain", pretrained=done, num_discriminators=total,
              pretrained_dir=store.directory, wall_time_s=time.time() - t0)
