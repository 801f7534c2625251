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
