"""Wellbeing guardrails, pure: from each responder's calls and pauses, when they are owed a pause.

Three guards, each per queue (`WellbeingRule`): a call at least `decompress_after_s` long is
followed by a decompression pause; and two caps, on calls in a row and on time in the queue
without a break, each either enforced as a timed rest pause or only flagged (`enforce`). A pause
of at least `min_break_s` is a break: the counts of that queue start again after it.

`Guards` folds member and call events into that state and returns the decisions; the application
service carries them out. Times are epoch seconds. A responder already paused, or on a call, is
owed nothing new until that ends: a pause never lands in the middle of a call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from hotline.core.ami import EventName, field_flag, field_number, field_text

Enforce = Literal["pause", "alert"]
Limit = Literal["consecutive_calls", "continuous_hours"]
LIMITS: Final[tuple[Limit, ...]] = get_args(Limit)
# What earned a decision: a long call, or one of the caps.
Trigger = Literal["long_call", Limit]
TRIGGERS: Final[tuple[Trigger, ...]] = ("long_call", *LIMITS)
# What hotline asks of Asterisk to carry a pause out.
PauseAction = Literal["pause", "unpause"]


@dataclass(frozen=True, slots=True)
class WellbeingRule:
    decompress_after_s: float | None  # None: no decompression pause
    decompress_s: float
    max_consecutive_calls: int | None  # None: no cap
    max_continuous_s: float | None  # None: no cap
    min_break_s: float  # a pause at least this long is a break
    enforce: Enforce  # at a cap: a rest pause, or only the alert
    rest_s: float
    rest_reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """A responder owed a pause (action "pause": `reason` for `duration_s`) or over a cap that
    only alerts (action "alert")."""

    queue: str  # whose rule decided
    responder: str  # the member's name (the responder id for hotline's members)
    interface: str
    trigger: Trigger
    action: Enforce
    reason: str | None  # the pause reason; None for an alert
    duration_s: float
    why: str  # one line for the audit trail and the log


@dataclass(frozen=True, slots=True)
class HardCallFlagged:
    """A responder paused themselves with the hard-call reason (the phones' feature code)."""

    queue: str  # of their last call, else of the pause
    responder: str


Outcome = Decision | HardCallFlagged


@dataclass(slots=True)
class _Streak:
    since: float  # in the queue without a break since
    calls: int = 0  # calls ended since
    over: set[Limit] = field(default_factory=set)  # caps reached since


@dataclass(slots=True)
class _Responder:
    name: str
    interface: str
    queues: dict[str, _Streak] = field(default_factory=dict)
    paused_in: set[str] = field(default_factory=set)
    paused_since: float | None = None
    pause_reason: str = ""
    in_call: bool = False
    last_queue: str | None = None  # of the last call
    # A pause hotline asked for and has not seen start yet; then: the pause under way is ours.
    expecting: bool = False
    ours: bool = False


class Guards:
    """The guardrails' view of every member of a queue with a wellbeing rule, by interface."""

    # The events `feed` reads.
    EVENTS: frozenset[EventName] = frozenset(
        {"QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause", "AgentConnect",
         "AgentComplete"}
    )  # fmt: skip

    def __init__(self, rules: Mapping[str, WellbeingRule], hard_call_reason: str) -> None:
        self.rules = rules
        self.hard_call_reason = hard_call_reason
        self._responders: dict[str, _Responder] = {}

    def feed(self, name: str, fields: Mapping[str, str], at: float) -> list[Outcome]:
        """Apply one event; what it makes due."""
        queue, interface = field_text(fields, "Queue"), field_text(fields, "Interface")
        if queue is None or queue not in self.rules or interface is None:
            return []
        member = field_text(fields, "MemberName") or interface
        if name == "QueueMemberRemoved":
            found = self._responders.get(interface)
            if found is not None:
                found.queues.pop(queue, None)
                found.paused_in.discard(queue)
                if not found.queues:
                    del self._responders[interface]
            return []
        r = self._responder(interface, member, queue, at)
        if name in ("QueueMemberAdded", "QueueMemberPause"):
            paused = field_flag(fields, "Paused")
            if paused is not None:
                reason = field_text(fields, "PausedReason") or ""
                return self._paused(r, queue, paused, reason, at)
            return []
        if name == "AgentConnect":
            r.in_call = True
            return []
        if name == "AgentComplete":
            r.in_call = False
            r.last_queue = queue
            for streak in r.queues.values():
                streak.calls += 1
            return self._after_call(r, queue, field_number(fields, "TalkTime") or 0.0, at)
        return []

    def resync(self, members: Iterable[tuple[str, str, str, bool, str, bool]], at: float) -> None:
        """Align with a QueueStatus read: (queue, interface, member name, paused, paused
        reason, in call). Members first seen here count from now; those gone are forgotten."""
        seen: set[tuple[str, str]] = set()
        for queue, interface, member, paused, reason, in_call in members:
            if queue not in self.rules or not interface:
                continue
            seen.add((queue, interface))
            r = self._responder(interface, member or interface, queue, at)
            r.in_call = in_call
            self._paused(r, queue, paused, reason, at)
        for interface, r in list(self._responders.items()):
            for queue in [q for q in r.queues if (q, interface) not in seen]:
                del r.queues[queue]
                r.paused_in.discard(queue)
            if not r.queues:
                del self._responders[interface]

    def tick(self, at: float) -> list[Decision]:
        """The continuous-time caps reached by `at`, for responders neither paused nor on a call."""
        due: list[Decision] = []
        for r in self._responders.values():
            if r.in_call or r.paused_in:
                continue
            for queue, streak in r.queues.items():
                rule = self.rules[queue]
                limit = rule.max_continuous_s
                if limit is None or at - streak.since < limit or "continuous_hours" in streak.over:
                    continue
                streak.over.add("continuous_hours")
                hours = (at - streak.since) / 3600
                why = f"{hours:.1f} h in {queue} without a break (cap {limit / 3600:g} h)"
                due.append(self._cap(r, queue, rule, "continuous_hours", why))
                if rule.enforce == "pause":
                    break  # one pause at a time
        return due

    def expect_pause(self, interface: str) -> None:
        """hotline is about to pause this member: the pause that follows is its own."""
        found = self._responders.get(interface)
        if found is not None:
            found.expecting = True

    def pause_failed(self, interface: str) -> None:
        found = self._responders.get(interface)
        if found is not None:
            found.expecting = False

    def paused_by_us(self, interface: str) -> bool:
        """Whether the member is still in the pause hotline started (not one of their own)."""
        found = self._responders.get(interface)
        return found is not None and bool(found.paused_in) and found.ours

    def over_limit(self) -> Counter[tuple[str, Limit]]:
        """(queue, cap) -> responders who reached it and have had no break since."""
        counts: Counter[tuple[str, Limit]] = Counter()
        for r in self._responders.values():
            for queue, streak in r.queues.items():
                for limit in streak.over:
                    counts[(queue, limit)] += 1
        return counts

    def _responder(self, interface: str, member: str, queue: str, at: float) -> _Responder:
        r = self._responders.get(interface)
        if r is None:
            r = self._responders[interface] = _Responder(member, interface)
        if queue not in r.queues:
            r.queues[queue] = _Streak(at)
        return r

    def _paused(
        self, r: _Responder, queue: str, paused: bool, reason: str, at: float
    ) -> list[Outcome]:
        was = bool(r.paused_in)
        if paused:
            r.paused_in.add(queue)
        else:
            r.paused_in.discard(queue)
        if paused and not was:
            r.paused_since, r.pause_reason = at, reason
            r.ours, r.expecting = r.expecting, False
            if reason == self.hard_call_reason and not r.ours:
                return [HardCallFlagged(r.last_queue or queue, r.name)]
        elif was and not r.paused_in:
            length = at - (r.paused_since if r.paused_since is not None else at)
            for name in r.queues:
                if length >= self.rules[name].min_break_s:
                    r.queues[name] = _Streak(at)
            r.paused_since, r.pause_reason, r.ours = None, "", False
        return []

    def _after_call(self, r: _Responder, queue: str, talk_s: float, at: float) -> list[Outcome]:
        if r.paused_in:
            return []  # already taking a pause
        rule = self.rules[queue]
        limit = rule.decompress_after_s
        if limit is not None and talk_s >= limit:
            why = f"a call of {talk_s / 60:.1f} min in {queue} (at least {limit / 60:g} min)"
            reason = self.hard_call_reason
            return [
                Decision(
                    queue, r.name, r.interface, "long_call", "pause", reason, rule.decompress_s, why
                )
            ]
        due: list[Outcome] = []
        for name, streak in r.queues.items():
            cap = self.rules[name].max_consecutive_calls
            if cap is None or streak.calls < cap or "consecutive_calls" in streak.over:
                continue
            streak.over.add("consecutive_calls")
            why = f"{streak.calls} calls in a row without a break (cap {cap})"
            decision = self._cap(r, name, self.rules[name], "consecutive_calls", why)
            due.append(decision)
            if decision.action == "pause":
                return due  # one pause at a time
        return due + self.tick(at)

    @staticmethod
    def _cap(r: _Responder, queue: str, rule: WellbeingRule, limit: Limit, why: str) -> Decision:
        if rule.enforce == "pause":
            return Decision(
                queue, r.name, r.interface, limit, "pause", rule.rest_reason, rule.rest_s, why
            )
        return Decision(queue, r.name, r.interface, limit, "alert", None, 0.0, why)
