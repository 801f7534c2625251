"""DP-Sinkhorn on CelebA 32x32 (label: Male) at epsilon 10: upstream's README command
`celeb_cond_b200_e5`, corrected as dp_sinkhorn.md §4 describes (cost squared L2, no
discriminator, delta 1e-6 as the paper).

cond_biggan generator (3,886,595 parameters), cost ||d||^2 on [image, 15 * one_hot],
blur 5 with p = 2 (Sinkhorn epsilon 25), geomloss's full debiased divergence (no extra
fakes), Poisson sampling q = 200/162,770 (the 'train' split: data.split = 'train';
DP-GAN's configs use train + validation, 182,637), C = 0.1, sigma 0.8 (noise std 0.16
per pixel), Adam 1e-5 with weight decay 1e-5. Test set: the 'validation' split.

Data: CelebA is not on these machines; prepare celeb_a_train.npz (see
dpgen_jax/data/registry.py) or let tensorflow-datasets download it when online.

Presets:
  paper  upstream's run: 464,223 steps (571 epochs, the classic-conversion run length
         for epsilon 10 at delta 1e-6), which dp-accounting reports as epsilon 9.26
         (upstream's own accounting: 10.0052).
  cpu    a 30-minute CPU budget run at the same budget epsilon <= 10; see CPU.
  smoke  a few seconds, for tests.
"""

from configs.defaults import dp_sinkhorn

# The cpu preset (never run here: no CelebA): fewer steps with sigma re-calibrated to
# the same budget, G_ch 16 instead of 64 (1/16 of the convolution FLOPs), learning rate
# 1e-4.
CPU = {
    "train.num_steps": 1_000,
    "privacy.noise_multiplier": None,
    "dp_sinkhorn.hidden_dim": 16,
    "dp_sinkhorn.lr": 1e-4,
    "train.log_every": 50,
    "train.checkpoint_every": 250,
    "train.sample_every": 250,
    "eval.num_samples": 10_000,
}


def get_config(preset: str | None = None):
  paper = dp_sinkhorn.paper_config(
      "celeb_a", split="train", batch_size=200, noise_multiplier=0.8, clip_norm=0.1,
      delta=1e-06, num_steps=464_223, mixture_fraction=None)
  return dp_sinkhorn.get(paper, preset, "configs/sinkhorn_celeba.py", CPU)
