"""GS-WGAN on Fashion-MNIST at epsilon 10 (upstream DingfanChen/GS-WGAN, source/config.py).

`python main.py --config=configs/gswgan_fashion_mnist_eps10.py --workdir=DIR` pretrains the
discriminators (resumable, saved in DIR/pretrained) and then trains the generator;
`--config.gswgan.stage=pretrain` / `=main` run the two stages as separate commands.

Presets:
  paper  upstream: K = 1000 discriminators on 60-image shards, 2001 pretraining
         iterations each, 20,000 generator iterations of B = 32, sigma 1.07, C 1,
         delta 1e-5 -> epsilon 9.243 (dp-accounting RDP, integer orders 2..500, replace-
         one); upstream reports 9.9926, the same RDP curve with the classic conversion.
         Under the conservative accounting (gswgan.accounting='conservative') the same
         run has epsilon ~3e5 (docs/methods/gswgan.md §3.3).
  cpu    about 30 minutes on a 2-core CPU, pretraining included, epsilon 9.999; see CPU.
  smoke  seconds, for tests.
"""

from dpgen_jax.methods import gswgan_config

# The cpu preset (about 20-30 minutes here, pretraining included): K = 200
# discriminators (300-image shards), 8 pretraining iterations each, one at a time
# (vmapping does not speed up XLA:CPU, experiments/bench_gswgan_pretrain.py); a ResNet
# generator of width C = 16 and a critic of width 8 with a 4x learning rate, since each
# critic gets ~60 updates instead of ~10,000; 800 generator iterations of B = 32.
# sigma = 1.008 is the smallest (to 1e-3) with epsilon <= 10 under the upstream
# accounting: epsilon 9.999 (dp-accounting RDP, integer orders 2..500, order 3); the
# classic conversion gives 10.85 and the conservative accounting 1.7e4.
CPU = {
    "gswgan.num_discriminators": 200,
    "gswgan.pretrain_iterations": 8,
    "gswgan.pretrain_chunk": 1,
    "gswgan.pretrain_log_every": 0,
    "gswgan.model_dim": 4,
    "gswgan.d_model_dim": 8,
    "gswgan.d_lr": 4e-4,
    "privacy.noise_multiplier": 1.008,
    "train.num_steps": 800,
    "train.log_every": 50,
    "train.sample_every": 200,
    "train.checkpoint_every": 200,
    "eval.metrics": ("fid_lenet", "acc_cnn", "acc_logreg", "acc_mlp"),
}


def get_config(preset: str | None = None):
  return gswgan_config.get("fashion_mnist", preset, CPU)
