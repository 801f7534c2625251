"""DP-GAN on MNIST at epsilon 10 with adaptive n_D: upstream mnist-eps10-adaptive.yaml
(identical to upstream's example.yaml).

Sampling: Poisson, as performed and as accounted.

Presets:
  paper  upstream exactly: 174,000 D steps, bsz 512 (q = 1/118), sigma 2.0, delta 1e-5 -> epsilon 9.995;
         n_D starts at 1 and climbs the ladder when D's fake accuracy EMA <= 0.60.
  cpu    about 30 minutes on a 2-core CPU within the same budget epsilon <= 10; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: CPU_ADAPTIVE of configs/defaults/dpgan.py.
CPU = dpgan.CPU_ADAPTIVE


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "mnist", batch_size=512, num_steps=174_000, d_steps_per_g_step=1, noise_multiplier=2.0,
      delta=1e-05, target_epsilon=10.0, adaptive=True, ds_threshold=0.6,
      checkpoint_every=29_000)
  return dpgan.get(paper, preset, "configs/mnist_eps10_adaptive.py", CPU)
