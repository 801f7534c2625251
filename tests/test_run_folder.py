"""dpgen_jax/run_folder.py: the plan stored with a run, the stage stores, the config check."""

import json
import os

import jax
import numpy as np
import pytest

from dpgen_jax import errors
from dpgen_jax.run_folder import RunFolder, StageStore, plan_from_json, plan_to_json
from tests import helpers


@pytest.mark.parametrize("name, overrides", [
    ("gswgan_mnist_eps10", {"gswgan.selection": "per_step", "gswgan.accounting": "upstream"}),
    ("cslgan_mnist_acgan_gc", {"cslgan.num_mean_samples": 20}),
    ("merf_mnist_eps1", {}),
])
def test_the_plan_survives_json_with_its_events(name, overrides):
  """What eval, generate and audit rebuild a method from: bound events and one-time
  releases included, through JSON as written to plan.json."""
  plan = helpers.privacy_plan(helpers.config(name, **overrides))
  again = plan_from_json(json.loads(json.dumps(plan_to_json(plan), default=str)))
  assert again.step_event == plan.step_event and again.bound_event == plan.bound_event
  assert again.one_time == plan.one_time
  assert (again.noise_multiplier, again.steps, again.sampling_rate) == \
      (plan.noise_multiplier, plan.steps, plan.sampling_rate)


def test_missing_items_fill_the_gaps_between_finished_chunks(tmp_path):
  store = StageStore(str(tmp_path), {"num_discriminators": 10})
  for name in ("items_00000_00003", "items_00005_00006", "items_00006_00007.orbax-tmp-1"):
    (tmp_path / name).mkdir()
  assert store.finished() == [(0, 3), (5, 6)]  # an unfinished (tmp) chunk is not done
  assert store.missing(10, 2) == [(3, 5), (6, 8), (8, 10)]


def test_a_stage_store_saves_loads_and_refuses_another_recipe(tmp_path):
  folder = str(tmp_path / "stage")
  store = StageStore(folder, {"k": 4, "shape": (2, 3)})
  store.check_or_create()
  item = {"w": jax.ShapeDtypeStruct((2, 3), np.float32)}
  with pytest.raises(errors.UserError, match="incomplete: 0 of 4"):
    store.load(4, item)
  store.save(0, 2, {"w": np.ones((2, 2, 3), np.float32)})
  with pytest.raises(errors.UserError, match="incomplete: 2 of 4"):
    store.load(4, item)
  store.save(2, 4, {"w": 2 * np.ones((2, 2, 3), np.float32)})
  loaded = StageStore(folder, {"k": 4, "shape": [2, 3]}).load(4, item)  # tuple == list
  np.testing.assert_array_equal(loaded["w"][:, 0, 0], [1, 1, 2, 2])
  with pytest.raises(errors.ConfigError, match="holds outputs of another recipe"):
    StageStore(folder, {"k": 8, "shape": (2, 3)}).check_or_create()


def test_a_workdir_of_another_method_or_dataset_is_refused(tmp_path):
  """(Other changes to a run's config are the replay check's: tests/training.)"""
  run = RunFolder(str(tmp_path))
  run.write_config(helpers.config("mnist_eps10", "smoke"))
  run.check_config(helpers.config("mnist_eps10", "smoke"))
  with pytest.raises(errors.ConfigError, match="holds a run with method = 'dpgan'"):
    run.check_config(helpers.config("dpcgan_mnist_eps10", "smoke"))
  with pytest.raises(errors.ConfigError, match="data.name = 'mnist'"):
    run.check_config(helpers.config("fashion_mnist_eps10", "smoke"))
  assert os.path.exists(run.path("config.json"))


def test_plan_json_of_a_run_with_public_randomness_shows_no_epsilon(tmp_path):
  """privacy.reproducible: privacy.json and --mode=privacy show no epsilon; nor does the
  plan stored beside them (GS-WGAN's fields carry several)."""
  c = helpers.config("gswgan_mnist_eps10", **{"privacy.reproducible": True})
  plan = helpers.privacy_plan(c)
  assert plan.fields["epsilon_per_row"] is not None  # the plan in memory has them
  run = RunFolder(str(tmp_path))
  run.write_plan(plan)
  with open(run.path("plan.json")) as f:
    fields = json.load(f)["fields"]
  eps = {k: v for k, v in fields.items() if k.startswith("epsilon")}
  assert eps and all(v is None for v in eps.values()), eps


def test_a_run_without_plan_json_is_opened_with_the_plan_of_its_config(tmp_path):
  """Runs trained before plan.json existed stay readable by eval / generate / audit."""
  from dpgen_jax.run_folder import open_trained
  c = helpers.config("mnist_eps10", "smoke", **{"data.name": "digits", "data.image_size": 28})
  RunFolder(str(tmp_path)).write_config(c)
  _, method, _, abstract = open_trained(c, str(tmp_path))
  assert method.plan.noise_multiplier == c.privacy.noise_multiplier
  assert method.plan.steps == c.train.num_steps and abstract is not None
