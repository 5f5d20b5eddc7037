"""Who is paused, with which reason and since when, and which pauses are past their reason's
limit (docs/supervision.md, "Pause limits"). Pure: fed AMI member events and QueueStatus reads
with their instants (epoch seconds), asked with an instant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hotline.core.ami import EventName, field_flag, field_number, field_text

# The member events that change a pause.
PAUSE_EVENTS: frozenset[EventName] = frozenset(
    {"QueueMemberAdded", "QueueMemberPause", "QueueMemberRemoved"}
)

_Key = tuple[str, str]  # (queue, interface)


@dataclass(frozen=True, slots=True)
class Pause:
    """A member paused now in one queue."""

    queue: str
    interface: str
    responder: str  # the member's name: a responder id for hotline's members
    reason: str  # Asterisk's PausedReason, "" when none was given
    since: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Limit:
    """A pause reason's limit: pauses longer than `max_s` are over it; `lift` ends them there."""

    max_s: float
    lift: bool


@dataclass(frozen=True, slots=True)
class OverLimit:
    """A pause past its reason's limit, as the board, the metrics and the lifting read it."""

    queue: str
    interface: str
    responder: str
    reason: str
    since: float  # epoch seconds
    limit_s: float
    lift: bool  # the reason's pauses are lifted at the limit


class PauseBook:
    """The pauses of the members of the configured queues, kept current by member events and
    rebuilt from every QueueStatus read. A pause's start is Asterisk's LastPause when it gives
    one (so a daemon restart does not reset the clock of a pause under way), else the instant
    hotline first saw it."""

    def __init__(self, queues: Iterable[str]) -> None:
        self._queues = frozenset(queues)
        self._pauses: dict[_Key, Pause] = {}

    def feed(self, name: str, fields: Mapping[str, str], at: float) -> None:
        """Apply one member event; other events and other queues are ignored."""
        queue, interface = field_text(fields, "Queue"), field_text(fields, "Interface")
        if queue is None or interface is None or queue not in self._queues:
            return
        key = (queue, interface)
        if name == "QueueMemberRemoved":
            self._pauses.pop(key, None)
        elif name in ("QueueMemberAdded", "QueueMemberPause"):
            self._apply(key, fields, "MemberName", at)

    def resync(self, items: Iterable[Mapping[str, str]], now: float) -> None:
        """Rebuild from a QueueStatus reply's QueueMember items, whole."""
        before, self._pauses = self._pauses, {}
        for item in items:
            if item.get("Event") != "QueueMember":
                continue
            queue, interface = field_text(item, "Queue"), field_text(item, "Location")
            if queue is None or interface is None or queue not in self._queues:
                continue
            key = (queue, interface)
            previous = before.get(key)
            if previous is not None:
                self._pauses[key] = previous
            self._apply(key, item, "Name", now)

    def _apply(self, key: _Key, fields: Mapping[str, str], name_field: str, at: float) -> None:
        paused = field_flag(fields, "Paused")
        if paused is None:
            return
        if not paused:
            self._pauses.pop(key, None)
            return
        reason = field_text(fields, "PausedReason") or ""
        current = self._pauses.get(key)
        if current is not None and current.reason == reason:
            return  # Asterisk repeats the event for a repeated pause: the pause goes on
        last = field_number(fields, "LastPause")
        # LastPause is when Asterisk last paused the member: trusted unless it is in the future
        # or missing (0 before any pause).
        since = last if last is not None and 0 < last <= at else at
        responder = field_text(fields, name_field) or key[1]
        self._pauses[key] = Pause(key[0], key[1], responder, reason, since)

    def get(self, queue: str, interface: str) -> Pause | None:
        return self._pauses.get((queue, interface))

    def pauses(self) -> list[Pause]:
        """Every pause now, by queue and responder."""
        return sorted(self._pauses.values(), key=lambda p: (p.queue, p.responder, p.interface))


def over_limit(pauses: Iterable[Pause], limits: Mapping[str, Limit], now: float) -> list[OverLimit]:
    """The pauses that have lasted longer than their reason's limit at `now` (at the limit
    exactly counts as over: that is when one is lifted). Reasons without a limit, and reasons
    that are not configured (a pause set by hand in Asterisk), have none."""
    found = []
    for pause in pauses:
        limit = limits.get(pause.reason)
        if limit is not None and now - pause.since >= limit.max_s:
            found.append(
                OverLimit(
                    pause.queue,
                    pause.interface,
                    pause.responder,
                    pause.reason,
                    pause.since,
                    limit.max_s,
                    limit.lift,
                )
            )
    return found


def next_limit(pauses: Iterable[Pause], limits: Mapping[str, Limit], now: float) -> float | None:
    """The first instant after `now` at which a pause reaches its limit, or None."""
    ends = [
        pause.since + limit.max_s
        for pause in pauses
        if (limit := limits.get(pause.reason)) is not None and pause.since + limit.max_s > now
    ]
    return min(ends, default=None)
