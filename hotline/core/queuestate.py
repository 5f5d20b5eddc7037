"""The live state of each queue, pure: callers waiting and members by state, kept current by AMI
events and rebuilt from every QueueStatus read. Metrics read it at scrape time.

Member states are exclusive (docs/metrics.md, "Member states"; first match wins): unavailable,
in_call, ringing, paused, wrapup, available.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from hotline.core.ami import EventName, field_number

STATES = ("available", "ringing", "in_call", "paused", "wrapup", "unavailable")
_UNAVAILABLE = frozenset({4, 5})  # INVALID, UNAVAILABLE
_IN_CALL = frozenset({2, 3, 7, 8})  # INUSE, BUSY, RINGINUSE, ONHOLD
_RINGING = 6
_MEMBER_EVENTS: frozenset[EventName] = frozenset(
    {
        "QueueMemberAdded",
        "QueueMemberStatus",
        "QueueMemberPause",
        "QueueMemberPenalty",
        "QueueMemberRinginuse",
    }
)


@dataclass(slots=True)
class _Member:
    status: int = 0
    paused: bool = False
    in_call: bool = False
    last_call: float = 0.0  # epoch seconds
    wrapup_s: float = 0.0  # the member's own; 0 means the queue's
    # For the console: the member's name (a responder id for hotline's members), the reason
    # Asterisk shows for its pause, and since when (epoch) its status, pause and call flags hold.
    name: str = ""
    paused_reason: str = ""
    since: float = 0.0
    paused_since: float = 0.0

    def state(self, now: float, queue_wrapup_s: float) -> str:
        if self.status in _UNAVAILABLE:
            return "unavailable"
        if self.in_call or self.status in _IN_CALL:
            return "in_call"
        if self.status == _RINGING:
            return "ringing"
        if self.paused:
            return "paused"
        wrapup = self.wrapup_s or queue_wrapup_s
        if self.last_call and now < self.last_call + wrapup:
            return "wrapup"
        return "available"


@dataclass(slots=True)
class _Queue:
    wrapup_s: float
    strategy: str = ""
    members: dict[str, _Member] = field(default_factory=dict)  # interface -> member
    callers: dict[str, float] = field(default_factory=dict)  # uniqueid -> entered (epoch)


class MemberView(NamedTuple):
    """One member of a queue now, for the console (never a caller's data). A tuple: the board
    makes thousands of them every second."""

    interface: str
    name: str
    state: str  # one of STATES
    since: float  # epoch seconds: when its status, pause or call last changed
    paused_reason: str | None  # while paused
    paused_since: float | None  # while paused


@dataclass(frozen=True, slots=True)
class QueueDetail:
    """A queue now, member by member: what the console's board shows."""

    waits_s: tuple[float, ...]  # each waiting caller's wait so far, longest first
    members: tuple[MemberView, ...]


@dataclass(frozen=True, slots=True)
class QueueView:
    strategy: str
    callers: int
    longest_wait_s: float
    members: Mapping[str, int]  # state -> count, every state present
    logged_in: int


class QueueBoard:
    """Callers and members of the configured queues; other queues are ignored."""

    # The events `feed` reads; the daemon routes only these here.
    EVENTS: frozenset[EventName] = frozenset(
        {"QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "QueueMemberRemoved",
         "AgentConnect", "AgentComplete", *_MEMBER_EVENTS}
    )  # fmt: skip

    def __init__(self, wrapup_s: Mapping[str, float]) -> None:
        # wrapup_s: each queue's wrap-up time (queues.conf wrapuptime): Asterisk does not report it.
        self._queues = {name: _Queue(wrapup) for name, wrapup in wrapup_s.items()}

    def feed(self, name: str, fields: Mapping[str, str], at: float) -> None:
        queue = self._queues.get(fields.get("Queue", ""))
        if queue is None:
            return
        if name == "QueueCallerJoin":
            if uid := fields.get("Uniqueid"):
                queue.callers.setdefault(uid, at)
        elif name in ("QueueCallerLeave", "QueueCallerAbandon"):
            queue.callers.pop(fields.get("Uniqueid", ""), None)
        elif name in _MEMBER_EVENTS:
            if interface := fields.get("Interface"):
                _update(queue.members.setdefault(interface, _Member(since=at)), fields, at)
        elif name == "QueueMemberRemoved":
            queue.members.pop(fields.get("Interface", ""), None)
        elif name in ("AgentConnect", "AgentComplete"):
            found = queue.members.get(fields.get("Interface", ""))
            if found is not None:
                if found.in_call != (name == "AgentConnect"):
                    found.since = at
                found.in_call = name == "AgentConnect"
                if name == "AgentComplete":
                    # LastCall changes silently in Asterisk: the end of the call starts wrap-up.
                    found.last_call = at

    def resync(self, items: Iterable[Mapping[str, str]], now: float) -> None:
        """Rebuild from a QueueStatus reply (QueueMember and QueueEntry items), whole."""
        fresh = {name: _Queue(q.wrapup_s, q.strategy) for name, q in self._queues.items()}
        old = self._queues
        for item in items:
            queue = fresh.get(item.get("Queue", ""))
            if queue is None:
                continue
            kind = item.get("Event")
            if kind == "QueueParams":
                queue.strategy = item.get("Strategy", "")
            elif kind == "QueueMember" and (interface := item.get("Location")):
                # A member whose state the read confirms keeps its times; others start now.
                before = old[item["Queue"]].members.get(interface)
                member = _Member() if before is None else replace(before)
                _update(member, item, now)
                if before is None:
                    member.since = member.paused_since if member.paused else now
                queue.members[interface] = member
            elif kind == "QueueEntry" and (uid := item.get("Uniqueid")):
                queue.callers[uid] = now - (field_number(item, "Wait") or 0.0)
        self._queues = fresh

    def detail(self, now: float) -> dict[str, QueueDetail]:
        """Every queue member by member, and each waiting caller's wait (nothing else of them)."""
        details = {}
        for name, queue in self._queues.items():
            members = tuple(
                MemberView(
                    interface,
                    member.name or interface,
                    member.state(now, queue.wrapup_s),
                    member.since,
                    member.paused_reason if member.paused else None,
                    member.paused_since if member.paused else None,
                )
                for interface, member in queue.members.items()
            )
            waits = sorted((max(0.0, now - at) for at in queue.callers.values()), reverse=True)
            details[name] = QueueDetail(tuple(waits), members)
        return details

    def view(self, now: float) -> dict[str, QueueView]:
        views = {}
        for name, queue in self._queues.items():
            states: Counter[str] = Counter({state: 0 for state in STATES})
            for member in queue.members.values():
                states[member.state(now, queue.wrapup_s)] += 1
            oldest = min(queue.callers.values(), default=None)
            views[name] = QueueView(
                strategy=queue.strategy,
                callers=len(queue.callers),
                longest_wait_s=max(0.0, now - oldest) if oldest is not None else 0.0,
                members=dict(states),
                logged_in=len(queue.members),
            )
        return views


def _update(member: _Member, fields: Mapping[str, str], at: float) -> None:
    held = (member.status, member.paused, member.in_call)
    was_paused = member.paused
    if name := fields.get("MemberName") or fields.get("Name"):
        member.name = name
    if "Status" in fields:
        member.status = int(field_number(fields, "Status") or 0)
    if "Paused" in fields:
        member.paused = fields["Paused"] == "1"
        member.paused_reason = fields.get("PausedReason", "") if member.paused else ""
        if member.paused and not was_paused:
            # LastPause: when Asterisk paused it (QueueStatus after a restart of hotline).
            member.paused_since = field_number(fields, "LastPause") or at
    if "InCall" in fields:
        member.in_call = fields["InCall"] == "1"
    if (member.status, member.paused, member.in_call) != held:
        member.since = at
    if "LastCall" in fields:
        member.last_call = field_number(fields, "LastCall") or 0.0
    if "Wrapuptime" in fields:
        member.wrapup_s = field_number(fields, "Wrapuptime") or 0.0
