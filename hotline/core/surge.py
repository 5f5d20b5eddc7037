"""The surge rule, pure: from a queue's load sampled over time, when to call in its standby
responders and when to let them go, and why.

Each queue with a surge rule is a two-state machine. Off, it turns on once any activation figure
has been reached (at or above its threshold) without a break for `activate_after_s`. On, it turns
off once every release figure has stayed below its threshold without a break for
`release_after_s`. The release thresholds sit below the activation ones (hysteresis): a load
hovering at one threshold cannot flap the standby responders in and out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from hotline.core.queuestate import QueueView

Figure = Literal["callers_waiting", "longest_wait_s", "calls_per_responder"]
FIGURES: Final[tuple[Figure, ...]] = get_args(Figure)
# The member states of a responder who is present: able to take a call now or already on one.
_PRESENT = ("available", "ringing", "in_call", "wrapup")


@dataclass(frozen=True, slots=True)
class Load:
    """A queue's load at one instant."""

    callers_waiting: int
    longest_wait_s: float
    # Calls in the queue (waiting or being answered) per present responder; inf when calls
    # wait and nobody is present.
    calls_per_responder: float

    def figure(self, name: Figure) -> float:
        return float(getattr(self, name))


@dataclass(frozen=True, slots=True)
class SurgeRule:
    """When a queue surges. Each mapping names the figures that count, with their threshold; at
    least one in each (the configuration checks it)."""

    activate: Mapping[Figure, float]  # any reached (>=) ...
    activate_after_s: float  # ... continuously this long: on
    release: Mapping[Figure, float]  # every one below (<) ...
    release_after_s: float  # ... continuously this long: off


@dataclass(frozen=True, slots=True)
class SurgeState:
    active: bool = False
    # Since when (epoch seconds) the condition that would change `active` has held unbroken;
    # None while it does not hold.
    since: float | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A decision to turn a queue's surge on or off, with the figures that made it."""

    queue: str
    active: bool
    load: Load
    # The figures that decided it (on: those reached; off: every release figure), each with
    # its threshold.
    figures: Mapping[Figure, float]
    held_s: float  # how long the condition held

    @property
    def reason(self) -> str:
        """One line for the audit trail and the log, e.g. "callers_waiting 4 >= 3 for 30 s"."""
        sign = ">=" if self.active else "<"
        parts = [
            f"{name} {_show(self.load.figure(name))} {sign} {_show(limit)}"
            for name, limit in self.figures.items()
        ]
        return f"{' and '.join(parts)} for {self.held_s:.0f} s"


def load_of(view: QueueView) -> Load:
    """The surge figures of a queue's live state."""
    present = sum(view.members.get(state, 0) for state in _PRESENT)
    calls = view.callers + view.members.get("in_call", 0)
    per = calls / present if present else math.inf if calls else 0.0
    return Load(view.callers, view.longest_wait_s, per)


def step(
    queue: str, rule: SurgeRule, state: SurgeState, load: Load, now: float
) -> tuple[SurgeState, Change | None]:
    """The state after the sample `load` taken at `now` (epoch seconds), and the change it
    decides, if any."""
    if not state.active:
        reached = {f: t for f, t in rule.activate.items() if load.figure(f) >= t}
        holds, after, figures = bool(reached), rule.activate_after_s, reached
    else:
        below = all(load.figure(f) < t for f, t in rule.release.items())
        holds, after, figures = below, rule.release_after_s, dict(rule.release)
    if not holds:
        return SurgeState(state.active, None), None
    since = now if state.since is None else min(state.since, now)
    if now - since < after:
        return SurgeState(state.active, since), None
    change = Change(queue, not state.active, load, figures, now - since)
    return SurgeState(not state.active, None), change


def _show(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:g}" if value == int(value) else f"{value:.2f}"
