"""Fixtures shared by the evaluation tests."""

import pytest

from tests.evaluation import classifier_helpers


@pytest.fixture(scope="module")
def digits():
  """(train_x, train_y, test_x, test_y): 1400 / 397 shuffled 8x8x1 digits in [0, 1]."""
  return classifier_helpers.digits_split()
