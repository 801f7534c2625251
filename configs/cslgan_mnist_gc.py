"""CSL-GAN on MNIST, gc mode (DP-SGD on D): upstream's MNIST defaults (cslgan.md §4.1).

Vanilla fully connected GAN, unconditional, B = 600 (q = 600/60000), sigma 5, C 4,
split clipping, delta 1e-5, 100 epochs (10,000 D steps) -> epsilon 0.81 (dp-accounting
RDP; upstream's Opacus-0.14 classic conversion prints about 0.99).

Presets:
  paper  the defaults above.
  cpu    a 2-core CPU run on the first 1,000 training images (the audit's members):
         B = 100 (q = 0.1), 3,000 D steps, sigma calibrated to epsilon = 10.
  smoke  a few seconds, for tests.
Non-private variant: --config.privacy.enabled=False.
"""

from configs.defaults import cslgan

CPU = cslgan.MNIST_CPU


def get_config(preset: str | None = None):
  return cslgan.with_preset(cslgan.mnist_config(), preset, "cslgan_mnist_gc", CPU)
