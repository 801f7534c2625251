"""DP-GAN on MNIST at epsilon 1 with adaptive n_D: upstream mnist-eps1-adaptive.yaml.

Sampling: Poisson, as performed and as accounted.

Presets:
  paper  upstream exactly: 165,000 D steps, bsz 512 (q = 1/118), sigma 14.0, delta 1e-5 -> epsilon 0.996;
         adaptive threshold 0.70.
  cpu    about 30 minutes on a 2-core CPU within the same budget epsilon <= 1; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: fewer D steps with sigma re-calibrated to the same budget
# (privacy.target_epsilon = 1), a narrower D (d = 32), bsz 128 instead of 512 and
# an adaptive grace of 20 G steps. Cost, from the measured mnist_eps10 cpu run (3,000 D
# + 600 G steps in 29.8 min on the 2-core CPU: about 0.34 s per D step and 1.3 s per G
# step): n_D starts at 1, so 1,000 D steps take at most about 27 minutes (n_D never
# climbing) and less once it climbs.
CPU = {
    "train.num_steps": 1_000,
    "privacy.noise_multiplier": None,
    "dpgan.d_width": 32,
    "train.batch_size": 128,
    "dpgan.ds_grace": 20,
    "train.checkpoint_every": 500,
    "train.log_every": 100,
    "train.sample_every": 500,
}


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "mnist", batch_size=512, num_steps=165_000, d_steps_per_g_step=1, noise_multiplier=14.0,
      delta=1e-05, target_epsilon=1.0, adaptive=True, ds_threshold=0.7,
      checkpoint_every=15_000)
  return dpgan.get(paper, preset, "configs/mnist_eps1_adaptive.py", CPU)
