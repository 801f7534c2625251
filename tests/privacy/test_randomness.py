"""The secret root: OS entropy by default, public only when asked, and never printed."""

import jax
import numpy as np
import pytest

from dpgen_jax.data import sampling
from dpgen_jax.privacy import randomness


def _bits(key):
  return np.asarray(jax.random.key_data(key))


def test_fresh_roots_differ_and_do_not_depend_on_the_seed():
  a, b = randomness.SecretRoot.from_entropy(), randomness.SecretRoot.from_entropy()
  assert not a.public and not b.public
  assert a.words != b.words
  assert not np.array_equal(_bits(a.key("noise")), _bits(b.key("noise")))
  # What train.seed gives is a different, public root.
  for seed in range(3):
    assert randomness.SecretRoot.from_seed(seed).words not in (a.words, b.words)


def test_reproducible_root_repeats_and_is_marked_public():
  a, b = randomness.SecretRoot.for_run(5, True), randomness.SecretRoot.for_run(5, True)
  assert a == b and a.public
  np.testing.assert_array_equal(_bits(a.key("model")), _bits(b.key("model")))
  assert randomness.SecretRoot.for_run(6, True).words != a.words
  assert not randomness.SecretRoot.for_run(5, False).public


def test_purposes_and_steps_give_independent_streams():
  root = randomness.SecretRoot.from_entropy()
  assert not np.array_equal(_bits(root.key("model")), _bits(root.key("noise")))
  keys = randomness.StepKeys(root)
  k0, k1 = keys(0), keys(1)
  assert not np.array_equal(_bits(k0["noise"]), _bits(k1["noise"]))
  assert not np.array_equal(_bits(k0["model"]), _bits(k0["noise"]))
  np.testing.assert_array_equal(_bits(keys(7)["noise"]), _bits(randomness.StepKeys(root)(7)["noise"]))
  g1, g2 = root.numpy_generator("poisson", 3), root.numpy_generator("poisson", 3)
  assert g1.integers(1 << 30) == g2.integers(1 << 30)
  assert root.numpy_generator("poisson", 4).integers(1 << 62) != \
      root.numpy_generator("poisson", 3).integers(1 << 62)


def test_array_round_trip_and_repr_hides_the_words():
  root = randomness.SecretRoot.from_entropy()
  back = randomness.SecretRoot.from_array(root.to_array(), public=False)
  assert back == root
  assert root.to_array().dtype == np.uint32 and root.to_array().shape == (8,)
  assert str(root.words[0]) not in repr(root) and "public=False" in repr(root)
  with pytest.raises(ValueError, match="8 words"):
    randomness.SecretRoot.from_array(np.zeros(3, np.uint32), public=False)


def test_poisson_batches_follow_the_root_not_a_seed():
  """Two runs of one config (same train.seed) draw different batches; one root, the same."""
  a, b = randomness.SecretRoot.from_entropy(), randomness.SecretRoot.from_entropy()
  sa = sampling.PoissonSampler(10_000, 0.01, lambda t: a.numpy_generator("poisson", t))
  sb = sampling.PoissonSampler(10_000, 0.01, lambda t: b.numpy_generator("poisson", t))
  again = sampling.PoissonSampler(10_000, 0.01, lambda t: a.numpy_generator("poisson", t))
  for t in (0, 1, 5):
    da, db = sa.sample(t), sb.sample(t)
    assert set(da.indices[da.mask]) != set(db.indices[db.mask])
    np.testing.assert_array_equal(da.indices, again.sample(t).indices)
