"""The ledger: composition across segments, budget refusal, JSON round trip."""

import json
import math

import dp_accounting
import pytest

from dpgen_jax import errors
from dpgen_jax.privacy import accounting, ledger as ledger_lib


def _event(sigma=1.0, q=1 / 469):
  return accounting.poisson_gaussian_event(q, sigma)


def test_charged_steps_compose_to_the_published_epsilon():
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5, orders="opacus")
  led.charge(_event(), 450_000)
  assert led.steps == 450_000
  assert led.epsilon() == pytest.approx(9.963189329487284, rel=1e-6)


def test_plan_refuses_a_run_over_budget_before_it_starts():
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5, budget_epsilon=5.0)
  with pytest.raises(errors.PrivacyBudgetExceeded, match=r"budget .*target_epsilon = 5"):
    led.plan(_event(), 450_000)


def test_charge_refuses_the_first_step_beyond_budget():
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5, budget_epsilon=1.0)
  allowed = led.max_more_steps(_event())
  led.plan(_event(), allowed)
  led.charge(_event(), allowed)
  assert led.epsilon() <= 1.0
  with pytest.raises(errors.PrivacyBudgetExceeded, match="Refusing step"):
    led.charge(_event(), 1)
  assert led.steps == allowed


def test_changed_mechanism_opens_a_new_segment_and_both_are_counted():
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5)
  led.charge(_event(1.0), 1000)
  led.charge(_event(2.0), 500)
  assert [s["count"] for s in led.segments] == [1000, 500]
  want = accounting.epsilon(dp_accounting.ComposedDpEvent([
      accounting.poisson_gaussian_event(1 / 469, 1.0, 1000),
      accounting.poisson_gaussian_event(1 / 469, 2.0, 500)]), 1e-5)
  assert led.epsilon() == pytest.approx(want, rel=1e-9)


def test_json_round_trip_keeps_the_accounting(tmp_path):
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5, accountant="rdp", orders="opacus",
                                 budget_epsilon=10.0, info={"noise_multiplier": 1.0})
  led.charge(_event(), 1234)
  written = ledger_lib.write_ledger_file(led, str(tmp_path))
  on_disk = json.loads((tmp_path / "privacy.json").read_text())
  assert on_disk == json.loads(json.dumps(written))
  assert on_disk["steps"] == 1234 and on_disk["noise_multiplier"] == 1.0
  back = ledger_lib.PrivacyLedger.from_json(on_disk)
  assert back.steps == 1234
  assert back.epsilon() == pytest.approx(led.epsilon(), rel=1e-12)
  assert back.info["noise_multiplier"] == 1.0


def test_non_private_ledger_reports_no_epsilon():
  led = ledger_lib.PrivacyLedger(private=False, delta=1e-5)
  led.charge(dp_accounting.NonPrivateDpEvent(), 10)
  assert math.isinf(led.epsilon())
  assert led.to_json()["epsilon"] is None


def test_public_randomness_reports_no_epsilon_but_still_composes():
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5, randomness="public")
  led.charge(_event(), 100)
  assert led.epsilon() > 0  # the accountant's value (budget checks use it)
  out = led.to_json()
  assert out["epsilon"] is None and out["randomness"] == "public"
  assert "privacy.reproducible" in out["epsilon_caveat"]
  back = ledger_lib.PrivacyLedger.from_json(json.loads(json.dumps(out)))
  assert back.randomness == "public" and back.reported_epsilon() is None
  assert "epsilon_caveat" not in back.info  # re-derived, not stored twice


def test_a_reported_event_that_is_not_a_bound_carries_the_bound_and_the_budget_uses_it():
  reported = _event(sigma=2.0)
  bound = _event(sigma=0.5)
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5, budget_epsilon=50.0,
                                 info={"epsilon_caveat": "published claim, not a bound"})
  led.charge(reported, 1000, bound_event=bound)
  want_bound = accounting.epsilon(accounting.poisson_gaussian_event(1 / 469, 0.5, 1000), 1e-5)
  assert led.bound_epsilon() == pytest.approx(want_bound, rel=1e-9)
  assert led.epsilon() < led.bound_epsilon()
  out = led.to_json()
  assert out["epsilon_bound"] == pytest.approx(want_bound, rel=1e-9)
  assert out["epsilon_caveat"] == "published claim, not a bound"
  assert "bound for this algorithm" in led.describe_epsilon()
  # The budget is checked against the bound: a plan that fits the reported accounting
  # but not the bound is refused.
  more = led.max_more_steps(reported, bound)
  assert led.bound_epsilon((reported, more, bound)) <= 50.0 < led.bound_epsilon(
      (reported, more + 1, bound))
  with pytest.raises(errors.PrivacyBudgetExceeded):
    led.plan(reported, more + 1, bound)
  back = ledger_lib.PrivacyLedger.from_json(json.loads(json.dumps(out)))
  assert back.bound_epsilon() == pytest.approx(want_bound, rel=1e-9)
  assert back.info["epsilon_caveat"] == "published claim, not a bound"


def test_tighten_budget_keeps_the_smaller():
  led = ledger_lib.PrivacyLedger(private=True, delta=1e-5, budget_epsilon=10.0)
  led.tighten_budget(20.0)
  assert led.budget_epsilon == 10.0
  led.tighten_budget(3.0)
  assert led.budget_epsilon == 3.0
  led.tighten_budget(None)
  assert led.budget_epsilon == 3.0
