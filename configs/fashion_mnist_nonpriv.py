"""Non-private GAN on Fashion-MNIST: upstream fashionmnist-nonpriv.yaml.

Sampling: Poisson (as upstream's non-private runs), no privacy accounting.

Presets:
  paper  upstream exactly: 45,000 D steps, n_D = 1, bsz 128, no clipping or noise.
  cpu    about 30 minutes on a 2-core CPU; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: fewer steps and a narrower D (no privacy to re-calibrate).
# Cost, from the measured mnist_eps10 cpu run (3,000 D + 600 G steps in 29.8 min on
# the 2-core CPU: about 0.34 s per D step and 1.3 s per G step): with
# n_D = 1 every D step is followed by a G step, so 1,000 D steps take about
# 27 minutes (less: a non-private D step does no per-example work).
CPU = {
    "train.num_steps": 1_000,
    "dpgan.d_width": 32,
    "train.checkpoint_every": 500,
    "train.log_every": 100,
    "train.sample_every": 500,
}


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "fashion_mnist", batch_size=128, num_steps=45_000, d_steps_per_g_step=1,
      noise_multiplier=None, checkpoint_every=5000)
  return dpgan.get(paper, preset, "configs/fashion_mnist_nonpriv.py", CPU)
