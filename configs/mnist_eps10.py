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

# The cpu preset: fewer D steps, so sigma is re-calibrated from target_epsilon = 10
# (3,000 steps at q = 1/469 -> sigma 0.462, epsilon 9.998 RDP / 8.31 PLD), n_D = 5 and a
# D of width 32 (G unchanged, width 128). Cost measured on the 2-core CPU with ghost
# clipping and the generator's ScatterConvTranspose (process CPU time, load-independent):
# D step 0.48 s, G step 1.83 s -> 0.84 CPU-s per D step, 2,500 CPU-s in all: 21 minutes
# of wall time if XLA keeps both cores busy, 42 if one; about 30 on an idle machine.
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
  paper = dpgan.paper_config(
      "mnist", batch_size=128, num_steps=450_000, d_steps_per_g_step=50, noise_multiplier=1.0,
      delta=1e-05, target_epsilon=10.0, checkpoint_every=50_000)
  return dpgan.get(paper, preset, "configs/mnist_eps10.py", CPU)
