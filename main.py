"""dpgen-jax entry point: parses flags and dispatches; the work happens in dpgen_jax.

  python main.py --config=configs/mnist_eps10.py --workdir=runs/mnist_eps10
  python main.py --config=configs/mnist_eps10.py --workdir=runs/mnist_eps10 --mode=eval
  python main.py --config=configs/mnist_eps10.py --mode=privacy
  python main.py --config=configs/mnist_eps10.py:cpu --config.train.num_steps=100 ...
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dpgen_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Configuration file (configs/NAME.py[:PRESET]); override fields with "
    "--config.section.key=value.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, events, samples, privacy.json.")
flags.DEFINE_enum("mode", "train", cli.MODES, "What to do with the config.")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  config = FLAGS.config
  try:
    cli.apply_unset(config)
  except cli.errors.UserError as e:
    cli.fail(str(e))
  sys.exit(cli.run(FLAGS.mode, config, FLAGS.workdir))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run_app(app, main)
