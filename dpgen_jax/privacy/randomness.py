"""Secret randomness: one root for every random choice the privacy analysis hides.

Amplification by subsampling assumes nobody can tell which records a step used, and
the Gaussian mechanism assumes nobody knows its noise. So everything random that
touches private data comes from one secret root:

  * the noise of every mechanism;
  * which records a step uses: Poisson batch membership, GS-WGAN's choice of
    discriminator(s), DP-CGAN's microbatch ids, CSL-GAN's shuffled batches and mean
    samples, the record subsets of one-time releases;
  * the rest of a step's randomness (latents, fake labels), which need not be secret
    but is drawn from the same root so that no method has to decide which is which.

The root is 256 bits of OS entropy (`os.urandom`), drawn once per run on process 0 and
broadcast to every host. It is stored in every checkpoint (a private artefact, like the
discriminator), so a resumed run, or a run that falls back to an older checkpoint,
replays exactly the batches, choices and noise an uninterrupted run would have drawn:
two different noisy versions of one step are never released.

`privacy.reproducible = True` derives the root from the public `train.seed` instead (for
tests and debugging). Then anyone who knows the config knows every batch and every
noise draw: the run reports no epsilon (null, with a caveat).

Keys are derived by hashing (numpy's SeedSequence) the root with a purpose name, and
per step with `jax.random.fold_in`; numpy generators (host-side sampling) hash the root,
the purpose and an index. JAX's generators are not cryptographically secure: like
upstream (Opacus secure_mode=False) this is research-grade DP.
"""

import dataclasses
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np

ROOT_WORDS = 8  # 256 bits
PUBLIC_CAVEAT = ("privacy.reproducible = True: batches, random choices and noise are derived "
                 "from the public train.seed, so the run has no privacy guarantee and reports "
                 "no epsilon")
_KEY_WORDS = {"rbg": 4, "unsafe_rbg": 4, "threefry2x32": 2}


def _purpose_word(purpose: str) -> int:
  return zlib.crc32(purpose.encode("utf-8"))


@dataclasses.dataclass(frozen=True)
class SecretRoot:
  """The run's root of secret randomness.

  Attributes:
    words: ROOT_WORDS 32-bit words.
    public: True when derived from train.seed (privacy.reproducible): no privacy.
  """
  words: tuple[int, ...]
  public: bool = False

  @classmethod
  def from_entropy(cls) -> "SecretRoot":
    """256 bits of OS entropy, identical on every host (broadcast from process 0)."""
    words = np.frombuffer(os.urandom(4 * ROOT_WORDS), dtype=np.uint32).copy()
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      words = np.asarray(multihost_utils.broadcast_one_to_all(words))
    return cls(tuple(int(w) for w in words), public=False)

  @classmethod
  def from_seed(cls, seed: int) -> "SecretRoot":
    """A root anyone can recompute from the config (privacy.reproducible)."""
    words = np.random.SeedSequence([int(seed), 0x5EC4E7]).generate_state(ROOT_WORDS)
    return cls(tuple(int(w) for w in words), public=True)

  @classmethod
  def for_run(cls, seed: int, reproducible: bool) -> "SecretRoot":
    return cls.from_seed(seed) if reproducible else cls.from_entropy()

  def to_array(self) -> np.ndarray:
    """The words as uint32[ROOT_WORDS], the form stored in checkpoints."""
    return np.asarray(self.words, dtype=np.uint32)

  @classmethod
  def from_array(cls, array, public: bool) -> "SecretRoot":
    words = np.asarray(array, dtype=np.uint32).reshape(-1)
    if words.shape != (ROOT_WORDS,):
      raise ValueError(f"a secret root has {ROOT_WORDS} words, got {words.shape}")
    return cls(tuple(int(w) for w in words), public=public)

  def _state(self, domain: int, purpose: str, index: tuple, words: int) -> np.ndarray:
    # The domain (JAX key or numpy generator) and the number of indices are hashed in:
    # SeedSequence ignores trailing zeros, so [.., purpose] and [.., purpose, 0] would
    # otherwise coincide.
    entropy = (list(self.words) + [domain, _purpose_word(purpose), len(index)]
               + [int(i) for i in index])
    return np.random.SeedSequence(entropy).generate_state(words)

  def key(self, purpose: str, impl: str = "rbg") -> jax.Array:
    """A JAX key for `purpose` (e.g. 'noise', 'model', 'release')."""
    if impl not in _KEY_WORDS:
      raise ValueError(f"unknown PRNG implementation {impl!r}; known: {sorted(_KEY_WORDS)}")
    data = self._state(1, purpose, (), words=_KEY_WORDS[impl])
    return jax.random.wrap_key_data(jnp.asarray(data, jnp.uint32), impl=impl)

  def numpy_generator(self, purpose: str, *index: int) -> np.random.Generator:
    """A numpy generator for host-side draws (e.g. Poisson batch membership of a step)."""
    return np.random.default_rng(self._state(2, purpose, index, words=ROOT_WORDS))

  def __repr__(self) -> str:  # never print the words
    return f"SecretRoot(public={self.public})"


class StepKeys:
  """The per-step keys of a run: {'model', 'noise'} for step t, both from the root.

  'noise' feeds the mechanisms' Gaussian noise; 'model' everything else random in a
  step (latents, fake labels, a discriminator choice, microbatch ids). Both are secret.
  """

  def __init__(self, root: SecretRoot, impl: str = "rbg"):
    self._model = root.key("model", impl)
    self._noise = root.key("noise", impl)

  def __call__(self, step: int) -> dict:
    return _fold(self._model, self._noise, step)


@jax.jit
def _fold(model, noise, step):
  return {"model": jax.random.fold_in(model, step), "noise": jax.random.fold_in(noise, step)}
