"""Test-wide settings.

XLA's CPU backend spends most of a small test's time compiling: LLVM optimisation
level 0 cuts compilation 3-5x here, and the older (non-MLIR) fusion emitters halve
what remains (compiling GS-WGAN's vmapped pretraining initialisation: 41.9 s -> 6.8 s
-> 3.5 s; its iteration, at level 0: 12.1 s -> 5.4 s with the older emitters).
They change how fast compiled code runs, not what it computes (the suite's
tolerances allow for fusion-order rounding). Set before JAX creates its backend; a
user's own XLA_FLAGS are kept.
"""

import os

for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# Slow results the library caches on disk (RDP curves, the LeNet feature extractor, real
# statistics) go to one folder per test session, never to the user's ~/.cache. pytest-xdist
# workers inherit it from the controller process, which imports this file first.
import tempfile  # noqa: E402

if not os.environ.get("DPGEN_CACHE_DIR"):
  os.environ["DPGEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="dpgen-test-cache-")

# Tests build the same small models many times (each training run re-jits its step);
# a per-session persistent compilation cache lets repeats skip XLA compilation.
import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("DPGEN_TEST_JAX_CACHE") or tempfile.mkdtemp(prefix="jaxcache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
