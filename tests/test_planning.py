"""dpgen_jax/planning.py: the privacy plan resolved once (calibration, budget, checks),
against dp-accounting used directly and the values the configs document."""

import dataclasses

import dp_accounting
import pytest
from dp_accounting import rdp

from dpgen_jax import errors, planning
from dpgen_jax.privacy import accounting
from tests import helpers


def _rdp_epsilon(q: float, sigma: float, steps: int, orders: str, delta: float) -> float:
  """dp-accounting's RDP accountant on the Poisson-subsampled Gaussian, by hand."""
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
  acc = rdp.RdpAccountant(orders=accounting.orders_for(orders))
  return acc.compose(event).get_epsilon(delta)


def test_sigma_is_calibrated_to_the_budget_once_and_tightly():
  """mnist_eps10:cpu: 2,250 steps at q = 1/ceil(60,000 / 1,024) = 1/59 -> sigma 0.765 for
  epsilon <= 10 (the value its config file documents); 1 % less noise would exceed the
  budget."""
  c = helpers.config("mnist_eps10", "cpu")
  assert c.privacy.noise_multiplier is None and c.privacy.target_epsilon == 10.0
  plan = helpers.privacy_plan(c)
  sigma = plan.noise_multiplier
  assert sigma == pytest.approx(0.765, abs=0.001)
  assert plan.sampling_rate == pytest.approx(1 / 59) and plan.steps == 2_250
  assert _rdp_epsilon(1 / 59, sigma, 2_250, "opacus", 1e-5) <= 10.0
  assert _rdp_epsilon(1 / 59, 0.99 * sigma, 2_250, "opacus", 1e-5) > 10.0
  assert plan.notes["noise_multiplier_calibrated_for"] == 10.0
  report = planning.report(plan, 60_000, compare_accountants=False)
  assert report["within_budget"] and 9.95 < report["epsilon"] <= 10.0


def test_steps_are_calibrated_when_only_sigma_and_the_budget_are_set():
  c = helpers.config("mnist_eps10", **{"train.num_steps": None})
  plan = helpers.privacy_plan(c)
  n = plan.steps
  assert _rdp_epsilon(1 / 469, 1.0, n, "opacus", 1e-5) <= 10.0
  assert _rdp_epsilon(1 / 469, 1.0, n + 1, "opacus", 1e-5) > 10.0
  assert n > 450_000  # upstream stopped at 450,000 steps (epsilon 9.963)


def test_a_plan_over_the_budget_is_reported_as_such():
  c = helpers.config("mnist_eps10", "cpu", **{"privacy.noise_multiplier": 0.3})
  report = planning.report(helpers.privacy_plan(c), 60_000, compare_accountants=False)
  assert report["epsilon"] > 10.0 and report["within_budget"] is False


def test_the_plan_is_frozen_and_the_resolved_config_carries_its_values():
  definition, plan, resolved = planning.plan_for(
      helpers.config("mnist_eps10", "cpu"), helpers.static_spec("mnist_eps10"))
  assert definition.name == "dpgan"
  with pytest.raises(dataclasses.FrozenInstanceError):
    plan.noise_multiplier = 1.0  # type: ignore[misc]
  assert resolved.privacy.noise_multiplier == plan.noise_multiplier
  assert resolved.train.num_steps == plan.steps


def test_one_time_releases_are_charged_once_by_a_new_ledger():
  """DP-MERF spends its budget on one release: a fresh ledger already shows it."""
  plan = helpers.privacy_plan(helpers.config("merf_mnist_eps1"))
  (event, count), = plan.one_time
  assert count == 1 and isinstance(plan.step_event, dp_accounting.NoOpDpEvent)
  ledger = plan.new_ledger()
  assert ledger.steps == 0 and 0.99 < ledger.epsilon() <= 1.0


def test_non_private_plans_have_no_epsilon():
  plan = helpers.privacy_plan(helpers.config("mnist_nonpriv"))
  assert not plan.private and plan.noise_multiplier is None
  assert planning.report(plan, 60_000)["epsilon"] is None


@pytest.mark.parametrize("overrides, message", [
    ({"train.batch_size": 0}, "train.batch_size must be positive"),
    ({"train.log_every": 0}, "train.log_every must be a positive integer"),
    ({"train.batch_size": 70_000}, "larger than the dataset"),
    ({"privacy.delta": 1e-4}, r"privacy.delta = 0.0001 must be in \(0, 1/N\)"),
    ({"privacy.accountant": "moments"}, "privacy.accountant must be one of"),
    ({"privacy.clipping_strategy": "gost"}, "privacy.clipping_strategy must be one of"),
    ({"privacy.noise_multiplier": None, "privacy.target_epsilon": None},
     "no privacy.target_epsilon to calibrate it from"),
    ({"privacy.noise_multiplier": None, "train.num_steps": None},
     "Both privacy.noise_multiplier and train.num_steps are unset"),
])
def test_shared_mistakes_are_one_config_error_for_every_method(overrides, message):
  for name in ("mnist_eps10", "dpcgan_mnist_eps10", "sinkhorn_mnist_m1"):
    c = helpers.config(name, **overrides)
    with pytest.raises(errors.ConfigError, match=message):
      helpers.privacy_plan(c)
