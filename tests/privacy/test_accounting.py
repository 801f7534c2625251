"""Accounting against published values (docs/privacy.md, accounting test vectors), not against itself."""

import math

import dp_accounting
import numpy as np
import pytest

from dpgen_jax.privacy import accounting

RTOL = 1e-6


def test_opacus_single_step_vector():
  # dpgan-revisit test/test_opacus_semantics.py (Opacus 1.1.3): q=1/3, sigma=1, T=1.
  event = accounting.poisson_gaussian_event(1 / 3, 1.0, 1)
  eps, order = accounting.epsilon_and_order(event, 1e-5, orders="opacus")
  assert eps == pytest.approx(3.413505963163778, rel=RTOL)
  assert order == pytest.approx(5.4)


@pytest.mark.parametrize("n,batch,sigma,epochs,delta,want_improved,want_classic", [
    (60_000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 0.9418705671682341),
    (100_000, 100, 1.0, 30, 1e-7, 1.4154988495444842, 1.7092873370064823),
])
def test_tf_privacy_vectors_both_conversions(n, batch, sigma, epochs, delta, want_improved,
                                             want_classic):
  steps = math.ceil(epochs * n / batch)
  event = accounting.poisson_gaussian_event(batch / n, sigma, steps)
  eps = accounting.epsilon(event, delta, orders="tf_privacy")
  assert eps == pytest.approx(want_improved, rel=RTOL)
  orders, rdp = accounting.rdp_curve(event, orders="tf_privacy")
  classic, _ = accounting.classic_epsilon(orders, rdp, delta)
  assert classic == pytest.approx(want_classic, rel=RTOL)


def test_dpgan_eps10_config_and_pld_is_tighter():
  event = accounting.poisson_gaussian_event(1 / 469, 1.0, 450_000)
  assert accounting.epsilon(event, 1e-5, orders="opacus") == pytest.approx(
      9.963189329487284, rel=RTOL)
  pld = accounting.epsilon(event, 1e-5, accountant="pld")
  assert 9.2 < pld < 9.35  # docs/privacy.md (accounting test vectors): PLD ~ 9.27


def test_dpcgan_upstream_classic_value():
  # TF-Privacy 0.2.2 as printed upstream: q=0.01, 24,900 steps, sigma 1.15, classic conversion.
  event = accounting.poisson_gaussian_event(0.01, 1.15, 24_900)
  orders, rdp = accounting.rdp_curve(event, orders="tf_privacy")
  eps, order = accounting.classic_epsilon(orders, rdp, 1e-5)
  assert eps == pytest.approx(9.643695567594444, rel=RTOL)
  assert order == 4


def test_nonprivate_event_has_infinite_epsilon():
  assert math.isinf(accounting.epsilon(dp_accounting.NonPrivateDpEvent(), 1e-5))


def test_calibrated_sigma_is_within_tolerance_and_not_above_target():
  # docs/privacy.md (accounting test vectors) calibration vector: q=1/469, T=450,000, eps 10 -> sigma ~ 0.99810.
  make = lambda s: accounting.poisson_gaussian_event(1 / 469, s, 450_000)
  sigma = accounting.calibrate_noise_multiplier(make, 10.0, 1e-5)
  assert sigma == pytest.approx(0.99810, abs=2e-4)
  eps = accounting.epsilon(make(sigma), 1e-5)
  assert eps <= 10.0
  assert eps > 10.0 - 0.01


def test_calibrated_steps_are_the_largest_within_budget():
  make = lambda n: accounting.poisson_gaussian_event(1 / 469, 1.0, n)
  steps = accounting.calibrate_steps(make, 5.0, 1e-5)
  assert accounting.epsilon(make(steps), 1e-5) <= 5.0
  assert accounting.epsilon(make(steps + 1), 1e-5) > 5.0


