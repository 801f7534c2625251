"""CSL-GAN on MNIST, is mode: immediate sensitivity (cslgan.md §3.4).

NOT formally DP: the noise scale is computed from the private batch. The epsilon this
configuration prints is the nominal DP-SGD value and is marked "approximate, not
formally DP" everywhere (ledger, --mode=privacy, logs). An experimental baseline only.

Presets: paper (MNIST defaults, sigma 5, global IS, 100 epochs), cpu (first 1,000
images, 3,000 steps, sigma calibrated to a nominal epsilon of 10), smoke (tests). Per-parameter IS: --config.privacy.imm_sens_per_param=True.
"""

from configs.defaults import cslgan

CPU = cslgan.MNIST_CPU


def get_config(preset: str | None = None):
  c = cslgan.mnist_config()
  c.privacy.mode = "is"
  return cslgan.with_preset(c, preset, "cslgan_mnist_is", CPU)
