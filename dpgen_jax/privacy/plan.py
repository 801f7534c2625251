"""From a config to an accounted plan: validated privacy settings, calibrated sigma
or step count, the ledger a run starts with, and the `--mode=privacy` report.

Generic over methods: a method only supplies `dp_event(config, num_examples)` (the
event of one accounted step) and `privacy_fields(config, num_examples)`.
"""

import math
from types import ModuleType

import dp_accounting
import ml_collections

from dpgen_jax import errors
from dpgen_jax.privacy import accounting, randomness
from dpgen_jax.privacy import ledger as ledger_lib
from dpgen_jax.privacy.ledger import PrivacyLedger


def validate_privacy_config(config, num_examples: int) -> None:
  """Checks the privacy section against the dataset size; ConfigError on misuse."""
  p = config.privacy
  errors.require(p.accountant in accounting.ACCOUNTANTS,
                 f"privacy.accountant must be one of {list(accounting.ACCOUNTANTS)}, "
                 f"got {p.accountant!r}.")
  errors.require(p.rdp_orders in accounting.ORDER_GRIDS,
                 f"privacy.rdp_orders must be one of {sorted(accounting.ORDER_GRIDS)}, "
                 f"got {p.rdp_orders!r}.")
  errors.require(p.neighboring in accounting.NEIGHBORING,
                 f"privacy.neighboring must be one of {sorted(accounting.NEIGHBORING)}.")
  steps = config.train.num_steps
  errors.require(steps is None or steps > 0, f"train.num_steps must be positive, got {steps}.")
  if not p.enabled:
    return
  errors.require(0 < p.delta < 1.0 / num_examples,
                 f"privacy.delta = {p.delta:g} must be in (0, 1/N) = (0, {1.0 / num_examples:.3g}) "
                 f"for N = {num_examples} training examples; a delta of 1/N or more allows "
                 f"releasing a whole example.")
  errors.require(p.clip_norm > 0, f"privacy.clip_norm must be positive, got {p.clip_norm}.")
  sigma, target = p.noise_multiplier, p.target_epsilon
  errors.require(sigma is None or sigma > 0,
                 f"privacy.noise_multiplier must be positive when privacy is enabled, got "
                 f"{sigma} (set privacy.enabled=False for a non-private run).")
  errors.require(target is None or target > 0,
                 f"privacy.target_epsilon must be positive, got {target}.")
  errors.require(sigma is not None or target is not None,
                 "privacy.noise_multiplier is unset and there is no privacy.target_epsilon to "
                 "calibrate it from; set one of them.")
  errors.require(steps is not None or target is not None,
                 "train.num_steps is unset and there is no privacy.target_epsilon to derive it "
                 "from; set one of them.")
  errors.require(sigma is not None or steps is not None,
                 "Both privacy.noise_multiplier and train.num_steps are unset; set one and the "
                 "other is calibrated from privacy.target_epsilon.")


def fixed_events(config, num_examples: int, method: ModuleType) -> list:
  """One-time (event, count) pairs a method spends besides its steps (e.g. CSL-GAN's
  noised mean samples): `method.fixed_events(config, num_examples)` if it has one."""
  if not config.privacy.enabled or not hasattr(method, "fixed_events"):
    return []
  return list(method.fixed_events(config, num_examples))


