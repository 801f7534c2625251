"""DP-GAN on MNIST at epsilon 10 with n_D = 50: upstream mnist-eps10-50dsteps.yaml.

The headline configuration (`python main.py --config=configs/mnist_eps10.py`).
Sampling: Poisson with q = 1/469 (bsz 128), as performed and as accounted.

Presets:
  paper  upstream exactly: 450,000 D steps, sigma 1.0, C 1, delta 1e-5 -> epsilon 9.963
         (RDP, Opacus orders). About 8 h on a V100 upstream.
  cpu    about 30 minutes on a 2-core CPU at the same budget epsilon <= 10; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: CPU_FIXED_ND of configs/defaults/dpgan.py.
CPU = dpgan.CPU_FIXED_ND


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "mnist", batch_size=128, num_steps=450_000, d_steps_per_g_step=50, noise_multiplier=1.0,
      delta=1e-05, target_epsilon=10.0, checkpoint_every=50_000)
  return dpgan.get(paper, preset, "configs/mnist_eps10.py", CPU)
