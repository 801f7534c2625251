"""The project's logger: progress lines on stderr, library chatter kept out.

Orbax, clu and TensorFlow log through absl (INFO on every save, WARNING for every
read-only checkpoint manager); absl is set to ERROR so the progress lines stay
readable. `setup(verbose=True)` shows everything.
"""

import logging
import sys

LOGGER_NAME = "dpgen_jax"


def get_logger() -> logging.Logger:
  return logging.getLogger(LOGGER_NAME)


def setup(verbose: bool = False) -> logging.Logger:
  """Routes dpgen_jax's messages to stderr at INFO; absl-logging libraries at ERROR."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)
  logger = get_logger()
  if not logger.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  return logger
