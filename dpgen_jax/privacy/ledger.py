"""The privacy ledger: what a run has spent, saved with every checkpoint.

The ledger is a list of segments (one dp-accounting event per step, and how many
times it was composed). A resumed run restores it from the checkpoint and keeps
composing; if the resumed configuration changes the per-step mechanism (say a new
noise multiplier), a new segment starts, so the reported epsilon always covers every
accounted step that produced the saved state.

The budget: with `budget_epsilon` set, `plan()` refuses (before any training) a run
whose planned steps would exceed it, and `charge()` refuses any step beyond the
largest number the budget allows. A resumed run keeps the smaller of the stored budget
and the one it is started with (`tighten_budget`).

Reported epsilon and bound. A segment may carry a `bound_event` beside its `event`:
then `event` is an accounting the user asked to see (e.g. GS-WGAN's published
accounting, which is not a bound for the algorithm run) and `bound_event` one that is.
The budget is always checked against the bound (`bound_epsilon`), and every place that
shows the reported epsilon also shows the bound and the caveat (`info['epsilon_caveat']`).

Public randomness. A run whose randomness is derived from the public seed
(`randomness = 'public'`, privacy.reproducible) has no privacy guarantee: it reports
no epsilon (null in privacy.json, with a caveat), although the ledger still composes
its events (the budget check and tests use them).
"""

import dataclasses
import json
import math
import os
from typing import Any

import dp_accounting

from dpgen_jax import errors
from dpgen_jax.privacy import accounting
from dpgen_jax.privacy.randomness import PUBLIC_CAVEAT

BOUND_CAVEAT = ("some steps are accounted under a model that is not a bound for the "
                "algorithm that ran; epsilon_bound is the value that is")


