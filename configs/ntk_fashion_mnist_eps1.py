"""DP-NTK on Fashion-MNIST at epsilon 1 (delta 1e-5): one private release of a
class-conditional mean embedding, then generator training at no further privacy cost.

Presets: paper (the published settings), cpu (this library's choice for the CPU, see
CPU), smoke (seconds, for tests). Spec: docs/methods/dp_ntk.md.
"""

from configs.defaults import embedding

CPU = embedding.NTK_CPU


def get_config(preset: str | None = None):
  return embedding.get("dp_ntk", "fashion_mnist", 1, preset, CPU)
