"""DP-GAN on CelebA 32x32 (label: Male) at epsilon 10 with adaptive n_D: upstream
celeba-eps10-adaptive.yaml.

Sampling: Poisson, as performed and as accounted.

Presets:
  paper  upstream exactly: 385,000 D steps, bsz 2048 (q = 1/90, N = 182,637), sigma 4.0, delta 1e-6
         -> epsilon 9.984; DC32Small; physical chunks of <= 800 examples.
  cpu    about 30 minutes on a 2-core CPU within the same budget epsilon <= 10; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: CPU_ADAPTIVE of configs/defaults/dpgan.py.
CPU = dpgan.CPU_ADAPTIVE


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "celeb_a", batch_size=2048, num_steps=385_000, d_steps_per_g_step=1,
      noise_multiplier=4.0, delta=1e-06, target_epsilon=10.0, adaptive=True, ds_threshold=0.6,
      checkpoint_every=35_000)
  return dpgan.get(paper, preset, "configs/celeba_eps10_adaptive.py", CPU)
