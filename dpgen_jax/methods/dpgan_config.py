"""Configurations of dpgan-revisit's 13 experiment files (dpgan.md §4), and presets.

Light on purpose (no JAX import): config files import it at flag-parsing time.
"""

import ml_collections

from dpgen_jax.config_base import apply_preset, base_config, smoke_eval

# dpgan.md §4: (bsz, num_d_steps, n_D, sigma, delta, adaptive, threshold, val_interval).
UPSTREAM = {
    "mnist_eps10": (128, 450_000, 50, 1.0, 1e-5, False, None, 50_000),
    "mnist_eps10_adaptive": (512, 174_000, 1, 2.0, 1e-5, True, 0.60, 29_000),
    "mnist_eps1": (128, 325_000, 200, 5.0, 1e-5, False, None, 25_000),
    "mnist_eps1_adaptive": (512, 165_000, 1, 14.0, 1e-5, True, 0.70, 15_000),
    "mnist_nonpriv": (128, 45_000, 1, None, None, False, None, 5_000),
    "fashion_mnist_eps10": (128, 450_000, 100, 1.0, 1e-5, False, None, 50_000),
    "fashion_mnist_eps10_adaptive": (512, 174_000, 1, 2.0, 1e-5, True, 0.60, 29_000),
    "fashion_mnist_eps1": (128, 325_000, 200, 5.0, 1e-5, False, None, 25_000),
    "fashion_mnist_eps1_adaptive": (512, 165_000, 1, 14.0, 1e-5, True, 0.70, 15_000),
    "fashion_mnist_nonpriv": (128, 45_000, 1, None, None, False, None, 5_000),
    "celeba_eps10_adaptive": (2048, 385_000, 1, 4.0, 1e-6, True, 0.60, 35_000),
    "celeba_nonpriv": (128, 45_000, 1, None, None, False, None, 5_000),
}

DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "celeba": "celeb_a"}


def paper_config(name: str) -> ml_collections.ConfigDict:
  """The upstream experiment `name` (a key of UPSTREAM), exactly as published."""
  bsz, steps, n_d, sigma, delta, adaptive, threshold, val_interval = UPSTREAM[name]
  dataset = next(v for k, v in DATASETS.items() if name.startswith(k))
  c = base_config()
  c.method = "dpgan"
  c.data.name = dataset

  c.dpgan = ml_collections.ConfigDict()
  c.dpgan.d_steps_per_g_step = n_d
  c.dpgan.adaptive = adaptive
  c.dpgan.ds_grace = 200
  c.dpgan.ds_threshold = threshold if threshold is not None else 0.6
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
  # (Miyato & Koyama's projection head); see models/dcgan.py.
  c.dpgan.d_label = "planes"
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
    c.privacy.target_epsilon = 10.0 if "eps10" in name else 1.0

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


def get(name: str, preset: str | None, cpu: dict) -> ml_collections.ConfigDict:
  """Builds `name` with a preset: 'paper' (upstream), 'cpu' (the `cpu` overrides), 'smoke'."""
  return apply_preset(preset, f"configs/{name}.py", paper_config(name), smoke_config, cpu)
