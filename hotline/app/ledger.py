"""The call ledger: AMI events (already scrubbed of caller data) folded into call records and member
sessions, handed to the store. Runs inside the event consumer, so it never blocks or awaits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import structlog

from hotline.core.ami import Event, EventName
from hotline.core.calls import CallBook
from hotline.core.clock import Clock
from hotline.core.presence import MemberChange, Presence
from hotline.core.reconcile import Trigger
from hotline.core.records import (
    CallRecord,
    JoinReason,
    LeaveReason,
    MemberSession,
    PauseInterval,
    Record,
)

log = structlog.get_logger("hotline.ledger")

# Caller events whose record key needs Queue and Uniqueid; anything else is not ours to judge.
_CALLER_EVENTS: frozenset[EventName] = frozenset(
    {
        "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled",
        "AgentRingNoAnswer", "AgentConnect", "AgentComplete", "AgentDump",
    }
)  # fmt: skip
_TICK_S = 1.0


class Sink(Protocol):
    def submit(self, record: Record) -> None: ...


class Observer(Protocol):
    def dropped(self, reason: str, n: int) -> None: ...
    def unattributed(self, name: str) -> None: ...
    def event_lag(self, seconds: float) -> None: ...


class Flow(Protocol):
    """Call-flow metrics: each call record as it changes, and unanswered rings."""

    def call(self, record: CallRecord, now: float) -> None: ...
    def ring_not_answered(self, queue: str) -> None: ...


class Ledger:
    # The events `on_event` reads; the daemon routes only these here.
    EVENTS: frozenset[str] = CallBook.EVENTS | Presence.EVENTS

    def __init__(
        self,
        book: CallBook,
        presence: Presence,
        sink: Sink,
        clock: Clock,
        observer: Observer,
        *,
        flow: Flow,
    ) -> None:
        self.flow = flow
        self.book = book
        self.presence = presence
        self.sink = sink
        self.clock = clock
        self.observer = observer

    def restore(
        self,
        calls: Iterable[CallRecord],
        sessions: Iterable[MemberSession],
        pauses: Iterable[PauseInterval],
    ) -> None:
        """Open records read back from the database after a restart of the daemon."""
        self.book.restore(calls)
        self.presence.restore(sessions, pauses)

    def on_event(self, event: Event) -> None:
        name = event.name
        fields = event.fields
        if name == "AgentComplete" and fields.get("Queue") and "Uniqueid" not in fields:
            # Under load Asterisk may publish an AgentComplete once both channels are gone,
            # without either one's fields. It names no call, and none needs it: the record closes
            # from the call's own Hangup. Counted apart from dropped events, which page.
            self.observer.unattributed(name)
            return
        if name in _CALLER_EVENTS and not (fields.get("Queue") and fields.get("Uniqueid")):
            # Counted and logged by field names only: values could identify a caller.
            self.observer.dropped("invalid", 1)
            log.warning("ami_event_invalid", ami_event=name, field_names=sorted(fields))
            return
        at = self._event_time(fields)
        if "Timestamp" in fields:
            self.observer.event_lag((self.clock.now() - at).total_seconds())
        if name == "AgentRingNoAnswer":
            self.flow.ring_not_answered(fields.get("Queue", ""))
        self._submit(self.book.feed(name, fields, at))
        if name in Presence.EVENTS:
            self._submit(self.presence.feed(name, fields, at))

    def on_status(
        self, items: list[Mapping[str, str]], triggers: set[Trigger], *, asterisk_restarted: bool
    ) -> None:
        """After a QueueStatus read: on (re)connect, close what ended while we were away."""
        if "connect" not in triggers:
            return
        now = self.clock.now()
        waiting = [
            (i.get("Queue", ""), i.get("Uniqueid", ""))
            for i in items
            if i.get("Event") == "QueueEntry"
        ]
        members = [
            (
                i.get("Queue", ""),
                i.get("Location", ""),
                i.get("Name", ""),
                i.get("Paused") == "1",
                i.get("PausedReason", ""),
            )
            for i in items
            if i.get("Event") == "QueueMember"
        ]
        self._submit(self.book.resync(waiting, now))
        self._submit(self.presence.snapshot(members, now, restarted=asterisk_restarted))

    def expect(
        self, queue: str, interface: str, change: MemberChange, reason: JoinReason | LeaveReason
    ) -> None:
        self.presence.expect(queue, interface, change, reason)

    def expect_pause(self, interface: str, queue: str | None, reason: str) -> None:
        self.presence.expect_pause(interface, queue, reason)

    async def run_ticks(self) -> None:
        """Close provisional abandons after their grace, and stale records after their bound."""
        while True:
            await asyncio.sleep(_TICK_S)
            self._submit(self.book.tick(self.clock.now()))

    def _submit(self, records: Iterable[Record]) -> None:
        now = 0.0
        for record in records:
            self.sink.submit(record)
            if isinstance(record, CallRecord):
                # Most events change no record: the clock is read only when one did.
                now = now or self.clock.now().timestamp()
                self.flow.call(record, now)

    def _event_time(self, fields: Mapping[str, str]) -> datetime:
        # Asterisk's own Timestamp (timestampevents=yes) is when it happened, not when we read it.
        stamp = fields.get("Timestamp")
        if stamp:
            try:
                return datetime.fromtimestamp(float(stamp), UTC)
            except (ValueError, OverflowError, OSError):
                pass
        return self.clock.now()
