"""DP-GAN on Fashion-MNIST at epsilon 1 with n_D = 200: upstream
fashionmnist-eps1-200dsteps.yaml.

Sampling: Poisson, as performed and as accounted.

Presets:
  paper  upstream exactly: 325,000 D steps, bsz 128 (q = 1/469), sigma 5.0, delta 1e-5 -> epsilon 0.994.
  cpu    about 30 minutes on a 2-core CPU within the same budget epsilon <= 1; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: fewer D steps with sigma re-calibrated to the same budget
# (privacy.target_epsilon = 1), a narrower D (d = 32) and n_D = 5 so that G takes
# enough steps: mnist_eps10's cpu preset with another dataset.
# Cost, from the measured mnist_eps10 cpu run (3,000 D + 600 G steps in 29.8 min on
# the 2-core CPU: about 0.34 s per D step and 1.3 s per G step): 3,000 D steps take
# about 30 minutes.
CPU = {
    "train.num_steps": 3_000,
    "privacy.noise_multiplier": None,
    "dpgan.d_width": 32,
    "dpgan.d_steps_per_g_step": 5,
    "train.checkpoint_every": 500,
    "train.log_every": 100,
    "train.sample_every": 500,
}


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "fashion_mnist", batch_size=128, num_steps=325_000, d_steps_per_g_step=200,
      noise_multiplier=5.0, delta=1e-05, target_epsilon=1.0, checkpoint_every=25_000)
  return dpgan.get(paper, preset, "configs/fashion_mnist_eps1.py", CPU)
