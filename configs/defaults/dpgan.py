"""DP-GAN's defaults (dpgan-revisit's shared settings, docs/methods/dpgan.md §4) and presets;
each configs/<experiment>.py gives its own published values.

Light on purpose (no JAX import): config files import it at flag-parsing time.
"""

import ml_collections

from configs.defaults.base import apply_preset, base_config, smoke_eval

# dpgan.md §4: (bsz, num_d_steps, n_D, sigma, delta, adaptive, threshold, val_interval).
def paper_config(dataset: str, *, batch_size: int, num_steps: int, d_steps_per_g_step: int,
                 noise_multiplier: float | None, delta: float | None = None,
                 target_epsilon: float | None = None, adaptive: bool = False,
                 ds_threshold: float = 0.6, checkpoint_every: int) -> ml_collections.ConfigDict:
  """One upstream experiment file (dpgan.md §4), its values given by the config file;
  noise_multiplier None: non-private."""
  bsz, steps, n_d, sigma, threshold, val_interval = (
      batch_size, num_steps, d_steps_per_g_step, noise_multiplier, ds_threshold, checkpoint_every)
  c = base_config()
  c.method = "dpgan"
  c.data.name = dataset

  c.dpgan = ml_collections.ConfigDict()
  c.dpgan.d_steps_per_g_step = n_d
  c.dpgan.adaptive = adaptive
  c.dpgan.ds_grace = 200
  c.dpgan.ds_threshold = threshold
  c.dpgan.ds_beta = 0.99
  c.dpgan.g_lr = 2e-4
  c.dpgan.d_lr = 2e-4
  # Adam's betas per network (upstream: 0.5, 0.999 for both).
  c.dpgan.g_beta1 = 0.5
  c.dpgan.g_beta2 = 0.999
  c.dpgan.d_beta1 = 0.5
  c.dpgan.d_beta2 = 0.999
  c.dpgan.loss = "bce"  # 'bce' (upstream: BCE for D, non-saturating for G) or 'hinge'
  # Exponential moving average of G's parameters (0: off, as upstream). When on, the
  # average is what is sampled and released; decay min(g_ema_decay, (1 + t) / (10 + t))
  # at the t-th G step.
  c.dpgan.g_ema_decay = 0.0
  c.dpgan.num_fakes = 0  # fakes per D step and G batch; 0: round(qN), as upstream
  c.dpgan.g_batch_size = 0  # fakes per G step; 0: num_fakes' value, as upstream
  c.dpgan.g_steps_per_cycle = 1  # G steps after every n_D D steps (upstream: 1)
  c.dpgan.latent_dim = 128
  c.dpgan.g_width = 128
  c.dpgan.d_width = 128
  # How D sees the label: 'planes' (upstream: a convolution of one-hot planes),
  # 'embedding' (a learned per-class bias map, no convolution) or 'projection'
  # (Miyato & Koyama's projection head) or 'auxiliary' (AC-GAN: D does not see the label,
  # a class head does; D's loss on real rows and G's loss gain aux_weight times its
  # cross-entropy); see models/dcgan.py.
  c.dpgan.d_label = "planes"
  c.dpgan.aux_weight = 1.0  # used only with d_label = 'auxiliary' 
  # The generator's normalisation: 'none' (upstream) or 'batch' (batch statistics in
  # training and sampling, no running averages; see models/dcgan.py).
  c.dpgan.g_norm = "none"
  c.dpgan.small = True  # CelebA: DC32Small, as both upstream CelebA configs
  c.dpgan.probe_batch_size = 0  # 0: bsz, as upstream (dpgan.md §7 #7)

  c.privacy.enabled = sigma is not None
  c.privacy.noise_multiplier = sigma
  c.privacy.clip_norm = 1.0
  c.privacy.delta = delta if delta is not None else 1e-5
  c.privacy.rdp_orders = "opacus"  # Opacus 1.1.3's grid: reproduces upstream's epsilon
  c.privacy.max_physical_bsz = 800
  # Ghost clipping (privacy/ghost.py): the same clipped sum as 'vmap' (tests/privacy/
  # test_ghost.py), 2.5-9x faster in experiments/bench_dp_step.py; 'vmap' stays selectable.
  c.privacy.clipping_strategy = "ghost"
  if sigma is not None:
    c.privacy.target_epsilon = target_epsilon

  c.train.num_steps = steps
  c.train.batch_size = bsz
  c.train.seed = 0
  c.train.log_every = 500
  c.train.checkpoint_every = val_interval
  c.train.keep_checkpoints = 20  # every val_interval checkpoint, for epsilon curves
  c.train.sample_every = 1000  # display_interval

  c.eval.num_samples = 60_000
  c.eval.metrics = ("fid_lenet", "acc_cnn")
  return c


