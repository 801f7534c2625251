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

# The cpu preset: gswgan_config.CPU_PRESET (shared by the MNIST and Fashion-MNIST configs).
CPU = gswgan_config.CPU_PRESET


def get_config(preset: str | None = None):
  return gswgan_config.get("fashion_mnist", preset, CPU)
