"""Test-wide settings.

XLA's CPU backend spends most of a small test's time optimising generated code;
level 0 cuts compilation 3-5x here. It changes how fast compiled code runs, not what
it computes (the suite's tolerances allow for fusion-order rounding). Set before JAX
creates its backend; a user's own XLA_FLAGS are kept.
"""

import os

_FLAG = "--xla_backend_optimization_level=0"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

# Tests build the same small models many times (each training run re-jits its step);
# a per-session persistent compilation cache lets repeats skip XLA compilation.
import tempfile  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("DPGEN_TEST_JAX_CACHE") or tempfile.mkdtemp(prefix="jaxcache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
