"""DP-GAN on MNIST at epsilon 1 with n_D = 200: upstream mnist-eps1-200dsteps.yaml.

Sampling: Poisson, as performed and as accounted.

Presets:
  paper  upstream exactly: 325,000 D steps, bsz 128 (q = 1/469), sigma 5.0, delta 1e-5 -> epsilon 0.994.
  cpu    about 30 minutes on a 2-core CPU within the same budget epsilon <= 1; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: CPU_FIXED_ND of configs/defaults/dpgan.py.
CPU = dpgan.CPU_FIXED_ND


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "mnist", batch_size=128, num_steps=325_000, d_steps_per_g_step=200, noise_multiplier=5.0,
      delta=1e-05, target_epsilon=1.0, checkpoint_every=25_000)
  return dpgan.get(paper, preset, "configs/mnist_eps1.py", CPU)
