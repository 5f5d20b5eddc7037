"""Call lifecycles, pure: fold app_queue events into one record per caller per queue visit.

Input events are already scrubbed (privacy.py): no caller number or name ever reaches this module,
only a keyed pseudonym. No I/O and no clock: instants come with the events and with `tick`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import datetime, timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from hotline.core.ami import EventName, aware, field_count, field_text
from hotline.core.records import AttemptOutcome, CallRecord, Outcome, PartnerResult, RingAttempt

if TYPE_CHECKING:
    from dataclasses import replace  # what `replace` below does, checked field by field
else:
    _VALUES = attrgetter(*(f.name for f in fields(CallRecord)))
    _INDEX = {f.name: i for i, f in enumerate(fields(CallRecord))}

    def replace(record: CallRecord, /, **changes: Any) -> CallRecord:
        """dataclasses.replace for a CallRecord in half the time: the call book makes one or two
        per event it folds."""
        values = list(_VALUES(record))
        for name, value in changes.items():
            values[_INDEX[name]] = value
        return CallRecord(*values)


_DIAL_OUTCOMES = {
    "BUSY": AttemptOutcome.BUSY,
    "CONGESTION": AttemptOutcome.BUSY,
    "CHANUNAVAIL": AttemptOutcome.BUSY,
    "NOANSWER": AttemptOutcome.NOANSWER,
    "CANCEL": AttemptOutcome.CANCELED,
}
# QUEUESTATUS values (app_queue.c:286-296) reported by the dialplan's QueueResult UserEvent.
_REFUSALS = frozenset({"JOINEMPTY", "JOINUNAVAIL", "FULL"})
_EXITS = {
    "TIMEOUT": Outcome.TIMEOUT,
    "LEAVEEMPTY": Outcome.LEAVEEMPTY,
    "LEAVEUNAVAIL": Outcome.LEAVEEMPTY,
    "WITHDRAW": Outcome.ROLLOVER,
}

# DIALSTATUS of the dialplan's Dial to the partner centre (app_dial), as the PartnerResult
# UserEvent reports it. INVALIDARGS is a rollover destination that cannot be dialled at all.
_PARTNER_RESULTS = {
    "ANSWER": PartnerResult.ANSWERED,
    "BUSY": PartnerResult.BUSY,
    "NOANSWER": PartnerResult.NOANSWER,
    "CONGESTION": PartnerResult.CONGESTION,
    "CHANUNAVAIL": PartnerResult.UNAVAILABLE,
    "INVALIDARGS": PartnerResult.UNAVAILABLE,
    "CANCEL": PartnerResult.CANCELED,
}
# The UserEvents our dialplan raises (docs/asterisk-ami.md), read only as UserEvents.
_USER_EVENTS = frozenset({"QueueResult", "QueueRollover", "PartnerResult"})

_OPEN, _ANSWERED, _UNKNOWN, _FINAL = 1, 2, 3, 4

_Key = tuple[str, str]  # (caller uniqueid, queue)


def _minus(at: datetime | None, seconds: float | None) -> datetime | None:
    if at is None or seconds is None:
        return None
    try:
        return at - timedelta(seconds=seconds)
    except OverflowError:  # an instant near datetime.min: better no value than a crash
        return None


def _between(start: datetime | None, end: datetime) -> float | None:
    """Seconds from start to end; never negative, since reordered events can invert them."""
    if start is None:
        return None
    return max(0.0, (end - start).total_seconds())


class _Call:
    """One visit. `record` is its CallRecord as of the last change: replaced, never mutated, so a
    snapshot handed out stays as it was. The ring attempts are worked on in a list that `_emit`
    copies into the record; the rest is working state that is not stored."""

    __slots__ = (
        "abandon_at",
        "attempts",
        "dests",
        "join_at",
        "joined",
        "last_event_at",
        "provisional",
        "record",
        "refused",
        "touched_at",
    )

    def __init__(self, record: CallRecord, at: datetime | None) -> None:
        self.record = record
        self.attempts = list(record.attempts)
        # Whether this visit's QueueCallerJoin has been applied, and its instant (to spot a
        # duplicate). A visit first seen through a later event waits for its late join.
        self.joined = False
        self.join_at: datetime | None = None
        self.refused = False
        # A QueueCallerAbandon seen, not yet known to be a hangup rather than an exit.
        self.provisional = False
        self.abandon_at: datetime | None = None
        self.dests: dict[str, int] = {}  # DestUniqueid -> index in attempts
        self.last_event_at = at  # for the stale timer
        self.touched_at = at  # for forgetting closed records

    @property
    def is_open(self) -> bool:
        return self.record.rank <= _ANSWERED

    def seen(self, at: datetime) -> None:
        if self.last_event_at is None or at > self.last_event_at:
            self.last_event_at = at

    def take_caller(self, fields: Mapping[str, str]) -> None:
        """Campaign and caller pseudonym, as QueueCallerJoin and QueueResult carry them."""
        withheld = field_text(fields, "CallerWithheld") == "1"
        self.record = replace(
            self.record,
            campaign=field_text(fields, "Campaign"),
            caller_withheld=withheld,
            caller_key=None if withheld else field_text(fields, "CallerKey"),
            caller_key_id=None if withheld else field_text(fields, "CallerKeyId"),
        )

    def find_attempt(self, dest: str | None, responder: str, *states: AttemptOutcome) -> int | None:
        """The attempt rung on `dest` if known, else the latest one of `responder` in `states`."""
        if dest is not None and dest in self.dests:
            return self.dests[dest]
        for index in range(len(self.attempts) - 1, -1, -1):
            attempt = self.attempts[index]
            if attempt.responder == responder and attempt.outcome in states:
                return index
        return None

    def set_attempt(self, index: int, outcome: AttemptOutcome, ring_ms: int | None) -> None:
        old = self.attempts[index]
        self.attempts[index] = RingAttempt(old.responder, old.rang_at, outcome, ring_ms)

    def add_attempt(
        self,
        responder: str,
        rang_at: datetime,
        outcome: AttemptOutcome,
        dest: str | None = None,
        ring_ms: int | None = None,
    ) -> None:
        if dest is not None:
            self.dests[dest] = len(self.attempts)
        self.attempts.append(RingAttempt(responder, rang_at, outcome, ring_ms))

    def cancel_ringing(self, keep: int | None = None) -> None:
        for index, attempt in enumerate(self.attempts):
            if index != keep and attempt.outcome is AttemptOutcome.RINGING:
                self.set_attempt(index, AttemptOutcome.CANCELED, attempt.ring_ms)

    def finish(self, outcome: Outcome, ended_at: datetime) -> None:
        rank = _UNKNOWN if outcome is Outcome.UNKNOWN else _FINAL
        self.record = replace(self.record, outcome=outcome, ended_at=ended_at, rank=rank)
        self.provisional = False
        self.cancel_ringing()


class CallBook:
    """Folds app_queue events into one CallRecord per (caller uniqueid, queue, visit).

    `feed`, `tick` and `resync` return the snapshots of the records they changed, each with a
    higher revision than the last; the store upserts them forward-only by (rank, revision).
    """

    # The events `feed` reads: QueueResult, QueueRollover and PartnerResult come as UserEvents.
    EVENTS: frozenset[EventName] = frozenset(
        {
            "QueueCallerJoin", "AgentCalled", "DialEnd", "AgentRingNoAnswer", "AgentConnect",
            "AgentComplete", "AgentDump", "QueueCallerAbandon", "QueueCallerLeave", "Hangup",
            "UserEvent",
        }
    )  # fmt: skip

    def __init__(
        self,
        *,
        abandon_grace_s: float = 5.0,
        stale_after_s: float = 6 * 3600,
        keep_closed_s: float = 4 * 3600,
        upstream_rollover_after_s: float | None = None,
        upstream_tolerance_s: float = 2.0,
    ) -> None:
        self._grace = timedelta(seconds=abandon_grace_s)
        self._stale = timedelta(seconds=stale_after_s)
        self._keep = timedelta(seconds=keep_closed_s)
        self._upstream = upstream_rollover_after_s
        self._tolerance = upstream_tolerance_s
        self._calls: dict[_Key, _Call] = {}  # the latest visit of each (uniqueid, queue)
        self._queues_of: dict[str, list[str]] = {}  # Hangup and DialEnd carry no Queue
        self._dests: dict[str, _Call] = {}  # member leg -> the call it was rung for
        self._handlers: dict[str, Callable[[Mapping[str, str], datetime], list[CallRecord]]] = {
            "QueueCallerJoin": self._join,
            "AgentCalled": self._called,
            "DialEnd": self._dial_end,
            "AgentRingNoAnswer": self._ring_no_answer,
            "AgentConnect": self._connect,
            "AgentComplete": self._complete,
            "AgentDump": self._dump,
            "QueueCallerAbandon": self._abandon,
            "QueueCallerLeave": self._leave,
            "Hangup": self._hangup,
            "QueueResult": self._queue_result,
            "QueueRollover": self._rollover,
            "PartnerResult": self._partner,
        }

    @property
    def open_count(self) -> int:
        return sum(1 for call in self._calls.values() if call.is_open)

    def feed(self, name: str, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        """Apply one AMI event; return the snapshots of the records it changed, in order."""
        if name == "UserEvent":
            name = field_text(fields, "UserEvent") or ""
            if name not in _USER_EVENTS:
                return []
        elif name in _USER_EVENTS:
            return []  # only ever meaningful as UserEvents raised by our dialplan
        handler = self._handlers.get(name)
        return handler(fields, aware(at)) if handler is not None else []

    def tick(self, now: datetime) -> list[CallRecord]:
        """Finalise provisional abandons past the grace period, close stale records as UNKNOWN,
        and forget closed records nobody has touched for keep_closed_s."""
        now = aware(now)
        changed: list[CallRecord] = []
        for call in list(self._calls.values()):
            if call.is_open:
                if call.last_event_at is None:
                    call.last_event_at = now  # restored without any instant: start the timer
                if (
                    call.provisional
                    and call.abandon_at is not None
                    and now - call.abandon_at >= self._grace
                ):
                    self._settle_abandon(call, call.abandon_at)
                    changed.append(self._emit(call, now))
                elif now - call.last_event_at >= self._stale:
                    call.finish(Outcome.UNKNOWN, now)
                    changed.append(self._emit(call, now))
            elif call.touched_at is None or now - call.touched_at >= self._keep:
                self._forget(call)
        return changed

    def restore(self, records: Iterable[CallRecord]) -> None:
        """Continue records read back from the database after a restart (visit, rank and
        revision kept, so the next snapshot of each supersedes the stored row).

        Open records are what must be continued; passing the records closed within
        keep_closed_s as well lets a late event for one of them be recognised rather than
        start a new record. Member legs are not stored, so a DialEnd for an attempt rung before
        the restart is not matched (AgentRingNoAnswer and AgentConnect still are, by name).
        """
        for record in records:
            key = (record.uniqueid, record.queue)
            current = self._calls.get(key)
            if current is not None and (
                current.record.visit,
                current.record.rank,
                current.record.revision,
            ) >= (record.visit, record.rank, record.revision):
                continue
            call = _Call(record, None)
            call.joined = True
            call.join_at = record.entered_at
            # Only a QueueCallerAbandon gives an open, unanswered record its wait.
            call.provisional = record.outcome is None and (
                record.answered_at is None and record.wait_s is not None
            )
            if call.provisional:  # the abandon happened wait_s after entry
                call.abandon_at = _minus(record.entered_at, -(record.wait_s or 0.0))
            instants = [
                t for t in (record.entered_at, record.answered_at, record.ended_at) if t is not None
            ] + [attempt.rang_at for attempt in record.attempts]
            call.last_event_at = call.touched_at = max(instants, default=None)
            self._install(call)

    def resync(self, waiting: Iterable[tuple[str, str]], now: datetime) -> list[CallRecord]:
        """After an AMI (re)connect: close every open record Asterisk no longer reports waiting
        as UNKNOWN (it ended while we were away), and open a record for every waiting caller we
        have no open record for (it joined while we were away)."""
        now = aware(now)
        present = {(queue, uniqueid) for queue, uniqueid in waiting if queue and uniqueid}
        changed: list[CallRecord] = []
        for call in list(self._calls.values()):
            if not call.is_open:
                continue
            if (call.record.queue, call.record.uniqueid) in present:
                call.seen(now)  # alive now: restarts its stale timer
            else:
                call.finish(Outcome.UNKNOWN, now)
                changed.append(self._emit(call, now))
        for queue, uniqueid in sorted(present):
            current = self._calls.get((uniqueid, queue))
            if current is None or not current.is_open:
                call = self._open(uniqueid, queue, current, now)
                changed.append(self._emit(call, now))
        return changed

    # -- bookkeeping -------------------------------------------------------------------------

    def _emit(self, call: _Call, at: datetime) -> CallRecord:
        call.record = replace(
            call.record, attempts=tuple(call.attempts), revision=call.record.revision + 1
        )
        call.seen(at)
        if call.touched_at is None or at > call.touched_at:
            call.touched_at = at
        return call.record

    def _install(self, call: _Call) -> None:
        key = (call.record.uniqueid, call.record.queue)
        old = self._calls.get(key)
        if old is not None:
            self._drop_dests(old)
        else:
            self._queues_of.setdefault(key[0], []).append(key[1])
        self._calls[key] = call

    def _open(self, uniqueid: str, queue: str, previous: _Call | None, at: datetime) -> _Call:
        """A new visit after `previous` (None: the first one), installed as the latest."""
        visit = 1 if previous is None else previous.record.visit + 1
        call = _Call(CallRecord(uniqueid, queue, visit), at)
        self._install(call)
        return call

    def _drop_dests(self, call: _Call) -> None:
        for dest in call.dests:
            if self._dests.get(dest) is call:
                del self._dests[dest]

    def _forget(self, call: _Call) -> None:
        self._drop_dests(call)
        uniqueid, queue = call.record.uniqueid, call.record.queue
        del self._calls[(uniqueid, queue)]
        queues = self._queues_of[uniqueid]
        queues.remove(queue)
        if not queues:
            del self._queues_of[uniqueid]

    def _call_for(self, fields: Mapping[str, str], at: datetime) -> _Call | None:
        """The latest visit the event names, created if unknown: a queue event is evidence of a
        call even when its join was lost or happened while we were away."""
        uniqueid, queue = field_text(fields, "Uniqueid"), field_text(fields, "Queue")
        if uniqueid is None or queue is None:
            return None
        call = self._calls.get((uniqueid, queue))
        if call is None:
            call = self._open(uniqueid, queue, None, at)
        call.seen(at)
        return call

    def _abandon_outcome(self, wait_s: float | None) -> Outcome:
        """A caller hangup is a rollover when its wait matches the upstream network's timer:
        the network pulled the call to a backup centre (docs/metrics.md, "Upstream rollover")."""
        if (
            self._upstream is not None
            and wait_s is not None
            and abs(wait_s - self._upstream) <= self._tolerance
        ):
            return Outcome.ROLLOVER
        return Outcome.ABANDONED

    def _settle_abandon(self, call: _Call, ended_at: datetime) -> None:
        call.finish(self._abandon_outcome(call.record.wait_s), ended_at)

    # -- event handlers ----------------------------------------------------------------------

    def _join(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        uniqueid, queue = field_text(fields, "Uniqueid"), field_text(fields, "Queue")
        if uniqueid is None or queue is None:
            return []
        changed: list[CallRecord] = []
        previous = self._calls.get((uniqueid, queue))
        if previous is not None:
            previous.seen(at)
            if previous.joined and previous.join_at == at:
                return []  # the same event twice
            if not previous.joined and not previous.refused:
                if previous.is_open:
                    # Its later events came first: this join belongs to the same visit.
                    self._apply_join(previous, fields, at)
                    return [self._emit(previous, at)]
                ended_at = previous.record.ended_at
                if ended_at is not None and at <= ended_at:
                    # Late join of a visit already closed: closed records do not change.
                    previous.joined, previous.join_at = True, at
                    return []
            if previous.is_open:
                # Re-entry while the old visit looks open: its end was lost.
                previous.finish(Outcome.UNKNOWN, at)
                changed.append(self._emit(previous, at))
        call = self._open(uniqueid, queue, previous, at)
        self._apply_join(call, fields, at)
        changed.append(self._emit(call, at))
        return changed

    @staticmethod
    def _apply_join(call: _Call, fields: Mapping[str, str], at: datetime) -> None:
        call.joined, call.join_at = True, at
        call.record = replace(call.record, entered_at=at, position=field_count(fields, "Position"))
        call.take_caller(fields)

    def _called(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        dest = field_text(fields, "DestUniqueid")
        if dest is not None and dest in self._dests:
            return []  # a repeat: one member leg is rung once
        call = self._call_for(fields, at)
        if call is None or not call.is_open:
            return []
        responder = _responder(fields)
        if any(a.responder == responder and a.rang_at == at for a in call.attempts):
            return []
        if call.record.rank == _OPEN:
            outcome = AttemptOutcome.RINGING
        elif responder != call.record.answered_by:
            outcome = AttemptOutcome.CANCELED  # reported late: answered elsewhere meanwhile
        else:
            return []
        call.add_attempt(responder, at, outcome, dest)
        if dest is not None:
            self._dests[dest] = call
        return [self._emit(call, at)]

    def _dial_end(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        dest = field_text(fields, "DestUniqueid")
        call = self._dests.get(dest) if dest is not None else None
        if call is None or dest is None or not call.is_open:
            return []
        call.seen(at)
        outcome = _DIAL_OUTCOMES.get((field_text(fields, "DialStatus") or "").upper())
        index = call.dests[dest]
        if outcome is None or call.attempts[index].outcome is not AttemptOutcome.RINGING:
            return []  # ANSWER is AgentConnect's to record; a settled attempt stays settled
        call.set_attempt(index, outcome, call.attempts[index].ring_ms)
        return [self._emit(call, at)]

    def _ring_no_answer(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        call = self._call_for(fields, at)
        if call is None or not call.is_open:
            return []
        responder = _responder(fields)
        ring_ms = field_count(fields, "RingTime")  # milliseconds in this event
        dest = field_text(fields, "DestUniqueid")
        index = call.find_attempt(dest, responder, AttemptOutcome.RINGING)
        if index is None:
            # DialEnd NOANSWER may have come first and left the ring time to fill in.
            index = next(
                (
                    i
                    for i in range(len(call.attempts) - 1, -1, -1)
                    if call.attempts[i].responder == responder
                    and call.attempts[i].outcome is AttemptOutcome.NOANSWER
                    and call.attempts[i].ring_ms is None
                ),
                None,
            )
        if index is None:
            rang_at = _minus(at, ring_ms / 1000 if ring_ms is not None else 0) or at
            call.add_attempt(responder, rang_at, AttemptOutcome.NOANSWER, dest, ring_ms)
            if dest is not None:
                self._dests[dest] = call
            return [self._emit(call, at)]
        attempt = call.attempts[index]
        if attempt.outcome is AttemptOutcome.RINGING or (
            attempt.outcome is AttemptOutcome.NOANSWER
            and attempt.ring_ms is None
            and ring_ms is not None
        ):
            call.set_attempt(index, AttemptOutcome.NOANSWER, ring_ms)
            return [self._emit(call, at)]
        return []

    def _connect(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        call = self._call_for(fields, at)
        if call is None or call.record.rank != _OPEN:
            return []
        responder = _responder(fields)
        hold = field_count(fields, "HoldTime")
        ring_s = field_count(fields, "RingTime")  # seconds in this event
        ring_ms = ring_s * 1000 if ring_s is not None else None
        entered_at = call.record.entered_at
        if entered_at is None:
            entered_at = _minus(at, hold)
        call.record = replace(
            call.record,
            entered_at=entered_at,
            answered_at=at,
            answered_by=responder or None,
            wait_s=float(hold) if hold is not None else _between(entered_at, at),
            rank=_ANSWERED,
        )
        call.provisional, call.abandon_at = False, None
        index = call.find_attempt(
            field_text(fields, "DestUniqueid"), responder, AttemptOutcome.RINGING
        )
        if index is None:
            rang_at = _minus(at, ring_s) or at
            call.add_attempt(responder, rang_at, AttemptOutcome.ANSWERED, None, ring_ms)
            index = len(call.attempts) - 1
        else:
            kept = ring_ms if ring_ms is not None else call.attempts[index].ring_ms
            call.set_attempt(index, AttemptOutcome.ANSWERED, kept)
        call.cancel_ringing(keep=index)
        return [self._emit(call, at)]

    def _complete(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        call = self._call_for(fields, at)
        if call is None or call.record.rank == _FINAL:
            return []
        record = call.record
        responder = _responder(fields)
        hold = field_count(fields, "HoldTime")
        talk = field_count(fields, "TalkTime")
        answered_at = record.answered_at
        if answered_at is None:
            answered_at = _minus(at, talk)
        answered_by = record.answered_by
        if answered_by is None:
            answered_by = responder or None
        responder = answered_by or responder
        entered_at = record.entered_at
        if entered_at is None:
            entered_at = _minus(answered_at, hold)
        wait_s = record.wait_s
        if hold is not None:
            wait_s = float(hold)
        elif wait_s is None and answered_at is not None:
            wait_s = _between(entered_at, answered_at)
        call.record = replace(
            record,
            answered_at=answered_at,
            answered_by=answered_by,
            entered_at=entered_at,
            wait_s=wait_s,
            talk_s=float(talk) if talk is not None else _between(answered_at, at),
        )
        if not any(a.outcome is AttemptOutcome.ANSWERED for a in call.attempts):
            index = call.find_attempt(
                field_text(fields, "DestUniqueid"), responder, AttemptOutcome.RINGING
            )
            if index is None:
                call.add_attempt(responder, answered_at or at, AttemptOutcome.ANSWERED)
            else:
                call.set_attempt(index, AttemptOutcome.ANSWERED, call.attempts[index].ring_ms)
        transferred = (field_text(fields, "Reason") or "").lower() == "transfer"
        call.finish(Outcome.TRANSFERRED if transferred else Outcome.ANSWERED, at)
        return [self._emit(call, at)]

    def _dump(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        call = self._call_for(fields, at)
        if call is None or call.record.rank != _OPEN:
            return []
        responder = _responder(fields)
        dest = field_text(fields, "DestUniqueid")
        index = call.find_attempt(dest, responder, AttemptOutcome.RINGING)
        if index is None:
            call.add_attempt(responder, at, AttemptOutcome.CANCELED, dest)
            if dest is not None:
                self._dests[dest] = call
        elif call.attempts[index].outcome is AttemptOutcome.RINGING:
            call.set_attempt(index, AttemptOutcome.CANCELED, call.attempts[index].ring_ms)
        else:
            return []
        return [self._emit(call, at)]

    def _abandon(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        call = self._call_for(fields, at)
        if call is None or call.record.rank != _OPEN or call.provisional:
            return []
        hold = field_count(fields, "HoldTime")
        entered_at, position = call.record.entered_at, call.record.position
        if entered_at is None:
            entered_at = _minus(at, hold)
        if position is None:
            position = field_count(fields, "OriginalPosition")
        # Provisional: Asterisk raises this for a hangup and for timeout, leaveempty and
        # withdraw alike (docs/asterisk-ami.md, "Abandon versus exit"); Hangup, QueueResult or
        # the grace decide.
        call.provisional, call.abandon_at = True, at
        call.record = replace(
            call.record,
            entered_at=entered_at,
            position=position,
            wait_s=float(hold) if hold is not None else _between(entered_at, at),
        )
        return [self._emit(call, at)]

    def _leave(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        uniqueid, queue = field_text(fields, "Uniqueid"), field_text(fields, "Queue")
        call = self._calls.get((uniqueid, queue)) if uniqueid and queue else None
        if call is not None:
            call.seen(at)  # no outcome by itself, but the call is alive
        return []

    def _hangup(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        uniqueid = field_text(fields, "Uniqueid")
        queues = self._queues_of.get(uniqueid) if uniqueid is not None else None
        if uniqueid is None or not queues:
            return []  # Hangup fires for every channel, most of them no caller of ours
        changed: list[CallRecord] = []
        for queue in list(queues):
            call = self._calls[(uniqueid, queue)]
            record = call.record
            if record.rank == _OPEN:
                if call.provisional:
                    self._settle_abandon(call, call.abandon_at or at)
                else:  # the QueueCallerAbandon was lost
                    if record.entered_at is not None:
                        call.record = replace(record, wait_s=_between(record.entered_at, at))
                    call.finish(self._abandon_outcome(call.record.wait_s), at)
            elif record.answered_at is not None and record.rank in (_ANSWERED, _UNKNOWN):
                # AgentComplete lost (or not yet seen: it travels on the queue's topic).
                call.record = replace(record, talk_s=_between(record.answered_at, at))
                call.finish(Outcome.ANSWERED, at)
            else:
                # Closed, or closed UNKNOWN unanswered: a hangup after an outage proves nothing
                # about how the call left the queue.
                continue
            changed.append(self._emit(call, at))
        return changed

    def _queue_result(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        uniqueid, queue = field_text(fields, "Uniqueid"), field_text(fields, "Queue")
        status = (field_text(fields, "Status") or "").upper()
        if uniqueid is None or queue is None:
            return []
        previous = self._calls.get((uniqueid, queue))
        if status in _REFUSALS:
            # Asterisk raises no queue event for a refused join
            # (docs/asterisk-ami.md, "Refused joins and the QueueResult UserEvent"): this
            # is the only trace, and it is a visit of its own.
            changed: list[CallRecord] = []
            if previous is not None:
                previous.seen(at)
                if previous.refused and previous.record.entered_at == at:
                    return []  # the same event twice
                if previous.is_open:
                    previous.finish(Outcome.UNKNOWN, at)
                    changed.append(self._emit(previous, at))
            call = self._open(uniqueid, queue, previous, at)
            call.joined, call.join_at, call.refused = True, at, True
            call.record = replace(call.record, entered_at=at, wait_s=0.0)
            call.take_caller(fields)
            call.finish(Outcome.JOINEMPTY, at)
            changed.append(self._emit(call, at))
            return changed
        outcome = _EXITS.get(status)
        if outcome is None:
            return []  # CONTINUE follows an answered call; anything else is not ours
        call = previous if previous is not None else self._open(uniqueid, queue, None, at)
        call.seen(at)
        if call.record.rank == _FINAL or call.record.answered_at is not None:
            return []  # an answer is the stronger fact
        if call.record.campaign is None and call.record.caller_key is None:
            call.take_caller(fields)
        if call.record.wait_s is None:
            call.record = replace(call.record, wait_s=_between(call.record.entered_at, at))
        call.finish(outcome, at)
        return [self._emit(call, at)]

    def _rollover(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        uniqueid, queue = field_text(fields, "Uniqueid"), field_text(fields, "Queue")
        call = self._calls.get((uniqueid, queue)) if uniqueid and queue else None
        if call is None or call.record.rolled_over:
            return []
        # One of the changes a closed record still takes (the other: the partner's result).
        call.record = replace(call.record, rolled_over=True)
        return [self._emit(call, at)]

    def _partner(self, fields: Mapping[str, str], at: datetime) -> list[CallRecord]:
        """The partner centre's result for the visit that rolled over to it, raised by the
        dialplan once its Dial ends (docs/asterisk-ami.md, "The partner centre's result"). An
        answer there makes an unanswered visit a `rollover`; any other result leaves its outcome
        as the queue decided, and the caller's return to the queue is a visit of its own."""
        uniqueid, queue = field_text(fields, "Uniqueid"), field_text(fields, "Queue")
        result = _PARTNER_RESULTS.get((field_text(fields, "Status") or "").upper())
        call = self._calls.get((uniqueid, queue)) if uniqueid and queue else None
        if call is None or result is None or call.record.partner_result is not None:
            return []  # one partner call per visit: a result, once reported, stands
        if call.record.answered_at is not None:
            return []  # answered here: the dialplan never rolls such a visit over
        call.seen(at)
        call.record = replace(call.record, partner_result=result, rolled_over=True)
        if result is PartnerResult.ANSWERED:
            if call.is_open:
                if call.record.wait_s is None:
                    wait_s = _between(call.record.entered_at, at)
                    call.record = replace(call.record, wait_s=wait_s)
                call.finish(Outcome.ROLLOVER, at)
            else:  # closed as the queue left it: the visit ended there, at the partner
                call.record = replace(call.record, outcome=Outcome.ROLLOVER, rank=_FINAL)
        return [self._emit(call, at)]


def _responder(fields: Mapping[str, str]) -> str:
    return field_text(fields, "MemberName") or field_text(fields, "Interface") or ""
