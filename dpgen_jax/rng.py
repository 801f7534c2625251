"""PRNG keys of the project.

Keys use JAX's 'rbg' implementation by default (config.train.prng_impl): XLA's
RngBitGenerator for the random bits, threefry for split/fold_in. On this project's
models it compiles several times faster than the default threefry on CPU (a DCGAN
init: ~5 s instead of ~30 s) and is the faster choice on TPU as well. Its bits may
differ across backends and shardings, which only matters for bit-exact replays on
different hardware; a resumed run on the same hardware is exact.

Keys from train.seed serve public randomness only (parameter initialisation, the latents
of sample grids). Everything a step draws comes from the run's secret root
(privacy/randomness.py).
"""

import jax

DEFAULT_IMPL = "rbg"


def make_key(seed: int, impl: str = DEFAULT_IMPL) -> jax.Array:
  """A typed key from an integer seed."""
  return jax.random.key(seed, impl=impl)
