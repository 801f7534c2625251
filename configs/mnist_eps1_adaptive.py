"""DP-GAN on MNIST at epsilon 1 with adaptive n_D: upstream mnist-eps1-adaptive.yaml.

Sampling: Poisson, as performed and as accounted.

Presets:
  paper  upstream exactly: 165,000 D steps, bsz 512 (q = 1/118), sigma 14.0, delta 1e-5 -> epsilon 0.996;
         adaptive threshold 0.70.
  cpu    about 30 minutes on a 2-core CPU within the same budget epsilon <= 1; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: CPU_ADAPTIVE of configs/defaults/dpgan.py.
CPU = dpgan.CPU_ADAPTIVE


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "mnist", batch_size=512, num_steps=165_000, d_steps_per_g_step=1, noise_multiplier=14.0,
      delta=1e-05, target_epsilon=1.0, adaptive=True, ds_threshold=0.7,
      checkpoint_every=15_000)
  return dpgan.get(paper, preset, "configs/mnist_eps1_adaptive.py", CPU)
