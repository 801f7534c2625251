"""Inception Score from the class probabilities of a domain classifier (GS-WGAN).

Reproduces GS-WGAN's `evaluation/eval_mnist_inception_score.py` (gswgan.md §5.3).
The metric `is_lenet` feeds it the softmax of the cached LeNet
(`metrics.EvalContext.lenet_proba`).
"""

from typing import Any

import numpy as np
import scipy.special

Array = Any


def inception_score(probs: Array, splits: int = 10) -> tuple[float, float]:
  """Inception Score from (N, K) class probabilities of a domain classifier.

  As GS-WGAN's `get_inception_score`: the rows are cut into `splits` consecutive
  parts [i N // splits, (i + 1) N // splits); per part IS = exp(mean_x KL(p(y|x) ||
  p_part(y))) with p_part the part's mean prediction; returns (mean, std) over the
  parts (std with ddof=0). Float64; 0 log 0 is taken as 0 (upstream would give NaN).
  Upstream's classifier is a VGG11-BN trained on real MNIST, fed 60k generated
  samples in a random order; any classifier's softmax can be passed here, but the
  score is only comparable across runs that used the same classifier.
  """
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or p.shape[0] < splits:
    raise ValueError(f"probs must be (N >= splits, K), got shape {p.shape}.")
  n = p.shape[0]
  scores = []
  for i in range(splits):
    part = p[i * n // splits:(i + 1) * n // splits]
    kl = scipy.special.rel_entr(part, part.mean(axis=0, keepdims=True)).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
