"""From a config to the privacy plan of a run, resolved once.

    plan, config = planning.resolve(definition, config, num_examples)

checks the settings every method shares (`check_common`), calibrates an unset noise
multiplier or step count from privacy.target_epsilon with the method's own privacy
declaration (methods/protocol.py: its mechanisms' events for a given sigma), and
returns a frozen `PrivacyPlan` (sigma, clip, q, steps, delta, accountant, events) that
the method is built with, the ledger starts from, the run folder stores and
`--mode=privacy` prints. Nothing after this recomputes privacy values from the config.
"""

import dataclasses
import math
from typing import Any

import dp_accounting
import ml_collections

from dpgen_jax import errors
from dpgen_jax.privacy import accounting, ledger as ledger_lib, randomness
from dpgen_jax.privacy import sums


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
  """The resolved privacy settings and events of a run."""
  private: bool
  noise_multiplier: float | None
  clip_norm: float
  delta: float
  steps: int
  sampling_rate: float | None
  accountant: str
  orders: str
  neighboring: str
  target_epsilon: float | None
  reproducible: bool
  step_event: dp_accounting.DpEvent
  bound_event: dp_accounting.DpEvent | None = None
  one_time: tuple = ()
  fields: dict = dataclasses.field(default_factory=dict)
  caveat: str | None = None
  notes: dict = dataclasses.field(default_factory=dict)

  @property
  def accountant_kwargs(self) -> dict:
    return dict(accountant=self.accountant, orders=self.orders, neighboring=self.neighboring)

  def total_event(self, steps: int | None = None, bound: bool = False) -> dp_accounting.DpEvent:
    """One-time releases composed with `steps` (default: all) steps."""
    event = self.bound_event if bound and self.bound_event is not None else self.step_event
    n = self.steps if steps is None else int(steps)
    return dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(e, int(c)) for e, c in self.one_time]
        + [dp_accounting.SelfComposedDpEvent(event, n)])

  def new_ledger(self) -> ledger_lib.PrivacyLedger:
    info = dict(self.fields)
    info.update(self.notes)
    if self.caveat:
      info["epsilon_caveat"] = self.caveat
    ledger = ledger_lib.PrivacyLedger(
        private=self.private, delta=float(self.delta), accountant=self.accountant,
        orders=self.orders, neighboring=self.neighboring,
        budget_epsilon=self.target_epsilon if self.private else None, info=info,
        randomness="public" if self.reproducible else "secret")
    for event, count in self.one_time:
      ledger.charge(event, int(count), one_time=True)
    return ledger


def check_common(config, num_examples: int | None = None) -> None:
  """The checks every method shares: training cadence, batch size, the privacy section,
  the clipping strategy and physical batch. ConfigError with one message."""
  t, p, require = config.train, config.privacy, errors.require
  for key in ("log_every", "checkpoint_every", "sample_every"):
    require(int(t[key]) > 0, f"train.{key} must be a positive integer, got {t[key]}.")
  require(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}.")
  require(t.keep_checkpoints > 0, f"train.keep_checkpoints must be positive, got "
                                  f"{t.keep_checkpoints}.")
  require(t.num_steps is None or t.num_steps > 0,
          f"train.num_steps must be positive, got {t.num_steps}.")
  if num_examples is not None:
    require(t.batch_size <= num_examples, f"train.batch_size = {t.batch_size} is larger than "
                                          f"the dataset ({num_examples} examples).")
  require(p.accountant in accounting.ACCOUNTANTS,
          f"privacy.accountant must be one of {list(accounting.ACCOUNTANTS)}, got "
          f"{p.accountant!r}.")
  require(p.rdp_orders in accounting.ORDER_GRIDS,
          f"privacy.rdp_orders must be one of {sorted(accounting.ORDER_GRIDS)}, got "
          f"{p.rdp_orders!r}.")
  require(p.neighboring in accounting.NEIGHBORING,
          f"privacy.neighboring must be one of {sorted(accounting.NEIGHBORING)}.")
  require(p.clipping_strategy in sums.STRATEGIES,
          f"privacy.clipping_strategy must be one of {sorted(sums.STRATEGIES)}, got "
          f"{p.clipping_strategy!r}.")
  require(p.max_physical_bsz >= 0, "privacy.max_physical_bsz must be >= 0.")
  if not p.enabled:
    return
  if num_examples is not None:
    require(0 < p.delta < 1.0 / num_examples,
            f"privacy.delta = {p.delta:g} must be in (0, 1/N) = (0, {1.0 / num_examples:.3g}) "
            f"for N = {num_examples} training examples; a delta of 1/N or more allows "
            f"releasing a whole example.")
  require(p.clip_norm > 0, f"privacy.clip_norm must be positive, got {p.clip_norm}.")
  sigma, target, steps = p.noise_multiplier, p.target_epsilon, t.num_steps
  require(sigma is None or sigma > 0,
          f"privacy.noise_multiplier must be positive when privacy is enabled, got {sigma} "
          f"(set privacy.enabled=False for a non-private run).")
  require(target is None or target > 0, f"privacy.target_epsilon must be positive, got {target}.")
  require(sigma is not None or target is not None,
          "privacy.noise_multiplier is unset and there is no privacy.target_epsilon to "
          "calibrate it from; set one of them.")
  require(steps is not None or target is not None,
          "train.num_steps is unset and there is no privacy.target_epsilon to derive it "
          "from; set one of them.")
  require(sigma is not None or steps is not None,
          "Both privacy.noise_multiplier and train.num_steps are unset; set one and the "
          "other is calibrated from privacy.target_epsilon.")