# The cpu presets (about 30 minutes on the 2-core CPU at the same budget; sigma is
# re-calibrated from privacy.target_epsilon for the shorter run), one per kind of
# experiment. Chosen by the sweeps of docs/results.md#dp-gan-recipe-sweeps (private
# choices on Fashion-MNIST, carried to MNIST unchanged; non-private ones on MNIST).
# CelebA's presets were never run here (no CelebA on the development machine).
#
# The recipe (DPImageBench's DP-GAN optimiser on the DCGAN trunk): hinge loss, Adam with
# beta1 = 0, D lr 5e-4, G lr 2e-4, an exponential moving average of G (0.999, what is
# sampled and released), the cheap label embedding in D, widths 32 for both networks.
CPU_RECIPE = {
    "dpgan.loss": "hinge",
    "dpgan.g_beta1": 0.0,
    "dpgan.d_beta1": 0.0,
    "dpgan.d_lr": 5e-4,
    "dpgan.g_lr": 2e-4,
    "dpgan.g_ema_decay": 0.999,
    "dpgan.d_label": "embedding",
    "dpgan.g_width": 32,
    "dpgan.d_width": 32,
    "dpgan.probe_batch_size": 64,
}
# Fixed n_D (mnist / fashion_mnist eps10 and eps1): few large steps, as the noise on the
# averaged gradient is sigma C / B and sigma grows slowly with B at fixed epsilon: 2,250 D
# steps at batch 1,024 (q = 1/59; epsilon 10: sigma 0.765, epsilon 1: sigma 3.37) with 256
# fakes per step, n_D = 1, C = 1. 2,250 steps: 1.41 D steps/s on the 2 idle cores of the
# development machine (experiments/bench_dp_step.py --only-end-to-end
# --end-to-end-preset=cpu), about 27 minutes; accuracy was still rising steeply at 2,000.
CPU_FIXED_ND = {
    **CPU_RECIPE,
    "train.num_steps": 2_250,
    "train.batch_size": 1_024,
    "privacy.noise_multiplier": None,
    "privacy.clip_norm": 1.0,
    "dpgan.num_fakes": 256,
    "dpgan.d_steps_per_g_step": 1,
    "train.checkpoint_every": 250,
    "train.log_every": 50,
    "train.sample_every": 250,
}
# Adaptive n_D (not re-tuned: upstream's optimiser and widths, D width 32): batch 128
# instead of 512, an adaptive grace of 20 G steps; n_D starts at 1, so 1,000 D steps take
# at most about 27 minutes (less once n_D climbs).
CPU_ADAPTIVE = {
    "train.num_steps": 1_000,
    "privacy.noise_multiplier": None,
    "dpgan.d_width": 32,
    "train.batch_size": 128,
    "dpgan.ds_grace": 20,
    "train.checkpoint_every": 500,
    "train.log_every": 100,
    "train.sample_every": 500,
}
# Non-private: the recipe at batch 128 with n_D = 1 (a G step after every D step), 9,000
# steps (non-private screen 3's best recipe run longer: 91.4 % acc_cnn (quick) against
# 82.4 % at 5,000 steps; 32 minutes on one core with the other busy).
CPU_NONPRIVATE = {
    **CPU_RECIPE,
    "train.num_steps": 9_000,
    "train.batch_size": 128,
    "train.checkpoint_every": 1_000,
    "train.log_every": 250,
    "train.sample_every": 1_000,
}


def smoke_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A few seconds of training for tests: tiny widths, a handful of steps."""
  c.dpgan.g_width = 8
  c.dpgan.d_width = 8
  c.dpgan.latent_dim = 16
  c.dpgan.d_steps_per_g_step = 1 if c.dpgan.adaptive else 2
  c.dpgan.ds_grace = 2
  c.train.batch_size = 32
  c.train.num_steps = 6
  c.train.log_every = 2
  c.train.checkpoint_every = 3
  c.train.sample_every = 3
  c.privacy.max_physical_bsz = 0
  c.eval.cnn_epochs = 2
  return smoke_eval(c)


def get(paper: ml_collections.ConfigDict, preset: str | None, config_file: str,
        cpu: dict) -> ml_collections.ConfigDict:
  """`paper` with a preset: 'paper' (upstream), 'cpu' (the `cpu` overrides), 'smoke'."""
  return apply_preset(preset, config_file, paper, smoke_config, cpu)