def _with_fixed(fixed: list, event: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
  if not fixed:
    return event
  return dp_accounting.ComposedDpEvent(
      [dp_accounting.SelfComposedDpEvent(e, int(n)) for e, n in fixed] + [event])


def _accountant_kwargs(config) -> dict:
  p = config.privacy
  return dict(accountant=p.accountant, orders=p.rdp_orders, neighboring=p.neighboring)


def _with(config, **updates) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in updates.items():
    section, key = dotted.split(".")
    out[section][key] = value
  return out


def resolve(config, num_examples: int, method: ModuleType) -> tuple[ml_collections.ConfigDict, dict]:
  """Fills an unset noise multiplier or step count from the target epsilon.

  Returns (config with both set, notes for the ledger saying what was calibrated).
  """
  validate_privacy_config(config, num_examples)
  notes = {}
  p = config.privacy
  if not p.enabled:
    return config, notes
  kwargs = _accountant_kwargs(config)

  def bounding_event(cfg):  # calibrate against the bound, as the budget is checked
    bound = bound_step_event(cfg, num_examples, method)
    return bound if bound is not None else method.dp_event(cfg, num_examples)

  if p.noise_multiplier is None:
    steps = config.train.num_steps

    def make(sigma):
      # One-time releases may use the calibrated multiplier too (DP-MERF's embedding).
      probe = _with(config, **{"privacy.noise_multiplier": float(sigma)})
      return _with_fixed(fixed_events(probe, num_examples, method),
                         dp_accounting.SelfComposedDpEvent(bounding_event(probe), steps))

    sigma = accounting.calibrate_noise_multiplier(make, p.target_epsilon, p.delta, **kwargs)
    config = _with(config, **{"privacy.noise_multiplier": sigma})
    notes["noise_multiplier_calibrated_for"] = p.target_epsilon
  elif config.train.num_steps is None:
    one = bounding_event(config)
    fixed = fixed_events(config, num_examples, method)
    steps = accounting.calibrate_steps(
        lambda n: _with_fixed(fixed, dp_accounting.SelfComposedDpEvent(one, n)),
                                       p.target_epsilon, p.delta, **kwargs)
    errors.require(steps > 0, f"Not even one step fits privacy.target_epsilon = "
                              f"{p.target_epsilon:g} with noise_multiplier {p.noise_multiplier}.")
    config = _with(config, **{"train.num_steps": steps})
    notes["num_steps_calibrated_for"] = p.target_epsilon
  return config, notes


def step_event(config, num_examples: int, method: ModuleType) -> dp_accounting.DpEvent:
  if not config.privacy.enabled:
    return dp_accounting.NonPrivateDpEvent()
  return method.dp_event(config, num_examples)


def bound_step_event(config, num_examples: int,
                     method: ModuleType) -> dp_accounting.DpEvent | None:
  """A bound for one step when the reported `step_event` is not one (e.g. GS-WGAN with
  its published accounting and one discriminator per step), else None."""
  if not config.privacy.enabled or not hasattr(method, "bound_dp_event"):
    return None
  return method.bound_dp_event(config, num_examples)


def new_ledger(config, num_examples: int, method: ModuleType, notes: dict) -> PrivacyLedger:
  p = config.privacy
  info = dict(method.privacy_fields(config, num_examples))
  info.update(notes)
  ledger = PrivacyLedger(private=bool(p.enabled), delta=float(p.delta), accountant=p.accountant,
                         orders=p.rdp_orders, neighboring=p.neighboring,
                         budget_epsilon=p.target_epsilon if p.enabled else None, info=info,
                         randomness="public" if p.reproducible else "secret")
  for event, count in fixed_events(config, num_examples, method):
    ledger.charge(event, int(count), one_time=True)
  return ledger


def privacy_report(config, num_examples: int, method: ModuleType, *,
                   compare_accountants: bool = True) -> dict:
  """What `--mode=privacy` prints: the epsilon of the whole configured run.

  With `compare_accountants`, also the epsilon of the other accountant (PLD when the
  run uses RDP and vice versa), for reference.
  """
  config, notes = resolve(config, num_examples, method)
  steps = int(config.train.num_steps)
  event = step_event(config, num_examples, method)
  report = dict(method.privacy_fields(config, num_examples))
  report.update(notes)
  p = config.privacy
  if not p.enabled:
    report.update(epsilon=None, delta=None, steps=steps, accountant=None, private=False)
    return report
  fixed = fixed_events(config, num_examples, method)
  total = _with_fixed(fixed, dp_accounting.SelfComposedDpEvent(event, steps))
  kwargs = _accountant_kwargs(config)
  eps = accounting.epsilon(total, p.delta, **kwargs)
  report.update(epsilon=eps, delta=p.delta, steps=steps, accountant=p.accountant,
                private=True, num_examples=num_examples,
                randomness="public" if p.reproducible else "secret")
  bound = bound_step_event(config, num_examples, method)
  bound_eps = eps
  if bound is not None:
    bound_eps = accounting.epsilon(_with_fixed(fixed, dp_accounting.SelfComposedDpEvent(
        bound, steps)), p.delta, **kwargs)
    report["epsilon_bound"] = None if math.isinf(bound_eps) else bound_eps
  if p.accountant == "rdp":
    report["rdp_orders"] = p.rdp_orders
  if not compare_accountants:
    pass
  elif p.accountant == "rdp":
    try:
      report["epsilon_pld"] = accounting.epsilon(total, p.delta, accountant="pld",
                                                 neighboring=p.neighboring)
    except dp_accounting.UnsupportedEventError:  # e.g. sampling without replacement
      report["epsilon_pld"] = None
  else:
    report["epsilon_rdp"] = accounting.epsilon(total, p.delta, accountant="rdp",
                                               orders=p.rdp_orders, neighboring=p.neighboring)
  if p.target_epsilon is not None:
    report["target_epsilon"] = p.target_epsilon
    report["within_budget"] = bool(bound_eps <= p.target_epsilon)
  for key in ("noise_multiplier", "sampling_rate"):
    report.setdefault(key, None)
  if isinstance(report.get("epsilon"), float) and math.isinf(report["epsilon"]):
    report["epsilon"] = None
  caveats = [report["epsilon_caveat"]] if report.get("epsilon_caveat") else []
  if p.reproducible:
    # Public randomness: no guarantee, so no epsilon is shown (the value the accountant
    # would give with secret randomness stays for debugging, under a name that says so).
    secret_value = report["epsilon"]
    report = ledger_lib.scrub_epsilons(report)
    report["if_randomness_were_secret"] = {"epsilon": secret_value}
    caveats.insert(0, randomness.PUBLIC_CAVEAT)
  if caveats:
    report["epsilon_caveat"] = "; ".join(caveats)
  return report
