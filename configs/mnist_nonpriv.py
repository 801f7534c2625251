"""Non-private GAN on MNIST (same model and Poisson sampling): upstream mnist-nonpriv.yaml.

Sampling: Poisson (as upstream's non-private runs), no privacy accounting.

Presets:
  paper  upstream exactly: 45,000 D steps, n_D = 1, bsz 128, no clipping or noise.
  cpu    about 30 minutes on a 2-core CPU; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dpgan

# The cpu preset: CPU_NONPRIVATE of configs/defaults/dpgan.py.
CPU = dpgan.CPU_NONPRIVATE


def get_config(preset: str | None = None):
  paper = dpgan.paper_config(
      "mnist", batch_size=128, num_steps=45_000, d_steps_per_g_step=1, noise_multiplier=None,
      checkpoint_every=5000)
  return dpgan.get(paper, preset, "configs/mnist_nonpriv.py", CPU)
