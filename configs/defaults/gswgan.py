"""GS-WGAN configurations (docs/methods/gswgan.md §4) and their presets.

Light on purpose (no JAX import): config files import it at flag-parsing time.
"""

import ml_collections

from configs.defaults.base import apply_preset, base_config, smoke_eval

DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist"}


# The cpu preset: K = 200 discriminators (300-image shards), 8 pretraining iterations
# each, one at a time (vmapping does not speed up XLA:CPU,
# experiments/bench_gswgan_pretrain.py); a ResNet generator of width C = 16 and a critic
# of width 8 with a 4x learning rate, since each critic gets few updates; 800 generator
# iterations of B = 32, one critic trained per iteration (round robin: 4 rounds per
# critic), sigma 1.008 for epsilon 10. Per-row selection with the round-robin
# schedule costs what upstream's one-critic-per-step costs
# (experiments/bench_gswgan_selection.py).
CPU_PRESET = {
    "gswgan.num_discriminators": 200,
    "gswgan.pretrain_iterations": 8,
    "gswgan.pretrain_chunk": 1,
    "gswgan.model_dim": 4,
    "gswgan.d_model_dim": 8,
    "gswgan.d_lr": 4e-4,
    # Calibrated once for epsilon <= 10 (dp-accounting RDP, integer orders 2..500):
    # 1.00793; rounded up. Calibrating at every start would cost a minute here.
    "privacy.noise_multiplier": 1.008,
    "train.num_steps": 800,
    "train.log_every": 50,
    "train.sample_every": 200,
    "train.checkpoint_every": 200,
    "eval.metrics": ("fid_lenet", "acc_cnn", "acc_logreg", "acc_mlp"),
}


def paper_config(dataset: str) -> ml_collections.ConfigDict:
  """Upstream's single configuration (source/config.py) for `dataset`."""
  c = base_config()
  c.method = "gswgan"
  c.data.name = DATASETS[dataset]

  g = c.gswgan = ml_collections.ConfigDict()
  # 'pretrain': warm start only (resumable, saved in pretrained_dir); 'main': main
  # training from pretrained discriminators; 'both': pretraining, then main training.
  g.stage = "both"
  g.pretrained_dir = ""  # '' = WORKDIR/pretrained
  g.num_discriminators = 1000
  g.partition_seed = 1  # upstream's random_seed: one shuffle, shard i = rows 60i..60i+59
  g.pretrain_iterations = 2001  # upstream's loop: range(pretrain_iterations + 1), 2000
  g.pretrain_chunk = 50  # discriminators trained at once (vmap); upstream: jobs of 50
  g.gen_arch = "ResNet"  # 'ResNet' or 'DCGAN'
  g.model_dim = 64  # generator width (C = 4 * model_dim for ResNet)
  g.d_model_dim = 64  # upstream always 64 (the flag affects G only)
  g.z_dim = 10
  g.latent_type = "bernoulli"  # 'bernoulli' ({0,1}^z_dim, p = 0.5) or 'normal'
  g.critic_iters = 5
  g.gp_weight = 10.0  # L_gp
  g.drift_weight = 0.001  # L_epsilon
  g.g_lr = 1e-4
  g.d_lr = 1e-4
  g.beta1 = 0.5
  g.beta2 = 0.9
  g.ema_max_decay = 0.999
  # How critics are chosen (docs/methods/gswgan.md): 'per_row' (each of the B rows draws
  # its own discriminator: the B-fold subsampled composition is a bound, epsilon 9.243
  # here) or 'per_step' (upstream's code: one discriminator for all B rows; its sound
  # epsilon is about 3e5 at these settings).
  g.selection = "per_row"
  # Which critics train in a step: 'round_robin' (critics_per_step of them in a fixed
  # public order, whatever the rows draw: the condition of the privacy proof) or 'drawn'
  # (upstream: the drawn critic; no proven bound). One per step keeps upstream's amount
  # of critic training (20,000 critic rounds in all, ~20 per critic).
  g.critic_schedule = "round_robin"
  g.critics_per_step = 1
  # 'sound': charge the event of the selection that runs. 'upstream': charge the per-row
  # composition whatever the selection (upstream's published accounting; with 'per_step'
  # it is not a bound: shown with a caveat and the sound value, budget on the sound value).
  g.accounting = "sound"
  # Critics trained (and, per_row, applied) this many at a time (lax.map batch: 1 = one
  # after another, the fast form on XLA:CPU; larger = vmapped, for accelerators).
  g.critic_chunk = 1

  c.privacy.enabled = True
  c.privacy.noise_multiplier = 1.07
  c.privacy.clip_norm = 1.0  # CLIP_BOUND
  c.privacy.delta = 1e-5
  c.privacy.target_epsilon = 10.0
  c.privacy.accountant = "rdp"
  c.privacy.rdp_orders = "int500"  # autodp's integer orders, as upstream
  c.privacy.neighboring = "replace_one"  # discriminator selection without replacement

  c.train.num_steps = 20_000  # generator iterations (accounted: x batch_size compositions)
  c.train.batch_size = 32
  c.train.seed = 1
  c.train.log_every = 100  # print_step
  c.train.sample_every = 1000  # vis_step
  c.train.checkpoint_every = 5000  # save_step
  c.train.keep_checkpoints = 5

  c.eval.num_samples = 60_000
  c.eval.labels = "balanced"  # 0..9 repeated, as upstream's save_gen_data
  c.eval.metrics = ("fid_lenet", "acc_cnn", "acc_logreg", "acc_mlp", "is_lenet")
  return c


def smoke_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds of training for tests: four tiny discriminators, a tiny generator."""
  g = c.gswgan
  g.num_discriminators = 4
  g.pretrain_iterations = 2
  g.pretrain_chunk = 2
  g.model_dim = 2
  g.d_model_dim = 4
  g.critic_iters = 2
  c.train.batch_size = 8  # compiled at XLA level 0 in tests, where B = 32 ran 4x longer
  c.privacy.noise_multiplier = 8.0  # epsilon 3.3 with K = 4 after 4 steps
  c.privacy.rdp_orders = "opacus"  # integer orders to 500 cost ~15 s per mechanism
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.sample_every = 4
  c.eval.metrics = ("fid_lenet",)
  return smoke_eval(c)


def get(dataset: str, preset: str | None, cpu: dict) -> ml_collections.ConfigDict:
  """`dataset` with a preset: 'paper' (upstream), 'cpu' (the `cpu` overrides), 'smoke'."""
  return apply_preset(preset, f"configs/gswgan_{dataset}_eps10.py", paper_config(dataset),
                      smoke_config, cpu)
