"""DP-GAN on MNIST at epsilon 10 with n_D = 50: upstream mnist-eps10-50dsteps.yaml.

The headline configuration (`python main.py --config=configs/mnist_eps10.py`).
Sampling: Poisson with q = 1/469 (bsz 128), as performed and as accounted.

Presets:
  paper  upstream exactly: 450,000 D steps, sigma 1.0, C 1, delta 1e-5 -> epsilon 9.963
         (RDP, Opacus orders). About 8 h on a V100 upstream.
  cpu    about 30 minutes on a 2-core CPU at the same budget epsilon <= 10; see CPU.
  smoke  a few seconds, for tests.
"""

from dpgen_jax.methods import dpgan_config

# The cpu preset: fewer D steps, so sigma is re-calibrated from target_epsilon = 10.
CPU = {
    "train.num_steps": 3_000,
    "privacy.noise_multiplier": None,
    "dpgan.d_steps_per_g_step": 5,
    "dpgan.d_width": 32,
    "train.checkpoint_every": 500,
    "train.log_every": 100,
    "train.sample_every": 500,
}


def get_config(preset: str | None = None):
  return dpgan_config.get("mnist_eps10", preset, CPU)