def scrub_epsilons(data: Any) -> Any:
  """`data` with every finite epsilon-like value ('epsilon...' keys, except caveats)
  replaced by None, recursively: what a run with public randomness may show."""
  if isinstance(data, dict):
    return {k: (None if k.startswith("epsilon") and k != "epsilon_caveat"
                and not isinstance(v, (dict, str)) else scrub_epsilons(v))
            for k, v in data.items()}
  if isinstance(data, list):
    return [scrub_epsilons(v) for v in data]
  return data


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
  randomness: str = "secret"  # 'secret' (OS entropy) or 'public' (privacy.reproducible)

  @property
  def steps(self) -> int:
    return sum(int(s["count"]) for s in self.segments if not s.get("one_time"))

  def _accountant_kwargs(self) -> dict:
    return dict(accountant=self.accountant, orders=self.orders, neighboring=self.neighboring)

  @property
  def has_bound(self) -> bool:
    """True when some segment's reported event is not a bound (see the module doc)."""
    return any("bound_event" in s for s in self.segments)

  def composed_event(self, extra: tuple | None = None, *, bound: bool = False):
    """Every charged event composed, plus `extra` = (event, count[, bound_event]).

    bound: use each segment's bound_event where it has one."""
    def pick(seg):
      return accounting.event_from_json(seg.get("bound_event", seg["event"]) if bound
                                        else seg["event"])
    events = [dp_accounting.SelfComposedDpEvent(pick(s), int(s["count"]))
              for s in self.segments if int(s["count"]) > 0]
    if extra is not None and extra[1] > 0:
      event = extra[2] if bound and len(extra) > 2 and extra[2] is not None else extra[0]
      events.append(dp_accounting.SelfComposedDpEvent(event, int(extra[1])))
    return dp_accounting.ComposedDpEvent(events)

  def _cached_epsilon(self, extra, bound: bool) -> float:
    key = (json.dumps(self.segments, sort_keys=True), bound, None if extra is None else
           tuple(e if e is None or isinstance(e, int) else
                 json.dumps(accounting.event_to_json(e), sort_keys=True) for e in extra))
    cache = self.__dict__.setdefault("_eps_cache", {})
    if key not in cache:
      if len(cache) > 64:
        cache.clear()
      cache[key] = accounting.epsilon(self.composed_event(extra, bound=bound), self.delta,
                                      **self._accountant_kwargs())
    return cache[key]

  def epsilon(self, extra: tuple | None = None) -> float:
    """The accountant's epsilon at `delta` of every charged event (plus `extra`
    hypothetical steps), under the reported accounting. Not shown to users when the
    randomness is public: see `reported_epsilon`."""
    if not self.private:
      return math.inf
    return self._cached_epsilon(extra, bound=False)

  def bound_epsilon(self, extra: tuple | None = None) -> float:
    """Epsilon of the bound events: equal to `epsilon` unless some segment's reported
    event is not a bound. The budget is checked against this value."""
    if not self.private:
      return math.inf
    has_bound = self.has_bound or (extra is not None and len(extra) > 2 and
                                   extra[2] is not None)
    if not has_bound:
      return self.epsilon(extra)
    return self._cached_epsilon(extra, bound=True)

  def reported_epsilon(self) -> float | None:
    """The epsilon to show: None for a non-private run and for public randomness."""
    if not self.private or self.randomness == "public":
      return None
    eps = self.epsilon()
    return None if math.isinf(eps) else eps

  def caveat(self) -> str | None:
    """Why the shown epsilon needs a qualification (or is not shown), if it does."""
    notes = []
    if self.private and self.randomness == "public":
      notes.append(PUBLIC_CAVEAT)
    if self.info.get("epsilon_caveat"):
      notes.append(str(self.info["epsilon_caveat"]))
    elif self.private and self.has_bound:  # e.g. a config changed on resume: keep saying it
      notes.append(BOUND_CAVEAT)
    return "; ".join(notes) or None

  def describe_epsilon(self) -> str:
    """'epsilon 9.2428 [caveat; bound 3.1e+05]' for the progress line and logs."""
    eps = self.reported_epsilon()
    text = "epsilon null" if eps is None else f"epsilon {eps:.4f}"
    extras = []
    if self.caveat():
      extras.append(self.caveat())
    if self.private and self.has_bound and eps is not None:
      bound = self.bound_epsilon()
      extras.append("bound for this algorithm: " + ("none proven" if math.isinf(bound)
                                                    else f"epsilon {bound:.4g}"))
    return text + (f" [{'; '.join(extras)}]" if extras else "")

  def tighten_budget(self, budget: float | None) -> None:
    """A resumed run keeps the smaller of the stored budget and `budget`."""
    if budget is None:
      return
    self.budget_epsilon = float(budget) if self.budget_epsilon is None else \
        min(float(self.budget_epsilon), float(budget))

  def plan(self, step_event: dp_accounting.DpEvent, more_steps: int,
           bound_event: dp_accounting.DpEvent | None = None) -> float:
    """Checks that `more_steps` further steps fit the budget; returns the final bound
    epsilon. The checked steps are then charged without recomputing epsilon.
    """
    final = self.bound_epsilon((step_event, more_steps, bound_event))
    if not self.private or self.budget_epsilon is None:
      self.verified_steps_left = None
      return final
    if final > self.budget_epsilon:
      allowed = self.max_more_steps(step_event, bound_event)
      raise errors.PrivacyBudgetExceeded(
          f"The planned run would spend epsilon = {final:.4f} (delta = {self.delta:g}, "
          f"{self.accountant} accountant) after {self.steps + more_steps} steps, above the "
          f"budget privacy.target_epsilon = {self.budget_epsilon:g}. The budget allows "
          f"{allowed} more steps; lower train.num_steps, raise privacy.noise_multiplier, or "
          f"leave privacy.noise_multiplier unset to calibrate it.")
    self.verified_steps_left = int(more_steps)
    return final

  def max_more_steps(self, step_event: dp_accounting.DpEvent,
                     bound_event: dp_accounting.DpEvent | None = None) -> int:
    """The most further steps of `step_event` that keep the bound within the budget."""
    if self.steps and self.bound_epsilon() > self.budget_epsilon:
      return 0
    bound = self.has_bound or bound_event is not None
    return accounting.calibrate_steps(
        lambda n: self.composed_event((step_event, n, bound_event), bound=bound),
        self.budget_epsilon, self.delta, **self._accountant_kwargs())

  def charge(self, step_event: dp_accounting.DpEvent, count: int = 1, *,
             one_time: bool = False, bound_event: dp_accounting.DpEvent | None = None) -> None:
    """Records `count` more steps of the event; refuses steps beyond the budget.

    `one_time`: a release outside the training steps (e.g. noised mean samples), kept
    in its own segment and not counted in `steps`. `bound_event`: a bound for the
    algorithm when `step_event` is not one (see the module doc)."""
    segment = {"event": accounting.event_to_json(step_event), "count": count}
    if bound_event is not None:
      segment["bound_event"] = accounting.event_to_json(bound_event)
    if one_time:
      self.segments.append(dict(segment, one_time=True))
      return
    if self.verified_steps_left is not None:
      if count > self.verified_steps_left:
        spent = self.bound_epsilon((step_event, count, bound_event))
        if spent > self.budget_epsilon:
          raise errors.PrivacyBudgetExceeded(
              f"Refusing step {self.steps + 1}: it would bring epsilon to {spent:.4f}, above "
              f"the budget {self.budget_epsilon:g} (delta = {self.delta:g}).")
        self.verified_steps_left = count
      self.verified_steps_left -= count
    last = self.segments[-1] if self.segments else None
    if (last is not None and not last.get("one_time") and last["event"] == segment["event"]
        and last.get("bound_event") == segment.get("bound_event")):
      last["count"] += count
    else:
      self.segments.append(segment)

  def to_json(self) -> dict:
    """What privacy.json and the checkpoints hold. `epsilon` is null for a non-private
    run and for public randomness (then `epsilon_caveat` says why)."""
    out = dict(
        private=self.private,
        epsilon=self.reported_epsilon(),
        delta=self.delta,
        steps=self.steps,
        accountant=self.accountant,
        rdp_orders=self.orders if self.accountant == "rdp" else None,
        neighboring=self.neighboring,
        budget_epsilon=self.budget_epsilon,
        randomness=self.randomness,
        segments=self.segments,
        **self.info)
    caveat = self.caveat()
    if caveat:
      out["epsilon_caveat"] = caveat
    if self.private and self.has_bound:
      bound = self.bound_epsilon()
      out["epsilon_bound"] = None if math.isinf(bound) else bound
    if self.randomness == "public":
      out = scrub_epsilons(out)
    return out

  @classmethod
  def from_json(cls, data: dict) -> "PrivacyLedger":
    known = {"private", "delta", "accountant", "rdp_orders", "neighboring", "budget_epsilon",
             "segments", "epsilon", "steps", "randomness", "epsilon_bound", "epsilon_caveat"}
    info = {k: v for k, v in data.items() if k not in known}
    own = [c for c in str(data.get("epsilon_caveat") or "").split("; ")
           if c and c not in (PUBLIC_CAVEAT, BOUND_CAVEAT)]
    if own:  # the method's own caveat (the public-randomness one is re-derived)
      info["epsilon_caveat"] = "; ".join(own)
    return cls(private=data["private"], delta=data["delta"], accountant=data["accountant"],
               orders=data.get("rdp_orders") or "dp_accounting",
               neighboring=data.get("neighboring", "add_or_remove_one"),
               budget_epsilon=data.get("budget_epsilon"),
               segments=[dict(s) for s in data.get("segments", [])],
               info=info, randomness=data.get("randomness", "secret"))


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
