"""Every config file: presets load, and --mode=privacy gives the upstream epsilon."""

import pytest

from dpgen_jax import errors, planning
from dpgen_jax.data import registry
from tests import helpers

CONFIGS = helpers.config_names()

# dpgan.md §3.2 / docs/privacy.md (accounting test vectors) (Opacus 1.1.3 analysis).
UPSTREAM_EPSILON = {
    "mnist_eps10": 9.963, "fashion_mnist_eps10": 9.963,
    "mnist_eps10_adaptive": 9.995, "fashion_mnist_eps10_adaptive": 9.995,
    "mnist_eps1": 0.994, "fashion_mnist_eps1": 0.994,
    "mnist_eps1_adaptive": 0.996, "fashion_mnist_eps1_adaptive": 0.996,
    "celeba_eps10_adaptive": 9.984,
}


def _report(config, compare_accountants=False):
  spec = registry.static_spec(config.data)
  _, plan, _ = planning.plan_for(config, spec)
  return planning.report(plan, spec.num_train, compare_accountants=compare_accountants)


def test_the_upstream_dpgan_configurations_exist():
  expected = set(UPSTREAM_EPSILON) | {"mnist_nonpriv", "fashion_mnist_nonpriv", "celeba_nonpriv"}
  assert expected <= set(CONFIGS)


@pytest.mark.parametrize("name", sorted(UPSTREAM_EPSILON))
def test_paper_preset_gives_the_upstream_epsilon(name):
  report = _report(helpers.config(name), compare_accountants=name == "mnist_eps10")
  assert report["accountant"] == "rdp"
  assert abs(report["epsilon"] - UPSTREAM_EPSILON[name]) < 0.005
  assert report["within_budget"]
  if "epsilon_pld" in report:
    assert report["epsilon_pld"] < report["epsilon"]  # the tighter accountant, reported too


@pytest.mark.parametrize("name", ["mnist_eps10"])
def test_pld_accountant_is_offered(name):
  c = helpers.config(name, **{"privacy.accountant": "pld"})
  report = _report(c, compare_accountants=True)
  assert report["accountant"] == "pld"
  assert report["epsilon"] < report["epsilon_rdp"]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_preset_loads_and_validates(name):
  for preset in ("paper", "cpu", "smoke"):
    report = _report(helpers.config(name, preset))
    if report["private"]:
      assert report["epsilon"] <= report["target_epsilon"]
    else:
      assert report["epsilon"] is None


@pytest.mark.parametrize("name", [n for n in CONFIGS if n in UPSTREAM_EPSILON])
def test_cpu_preset_keeps_the_paper_budget(name):
  paper, cpu = helpers.config(name), helpers.config(name, "cpu")
  assert cpu.privacy.target_epsilon == paper.privacy.target_epsilon
  assert cpu.privacy.delta == paper.privacy.delta
  report = _report(cpu)
  assert report["noise_multiplier_calibrated_for"] == paper.privacy.target_epsilon
  assert paper.privacy.target_epsilon - 0.05 < report["epsilon"] <= paper.privacy.target_epsilon


def test_unknown_preset_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="no preset 'gpu'.*paper, cpu, smoke"):
    helpers.config("mnist_eps10", "gpu")


@pytest.mark.parametrize("name", CONFIGS)
def test_classifier_accuracy_only_for_generators_that_take_labels(name):
  """acc_* trains a classifier on generated (image, label) pairs: meaningless for a G that
  ignores its labels (CSL-GAN's Vanilla GAN), required to compare with upstream otherwise."""
  for preset in ("paper", "cpu"):
    c = helpers.config(name, preset)
    accuracy = [m for m in c.eval.metrics if m.startswith("acc_")]
    if c.method == "cslgan" and c.cslgan.conditional_arch == "none":
      assert not accuracy, (name, preset, c.eval.metrics)
    elif c.data.name in ("mnist", "fashion_mnist") and c.method != "dpcgan":
      assert accuracy, (name, preset, c.eval.metrics)