def test_event_json_round_trip():
  event = dp_accounting.ComposedDpEvent([
      accounting.poisson_gaussian_event(0.01, 1.1, 7),
      dp_accounting.SampledWithoutReplacementDpEvent(1000, 1, dp_accounting.GaussianDpEvent(1.07)),
  ])
  assert accounting.event_from_json(accounting.event_to_json(event)) == event


def test_unknown_grid_and_accountant_are_rejected():
  with pytest.raises(ValueError, match="order grid"):
    accounting.orders_for("nope")
  with pytest.raises(ValueError, match="accountant"):
    accounting.make_accountant("moments")


def _fresh_leaf_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("DPGEN_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(accounting, "DISK_CACHE_MIN_SECONDS", 0.0)  # keep every curve on disk
  accounting._leaf_rdp.cache_clear()


def test_rdp_curves_kept_on_disk_are_dp_accountings_and_only_used_under_their_own_key(
    monkeypatch, tmp_path):
  _fresh_leaf_cache(monkeypatch, tmp_path)
  leaf = accounting.poisson_gaussian_event(1 / 469, 0.7)
  event = dp_accounting.SelfComposedDpEvent(leaf, 1000)
  direct = dp_accounting.rdp.RdpAccountant(
      orders=list(accounting.orders_for("opacus"))).compose(event).rdp
  first = accounting.rdp_vector(event, orders="opacus")
  assert first == pytest.approx(direct, rel=1e-12)
  path, key = accounting._disk_cache(leaf, "opacus", "add_or_remove_one")
  with np.load(path) as f:
    assert str(f["key"]) == key and f["rdp"] * 1000 == pytest.approx(direct, rel=1e-12)

  # A file under another key (another dp-accounting version, event or grid) is ignored...
  np.savez(path, rdp=np.zeros_like(direct), key=key.replace("0.7", "0.8"))
  accounting._leaf_rdp.cache_clear()
  assert accounting.rdp_vector(event, orders="opacus") == pytest.approx(direct, rel=1e-12)
  # ...as is a truncated file; a file under the right key is what a new process reads.
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04")
  accounting._leaf_rdp.cache_clear()
  assert accounting.rdp_vector(event, orders="opacus") == pytest.approx(direct, rel=1e-12)
  with np.load(path) as f:
    assert str(f["key"]) == key  # rewritten after the recomputation
  np.savez(path, rdp=np.full_like(direct, 1e-3), key=key)
  accounting._leaf_rdp.cache_clear()
  assert accounting.rdp_vector(event, orders="opacus") == pytest.approx(np.full_like(direct, 1.0))
  accounting._leaf_rdp.cache_clear()  # leave no planted curve for other tests


@pytest.mark.parametrize("neighboring", ["add_or_remove_one", "replace_one"])
def test_one_gaussian_release_matches_the_analytic_gaussian_under_both_relations(neighboring):
  """A single Gaussian with multiplier sigma (noise std / sensitivity under the relation
  in use) is (eps, delta)-DP with delta(eps) = Phi(-eps s + 1/(2 s)) - e^eps Phi(-eps s -
  1/(2 s)), s = sigma (Balle & Wang 2018). PLD must give that eps for either relation
  (dp-accounting's PLD alone would double the sensitivity under replace-one)."""
  from scipy import optimize, stats
  sigma, delta = 3.7306, 1e-5
  exact = optimize.brentq(lambda e: stats.norm.cdf(-e * sigma + 0.5 / sigma)
                          - math.exp(e) * stats.norm.cdf(-e * sigma - 0.5 / sigma) - delta,
                          0.01, 20)
  assert exact == pytest.approx(1.0, abs=2e-3)
  got = accounting.epsilon(dp_accounting.GaussianDpEvent(sigma), delta, accountant="pld",
                           neighboring=neighboring)
  assert got == pytest.approx(exact, abs=5e-3)
  # RDP is looser for one release but must not be tighter than the exact value.
  assert accounting.epsilon(dp_accounting.GaussianDpEvent(sigma), delta,
                            neighboring=neighboring) >= exact
