"""methods/mean_embedding.py with both feature maps: feature norms and sensitivity on
adversarial records, the blockwise loss, the release, generator training, resumption,
--mode=generate and config mistakes."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax import cli, rng
from dpgen_jax.data import load_dataset
from dpgen_jax.methods import dp_merf, dp_ntk, mean_embedding
from dpgen_jax.privacy import randomness
from dpgen_jax.training import loop
from tests import helpers


def adversarial_records(d=784, seed=0):
  """Inputs a worst case could pick: constant images, extremes, noise, huge values."""
  r = np.random.default_rng(seed)
  rows = [np.zeros(d), np.ones(d), np.full(d, 0.5), r.uniform(size=d),
          (r.uniform(size=d) > 0.5).astype(float), r.normal(size=d) * 100.0,
          np.eye(d)[0], -np.ones(d) * 3.0]
  return jnp.asarray(np.stack(rows), jnp.float32)


FEATURES = {
    "merf": lambda: dp_merf.RandomFourierFeatures(784, 2000, 105.0, seed=1),
    "ntk": lambda: dp_ntk.NTKFeatures(784, 64, 10, seed=1),
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_one_record_moves_the_sum_by_at_most_one(name):
  """Adding a record adds psi(x) onehot(y)^T to the sum: Frobenius norm <= 1 for every
  input, so the release's sensitivity is 1/n (add/remove) or 2/n (replace-one)."""
  features = FEATURES[name]()
  x = adversarial_records()
  onehot = jax.nn.one_hot(jnp.arange(len(x)) % 10, 10)
  base_x = jnp.asarray(np.random.default_rng(5).uniform(size=(30, 784)), jnp.float32)
  base_y = jax.nn.one_hot(jnp.arange(30) % 10, 10)
  base = features.data_sum(base_x, base_y)
  for i in range(len(x)):
    with_one = features.data_sum(jnp.concatenate([base_x, x[i:i + 1]]),
                                 jnp.concatenate([base_y, onehot[i:i + 1]]))
    moved = np.sqrt(sum(float(jnp.sum(jnp.square(a - b)))
                        for a, b in zip(jax.tree.leaves(with_one), jax.tree.leaves(base))))
    assert moved <= 1.0 + 1e-5, (name, i, moved)
    assert moved >= 1.0 - 1e-3  # normalised features: the bound is attained
  # Replacing a record: two unit vectors differ by at most 2.
  a = features.data_sum(x[:1], onehot[:1])
  b = features.data_sum(x[5:6], onehot[1:2])
  assert np.sqrt(sum(float(jnp.sum(jnp.square(p - q))) for p, q in
                     zip(jax.tree.leaves(a), jax.tree.leaves(b)))) <= 2.0 + 1e-5


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_blockwise_loss_equals_the_explicit_embedding_distance(name):
  """The loss the generator minimises is ||target - (1/B) sum psi(x) y^T||^2; DP-NTK's
  version uses inner products only and must agree with the materialised features."""
  features = FEATURES[name]()
  r = np.random.default_rng(1)
  target = jax.tree.map(lambda z: jnp.asarray(r.normal(size=z.shape) * 1e-2, jnp.float32),
                        features.zeros(10))
  x = jnp.asarray(r.uniform(size=(10, 3, 784)), jnp.float32)  # 3 per class
  y = jnp.repeat(jnp.arange(10), 3)
  explicit = jax.tree.map(lambda s: s / 30.0,
                          features.data_sum(x.reshape(30, 784), jax.nn.one_hot(y, 10)))
  want = sum(float(jnp.sum(jnp.square(t - e)))
             for t, e in zip(jax.tree.leaves(target), jax.tree.leaves(explicit)))
  assert float(features.loss(target, x)) == pytest.approx(want, rel=1e-4)


def _digits(config_name, preset="smoke", **overrides):
  c = helpers.config(config_name, preset, **{"data.name": "digits", "data.image_size": 28})
  for dotted, value in overrides.items():
    section, key = dotted.split(".")
    c[section][key] = value
  return c


def test_release_is_charged_once_and_resume_neither_recharges_nor_rereleases(tmp_path):
  workdir = str(tmp_path)
  loop.train(_digits("merf_mnist_eps1", **{"train.num_steps": 3}), workdir)
  first = json.load(open(os.path.join(workdir, "privacy.json")))
  loop.train(_digits("merf_mnist_eps1", **{"train.num_steps": 6}), workdir)
  ledger = json.load(open(os.path.join(workdir, "privacy.json")))
  one_time = [s for s in ledger["segments"] if s.get("one_time")]
  assert len(one_time) == 1 and one_time[0]["count"] == 1
  assert ledger["steps"] == 6 and ledger["epsilon"] == pytest.approx(first["epsilon"])
  assert ledger["epsilon"] == pytest.approx(1.0, abs=1e-3)
  helpers.assert_only_public_tags(workdir, dp_merf.DPMERF)


def test_generator_training_reduces_the_embedding_distance(tmp_path):
  c = _digits("merf_mnist_eps10", **{"train.num_steps": 150, "train.batch_size": 200,
                                     "dp_merf.num_features": 2000})
  dataset = load_dataset(c.data)
  method, state, _ = helpers.started(c, dataset, tmp_path)
  keys = randomness.StepKeys(randomness.SecretRoot.from_entropy())
  labels = np.arange(1000) % 10

  def distance(s):
    x = np.asarray(method.sample(s, rng.make_key(9), jnp.asarray(labels)))
    return mean_embedding.embedding_distance(method.features, s.embedding, x, labels, 10)

  before = distance(state)
  for t in range(150):
    state, metrics = method.train_step(state, None, keys(t))
  after = distance(state)
  assert after < 0.5 * before, (before, after)


def test_generate_mode_writes_a_balanced_uint8_dataset_with_its_epsilon(tmp_path, capsys):
  workdir = str(tmp_path)
  c = _digits("merf_mnist_eps1", **{"train.num_steps": 3, "generate.num_samples": 125})
  assert cli.run("train", c, workdir) == 0
  capsys.readouterr()
  assert cli.run("generate", c, workdir) == 0
  printed = json.loads(capsys.readouterr().out)
  data = np.load(os.path.join(workdir, "synthetic", "step_00000003.npz"))
  assert data["x"].dtype == np.uint8 and data["x"].shape == (125, 28, 28, 1)
  assert data["y"].dtype == np.int64 and np.bincount(data["y"]).tolist() == [13] * 5 + [12] * 5
  meta = json.load(open(os.path.join(workdir, "synthetic", "step_00000003.json")))
  assert meta == printed
  assert meta["epsilon"] == pytest.approx(1.0, abs=1e-3) == float(data["epsilon"])
  assert meta["delta"] == 1e-5 and meta["step"] == 3 == int(data["step"])


def test_generate_without_a_trained_checkpoint_is_one_clear_error(tmp_path, capsys):
  assert cli.run("generate", _digits("merf_mnist_eps1"), str(tmp_path / "none")) == 2
  assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    ({"dp_merf.num_features": 7}, "positive even number"),
    ({"dp_merf.generator": "resnet"}, "dp_merf.generator must be one of"),
    ({"train.batch_size": 25}, "multiple of the 10 classes"),
    ({"train.num_steps": None}, "train.num_steps (generator steps) must be set"),
    ({"privacy.neighboring": "replace_special"}, "privacy.neighboring must be one of"),
])
def test_user_mistakes_are_one_config_error(overrides, message, capsys):
  c = _digits("merf_mnist_eps1", **overrides)
  assert cli.run("privacy", c, None) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and message in err[0]
