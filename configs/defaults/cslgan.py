"""CSL-GAN configurations (docs/methods/cslgan.md §4) and presets paper / cpu / smoke.

Light on purpose (no JAX import): config files import it at flag-parsing time.
"""

import ml_collections
from ml_collections import config_dict

from configs.defaults.base import apply_preset, base_config, smoke_eval

CELEBA_PER_LAYER = (1000.0, 200.0, 1000.0, 100.0, 1000.0, 100.0, 1000.0, 5.0, 2500.0)
CELEBA_IS_SCALING = (20.0, 2.0, 15.0, 1.5, 10.0, 1.5, 10.0, 1.0, 30.0)


def mnist_config() -> ml_collections.ConfigDict:
  """§4.1's MNIST defaults: Vanilla GAN, B = 600, sigma 5, C 4, delta 1e-5, 100 epochs."""
  c = base_config()
  c.method = "cslgan"
  c.data.name = "mnist"
  c.data.sampling = "poisson"  # or 'shuffle' (upstream; accounting then assumes Poisson)
  c.data.num_train_subset = config_dict.placeholder(int)  # train on the first n examples

  g = c.cslgan = ml_collections.ConfigDict()
  g.model = "vanilla"  # or 'resnet' (DeepConvResNet)
  g.conditional_arch = "none"  # 'none', 'CGAN', 'ACGAN', 'WCGAN'
  g.loss = "bce"  # 'bce' (Vanilla) or 'wgan'
  g.aux_loss_type = "cross_entropy"  # or 'wasserstein'
  g.aux_loss_scalar = 1.0
  g.d_fake_aux_loss = True
  g.aux_penalty = True  # forced off for WCGAN
  g.penalty = "none"  # 'none', 'wgan-gp', 'wgan-gp-1'
  g.penalty_source = "auto"  # 'auto', 'public', 'mean_samples', 'private' (non-DP only)
  g.label_mode = "concat"  # G's label mode: 'concat' or 'embed' (resnet only)
  g.latent_dim = 100
  g.hidden = 128
  g.width_divisor = 1  # resnet channel widths / this (cpu and smoke presets)
  g.g_lr = 2e-4
  g.d_lr = 2e-4
  g.beta1 = 0.9
  g.beta2 = 0.999
  g.weight_decay = 0.0
  g.n_d_steps = 1
  g.train_d_until_threshold = config_dict.placeholder(float)  # None: 1e10, or -1 (resnet + DP)
  g.public_set_size = 0  # the first n test images, public
  g.num_mean_samples = 0
  g.mean_sample_size = 5000
  g.mean_sample_noise_std = 0.22
  # Smallest class size assumed by the conditional mean-sample rate (None: known for the
  # full MNIST split, else required); the run checks the data against it.
  g.mean_sample_min_class_size = config_dict.placeholder(int)

  p = c.privacy
  p.enabled = True
  p.mode = "gc"  # 'gc' (DP-SGD) or 'is' (immediate sensitivity: approximate, NOT formally DP)
  p.noise_multiplier = 5.0
  p.clip_norm = 4.0
  p.delta = 1e-5
  p.target_epsilon = 1.0  # a budget the 100 epochs fit (epsilon 0.81); upstream has none
  p.clipping_strategy = "ghost"  # exact (tested = 'vmap'), ~80x faster on the Vanilla D on CPU
  p.grad_clip_split = True
  p.grad_clip_mode = "standard"  # 'standard', 'constant-pl', 'adaptive', 'adaptive-pl'
  p.clipping_per_layer = ()  # constant-pl bounds in D's PyTorch order; () = all ones
  p.adaptive_scalar = 1.5
  p.adaptive_stat = "mean"  # or 'max'
  p.imm_sens_per_param = False
  p.imm_sens_scaling_mode = "standard"  # or 'constant-pl'
  p.imm_sens_scaling_vec = ()

  c.train.batch_size = 600
  c.train.num_steps = 10_000  # 100 epochs of 100 steps (q = 600/60000)
  c.train.seed = 42  # upstream's weights seed
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.sample_every = 1_000

  c.audit = ml_collections.ConfigDict()
  c.audit.score = "auto"  # 'auto' (aux confidence if ACGAN, else critic), 'aux', 'critic'
  c.audit.num_members = 100
  c.audit.num_nonmembers = 900
  c.audit.draws = 10_000
  c.audit.seed = 0
  c.audit.max_pool = 20_000  # score at most this many members / non-members

  c.eval.metrics = ("fid_lenet", "acc_cnn")
  return c


