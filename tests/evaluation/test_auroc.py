"""Tests of the AUROC helpers and DP-CGAN's classifier protocol."""

import numpy as np
import pytest

from dpgen_jax.evaluation import auroc


_Y = np.array([0, 2, 1, 2])
_P = np.array([[0.7, 0.2, 0.1],
               [0.1, 0.3, 0.6],
               [0.3, 0.4, 0.3],
               [0.5, 0.1, 0.25]])


def test_micro_auroc_hand_example():
  # Raveled one-hot: positive scores 0.7, 0.6, 0.4, 0.25; negatives
  # 0.2 0.1 0.1 0.3 0.3 0.3 0.5 0.1. Pairs won: 8 + 8 + 7 + 4 = 27 of 4 * 8.
  assert auroc.micro_auroc(_Y, _P, 3) == pytest.approx(27 / 32)


def test_per_class_auroc_hand_example():
  # Class 2: positives 0.6, 0.25 vs negatives 0.1, 0.3 -> 3 of 4 pairs.
  assert auroc.per_class_auroc(_Y, _P, 3) == pytest.approx([1.0, 1.0, 0.75])
  assert np.isnan(auroc.per_class_auroc(_Y, _P, 4)[3])  # class 3 never occurs


def test_micro_auroc_of_classifiers(digits):
  train_x, train_y, test_x, test_y = digits
  out = auroc.micro_auroc_of_classifiers(train_x[:400], train_y[:400], test_x, test_y, 10)
  assert out["auroc_lr"] > 0.95 and out["auroc_mlp"] > 0.95
  assert len(out["per_class_lr"]) == len(out["per_class_mlp"]) == 10