def _total(decl, steps: int, bound: bool = True) -> dp_accounting.DpEvent:
  event = decl.bound_event if bound and decl.bound_event is not None else decl.step_event
  return dp_accounting.ComposedDpEvent(
      [dp_accounting.SelfComposedDpEvent(e, int(c)) for e, c in decl.one_time]
      + [dp_accounting.SelfComposedDpEvent(event, int(steps))])


def resolve(definition, config, num_examples: int) -> tuple[PrivacyPlan, Any]:
  """The run's PrivacyPlan and the config with the calibrated values filled in.

  Calibration uses the bound when the declared event is not one (the budget is checked
  against it too), and one-time releases that scale with sigma are recalibrated with it.
  """
  check_common(config, num_examples)
  p, steps = config.privacy, config.train.num_steps
  kwargs = dict(accountant=p.accountant, orders=p.rdp_orders, neighboring=p.neighboring)
  notes = {}
  sigma = p.noise_multiplier
  if p.enabled and sigma is None:
    sigma = accounting.calibrate_noise_multiplier(
        lambda s: _total(definition.privacy(config, num_examples, float(s)), steps),
        p.target_epsilon, p.delta, **kwargs)
    notes["noise_multiplier_calibrated_for"] = p.target_epsilon
  elif p.enabled and steps is None:
    decl = definition.privacy(config, num_examples, float(sigma))
    steps = accounting.calibrate_steps(lambda n: _total(decl, n), p.target_epsilon, p.delta,
                                       **kwargs)
    errors.require(steps > 0, f"Not even one step fits privacy.target_epsilon = "
                              f"{p.target_epsilon:g} with noise_multiplier {sigma}.")
    notes["num_steps_calibrated_for"] = p.target_epsilon
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.privacy.noise_multiplier = float(sigma) if p.enabled else sigma
  resolved.train.num_steps = int(steps)
  decl = definition.privacy(resolved, num_examples, float(sigma) if p.enabled else 0.0)
  plan = PrivacyPlan(
      private=bool(p.enabled), noise_multiplier=float(sigma) if p.enabled else None,
      clip_norm=float(p.clip_norm), delta=float(p.delta), steps=int(steps),
      sampling_rate=decl.sampling_rate, accountant=p.accountant, orders=p.rdp_orders,
      neighboring=p.neighboring, target_epsilon=p.target_epsilon if p.enabled else None,
      reproducible=bool(p.reproducible),
      step_event=decl.step_event if p.enabled else dp_accounting.NonPrivateDpEvent(),
      bound_event=decl.bound_event if p.enabled else None,
      one_time=tuple(decl.one_time) if p.enabled else (), fields=dict(decl.fields()),
      caveat=decl.caveat if p.enabled else None, notes=notes)
  return plan, resolved


def plan_for(config, spec) -> tuple[Any, PrivacyPlan, Any]:
  """(method definition, plan, resolved config) for `config` on data `spec`: the common
  checks, the method's validation and the calibration, in that order. `spec` may be the
  static spec of --mode=privacy (registry.static_spec) or a loaded dataset's."""
  from dpgen_jax.methods import get_definition
  definition = get_definition(config.method)
  check_common(config, spec.num_train)
  definition.validate(config, spec)
  plan, resolved = resolve(definition, config, spec.num_train)
  return definition, plan, resolved


def report(plan: PrivacyPlan, num_examples: int, *, compare_accountants: bool = True) -> dict:
  """What `--mode=privacy` prints: the epsilon of the whole planned run."""
  out = dict(plan.fields)
  out.update(plan.notes)
  out.setdefault("noise_multiplier", plan.noise_multiplier)
  out.setdefault("sampling_rate", plan.sampling_rate)
  if not plan.private:
    out.update(epsilon=None, delta=None, steps=plan.steps, accountant=None, private=False)
    return out
  total = plan.total_event()
  eps = accounting.epsilon(total, plan.delta, **plan.accountant_kwargs)
  out.update(epsilon=None if math.isinf(eps) else eps, delta=plan.delta, steps=plan.steps,
             accountant=plan.accountant, private=True, num_examples=num_examples,
             randomness="public" if plan.reproducible else "secret")
  bound_eps = eps
  if plan.bound_event is not None:
    bound_eps = accounting.epsilon(plan.total_event(bound=True), plan.delta,
                                   **plan.accountant_kwargs)
    out["epsilon_bound"] = None if math.isinf(bound_eps) else bound_eps
  if plan.accountant == "rdp":
    out["rdp_orders"] = plan.orders
    if compare_accountants:
      try:
        out["epsilon_pld"] = accounting.epsilon(total, plan.delta, accountant="pld",
                                                neighboring=plan.neighboring)
      except dp_accounting.UnsupportedEventError:  # e.g. sampling without replacement
        out["epsilon_pld"] = None
  elif compare_accountants:
    out["epsilon_rdp"] = accounting.epsilon(total, plan.delta, accountant="rdp",
                                            orders=plan.orders, neighboring=plan.neighboring)
  if plan.target_epsilon is not None:
    out["target_epsilon"] = plan.target_epsilon
    out["within_budget"] = bool(bound_eps <= plan.target_epsilon)
  caveats = [plan.caveat] if plan.caveat else []
  if plan.reproducible:
    # Public randomness: no guarantee, so no epsilon is shown (the value the accountant
    # would give with secret randomness stays for debugging, under a name that says so).
    secret_value = out["epsilon"]
    out = ledger_lib.scrub_epsilons(out)
    out["if_randomness_were_secret"] = {"epsilon": secret_value}
    caveats.insert(0, randomness.PUBLIC_CAVEAT)
  if caveats:
    out["epsilon_caveat"] = "; ".join(caveats)
  return out
