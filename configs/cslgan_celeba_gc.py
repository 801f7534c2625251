"""CSL-GAN on CelebA: DeepConvResNet WGAN-GP, gc mode (cslgan.md §1.2, §4.1).

64x64 (CelebA_DCRN_64); the 48x48 variant: --config.data.image_size=48 and
--config.privacy.clipping_per_layer=() (its D has 7 parameter tensors). B = 128,
sigma 0.5, C 200, delta 1e-6, 10 epochs; the WGAN-GP penalty uses 32 noised mean
samples (size 1000, std 0.12), whose cost is charged to the ledger once. The
registry's CelebA is 32x32 (tensorflow-datasets): for 64x64 supply celeb_a.npz with
64x64 images in data.data_dir. G trains only when the critic gap on mean samples
exceeds 1 (upstream's forced threshold -1 for DeepConvResNet + DP).

Presets: paper (above; epsilon 6.73 incl. the mean samples), cpu (channel widths / 8,
20,000-image subset, 500 steps, sigma calibrated to epsilon 10),
smoke (tests; needs data: CelebA is not on this machine).
"""

from configs.defaults import cslgan

CPU = {
    "data.num_train_subset": 20_000,
    "cslgan.width_divisor": 8,
    "train.num_steps": 500,
    "privacy.noise_multiplier": None,  # calibrated to epsilon = 10 (delta 1e-6)
    "train.checkpoint_every": 250,
    "train.sample_every": 250,
    "train.log_every": 50,
}


def get_config(preset: str | None = None):
  return cslgan.with_preset(cslgan.celeba_config(64), preset,
                                   "cslgan_celeba_gc", CPU)