def celeba_config(image_size: int = 64) -> ml_collections.ConfigDict:
  """§4.1's CelebA defaults: DeepConvResNet WGAN-GP, B = 128, sigma 0.5, C 200, delta 1e-6."""
  c = mnist_config()
  c.data.name = "celeb_a"
  c.data.image_size = image_size
  g = c.cslgan
  g.model = "resnet"
  g.loss = "wgan"
  g.aux_loss_type = "wasserstein"
  g.penalty = "wgan-gp"
  g.latent_dim = 128
  g.g_lr = 1e-4
  g.d_lr = 1e-4
  g.beta1 = 0.0
  g.beta2 = 0.9
  g.n_d_steps = 5
  g.num_mean_samples = 32  # the penalty's "real" data (README example)
  g.mean_sample_size = 1000
  g.mean_sample_noise_std = 0.12
  p = c.privacy
  p.noise_multiplier = 0.5
  p.clip_norm = 200.0
  p.delta = 1e-6
  p.target_epsilon = 10.0  # 10 epochs + 32 mean samples: epsilon 6.73
  p.clipping_per_layer = CELEBA_PER_LAYER
  p.imm_sens_scaling_vec = CELEBA_IS_SCALING
  c.train.batch_size = 128
  c.train.num_steps = 14_270  # 10 epochs of ceil(182637/128) steps
  c.train.checkpoint_every = 1_427
  c.eval.metrics = ("fid_inception",)
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds of training for tests: a small subset, tiny widths, a handful of steps."""
  c.data.num_train_subset = 256
  c.cslgan.hidden = 16
  c.cslgan.latent_dim = 8
  c.cslgan.width_divisor = 32
  c.cslgan.n_d_steps = 1
  if c.cslgan.num_mean_samples:
    c.cslgan.num_mean_samples = 1
    c.cslgan.mean_sample_size = 10
    c.cslgan.mean_sample_noise_std = 5.0  # keeps the tiny smoke budget (size 10) small
  if c.cslgan.public_set_size:
    c.cslgan.public_set_size = 64
  c.train.batch_size = 32
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.sample_every = 4
  c.train.progress_every_secs = 1e9
  c.privacy.target_epsilon = 10.0
  c.privacy.noise_multiplier = max(c.privacy.noise_multiplier or 1.0, 1.0)
  c.privacy.delta = 1e-5 if c.privacy.delta > 1e-5 else c.privacy.delta
  c.audit.draws = 200
  c.eval.cnn_epochs = 1
  return smoke_eval(c)


# The cpu preset of the MNIST configs: the first 1,000 training images (the audit's
# members), B = 100 (q = 0.1), 3,000 D steps, sigma calibrated to epsilon 10.
MNIST_CPU = {
    "data.num_train_subset": 1_000,
    "train.batch_size": 100,
    "train.num_steps": 3_000,
    "privacy.noise_multiplier": None,
    "privacy.target_epsilon": 10.0,
    "train.checkpoint_every": 1_000,
    "train.sample_every": 1_000,
    "train.log_every": 250,
    # Upstream's beta1 = 0.9 mode-collapses G here (one image for every z and label);
    # 0.5 gives diverse digits (README, CSL-GAN section).
    "cslgan.beta1": 0.5,
}


def with_preset(c: ml_collections.ConfigDict, preset: str | None, name: str,
                cpu: dict) -> ml_collections.ConfigDict:
  if c.cslgan.conditional_arch == "none":
    # An unconditional G has no labels: a classifier trained on its samples would learn
    # random labels (measured: acc_cnn 9.8 % for cslgan_mnist_gc:cpu, FID 313.7).
    c.eval.metrics = tuple(m for m in c.eval.metrics if not m.startswith("acc_"))
  return apply_preset(preset, f"configs/{name}.py", c, smoke, cpu)
