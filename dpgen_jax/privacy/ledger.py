"""The privacy ledger: what a run has spent, saved with every checkpoint.

The ledger is a list of segments (one dp-accounting event per step, and how many
times it was composed). A resumed run restores it from the checkpoint and keeps
composing; if the resumed configuration changes the per-step mechanism (say a new
noise multiplier), a new segment starts, so the reported epsilon always covers every
accounted step that produced the saved state.

The budget: with `budget_epsilon` set, `plan()` refuses (before any training) a run
whose planned steps would exceed it, and `charge()` refuses any step beyond the
largest number the budget allows.
"""

import dataclasses
import json
import math
import os
from typing import Any

import dp_accounting

from dpgen_jax import errors
from dpgen_jax.privacy import accounting


@dataclasses.dataclass
class PrivacyLedger:
  private: bool
  delta: float
  accountant: str = "rdp"
  orders: str = "dp_accounting"
  neighboring: str = "add_or_remove_one"
  budget_epsilon: float | None = None
  segments: list[dict] = dataclasses.field(default_factory=list)
  info: dict = dataclasses.field(default_factory=dict)
  # Further steps already checked against the budget by plan() (None: no budget).
  verified_steps_left: int | None = None

  @property
  def steps(self) -> int:
    return sum(int(s["count"]) for s in self.segments if not s.get("one_time"))

  def _accountant_kwargs(self) -> dict:
    return dict(accountant=self.accountant, orders=self.orders, neighboring=self.neighboring)

  def composed_event(self, extra: tuple[dp_accounting.DpEvent, int] | None = None):
    events = [dp_accounting.SelfComposedDpEvent(accounting.event_from_json(s["event"]),
                                                int(s["count"]))
              for s in self.segments if int(s["count"]) > 0]
    if extra is not None and extra[1] > 0:
      events.append(dp_accounting.SelfComposedDpEvent(extra[0], int(extra[1])))
    return dp_accounting.ComposedDpEvent(events)

  def epsilon(self, extra: tuple[dp_accounting.DpEvent, int] | None = None) -> float:
    """Epsilon at `delta` of every accounted step (plus `extra` hypothetical ones)."""
    if not self.private:
      return math.inf
    return accounting.epsilon(self.composed_event(extra), self.delta,
                              **self._accountant_kwargs())

  def plan(self, step_event: dp_accounting.DpEvent, more_steps: int) -> float:
    """Checks that `more_steps` further steps fit the budget; returns the final epsilon.

    The checked steps are then charged without recomputing epsilon.
    """
    final = self.epsilon((step_event, more_steps))
    if not self.private or self.budget_epsilon is None:
      self.verified_steps_left = None
      return final
    if final > self.budget_epsilon:
      allowed = self.max_more_steps(step_event)
      raise errors.PrivacyBudgetExceeded(
          f"The planned run would spend epsilon = {final:.4f} (delta = {self.delta:g}, "
          f"{self.accountant} accountant) after {self.steps + more_steps} steps, above the "
          f"budget privacy.target_epsilon = {self.budget_epsilon:g}. The budget allows "
          f"{allowed} more steps; lower train.num_steps, raise privacy.noise_multiplier, or "
          f"leave privacy.noise_multiplier unset to calibrate it.")
    self.verified_steps_left = int(more_steps)
    return final

  def max_more_steps(self, step_event: dp_accounting.DpEvent) -> int:
    """The most further steps of `step_event` that keep epsilon within the budget."""
    if self.steps and self.epsilon() > self.budget_epsilon:
      return 0
    return accounting.calibrate_steps(lambda n: self.composed_event((step_event, n)),
                                      self.budget_epsilon, self.delta,
                                      **self._accountant_kwargs())

  def charge(self, step_event: dp_accounting.DpEvent, count: int = 1, *,
             one_time: bool = False) -> None:
    """Records `count` more steps of the event; refuses steps beyond the budget.

    `one_time`: a release outside the training steps (e.g. noised mean samples), kept
    in its own segment and not counted in `steps`."""
    step_event_json = accounting.event_to_json(step_event)
    if one_time:
      self.segments.append({"event": step_event_json, "count": count, "one_time": True})
      return
    if self.verified_steps_left is not None:
      if count > self.verified_steps_left:
        spent = self.epsilon((step_event, count))
        if spent > self.budget_epsilon:
          raise errors.PrivacyBudgetExceeded(
              f"Refusing step {self.steps + 1}: it would bring epsilon to {spent:.4f}, above "
              f"the budget {self.budget_epsilon:g} (delta = {self.delta:g}).")
        self.verified_steps_left = count
      self.verified_steps_left -= count
    if (self.segments and self.segments[-1]["event"] == step_event_json
        and not self.segments[-1].get("one_time")):
      self.segments[-1]["count"] += count
    else:
      self.segments.append({"event": step_event_json, "count": count})

  def to_json(self) -> dict:
    eps = self.epsilon()
    return dict(
        private=self.private,
        epsilon=None if math.isinf(eps) else eps,
        delta=self.delta,
        steps=self.steps,
        accountant=self.accountant,
        rdp_orders=self.orders if self.accountant == "rdp" else None,
        neighboring=self.neighboring,
        budget_epsilon=self.budget_epsilon,
        segments=self.segments,
        **self.info)

  @classmethod
  def from_json(cls, data: dict) -> "PrivacyLedger":
    known = {"private", "delta", "accountant", "rdp_orders", "neighboring",
             "budget_epsilon", "segments", "epsilon", "steps"}
    return cls(private=data["private"], delta=data["delta"], accountant=data["accountant"],
               orders=data.get("rdp_orders") or "dp_accounting",
               neighboring=data.get("neighboring", "add_or_remove_one"),
               budget_epsilon=data.get("budget_epsilon"),
               segments=[dict(s) for s in data.get("segments", [])],
               info={k: v for k, v in data.items() if k not in known})


def write_ledger_file(ledger: PrivacyLedger, workdir: str, extra: dict[str, Any] | None = None,
                      filename: str = "privacy.json") -> dict:
  """Atomically writes WORKDIR/privacy.json; returns what was written."""
  data = ledger.to_json()
  if extra:
    data.update(extra)
  path = os.path.join(workdir, filename)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
  return data
