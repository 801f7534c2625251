"""DP-NTK on MNIST at epsilon 10 (delta 1e-5): one private release of a
class-conditional mean embedding, then generator training at no further privacy cost.

Presets: paper (the published settings), cpu (this library's choice for the CPU, see
CPU), smoke (seconds, for tests). Spec: docs/methods/dp_ntk.md.
"""

from configs.defaults import embedding

CPU = embedding.NTK_CPU


def get_config(preset: str | None = None):
  return embedding.get("dp_ntk", "mnist", 10, preset, CPU)
