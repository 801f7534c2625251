"""CSL-GAN on MNIST: conditional ACGAN (aux head + cross-entropy aux loss), gc mode.

Upstream's MNIST default conditional architecture (cslgan.md §1.3): the Vanilla D also
concatenates the label; D loss = real + fake + real aux + fake aux. The membership audit
scores examples by the max softmax of the aux head (Hayes et al., as upstream).

Presets:
  paper  MNIST defaults: B = 600, sigma 5, C 4, split clipping, 100 epochs -> epsilon 0.81.
  cpu    first 1,000 training images (the audit's members), B = 100 (q = 0.1), 3,000 D
         steps (300 epochs), sigma calibrated to epsilon = 10 (delta 1e-5).
         Non-private: --config.privacy.enabled=False.
  smoke  a few seconds, for tests.
Variants: --config.cslgan.conditional_arch=CGAN|WCGAN; adaptive clipping from 20
noised mean samples: --config.cslgan.num_mean_samples=20 --config.privacy.grad_clip_mode=adaptive
(their cost is added to the ledger).
"""

from configs.defaults import cslgan

CPU = cslgan.MNIST_CPU


def get_config(preset: str | None = None):
  c = cslgan.mnist_config()
  c.cslgan.conditional_arch = "ACGAN"
  return cslgan.with_preset(c, preset, "cslgan_mnist_acgan_gc", CPU)
