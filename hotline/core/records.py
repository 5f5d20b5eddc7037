"""The records hotline keeps, each declared once: a caller's visit to a queue (CallRecord, with its
ring attempts), a member's stay in a queue (MemberSession) and a pause (PauseInterval); and the
vocabulary of the pipeline that stores them, for what reports it (the call ledger, the Postgres
store) and for the metrics that count it.

These dataclasses are the only list of their fields. The call book's working state holds a
CallRecord, and the store derives the spool's JSON, the table columns and the row mapping from
`dataclasses.fields` (hotline/adapters/store/codec.py): adding a field is this declaration and a
migration. A field with a default also lets records spooled before the change be read back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args


class Outcome(enum.Enum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"  # the caller hung up while waiting
    TIMEOUT = "timeout"  # left by the queue's maximum wait, into the overflow branch
    # Taken by a backup centre: withdrawn to one by the upstream network, or answered by the
    # partner centre the dialplan rolled the call over to (partner_result ANSWERED).
    ROLLOVER = "rollover"
    JOINEMPTY = "joinempty"  # refused at join: nobody staffed
    LEAVEEMPTY = "leaveempty"  # left because nobody was staffed any more
    TRANSFERRED = "transferred"
    UNKNOWN = "unknown"  # the daemon or AMI was away when it ended


class AttemptOutcome(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    NOANSWER = "noanswer"
    BUSY = "busy"
    CANCELED = "canceled"  # the call ended or was answered elsewhere while this one rang


class PartnerResult(enum.Enum):
    """How the dialplan's call to the partner centre ended (its DIALSTATUS), reported by the
    PartnerResult UserEvent (docs/asterisk-ami.md, "The partner centre's result")."""

    ANSWERED = "answered"
    BUSY = "busy"
    NOANSWER = "noanswer"  # rang for the whole ring time
    CONGESTION = "congestion"  # the trunk or the network refused the call
    UNAVAILABLE = "unavailable"  # not dialled at all: trunk unreachable or badly configured
    CANCELED = "canceled"  # the caller hung up while the partner rang


@dataclass(frozen=True, slots=True)
class RingAttempt:
    responder: str  # MemberName: the responder id
    rang_at: datetime
    outcome: AttemptOutcome
    ring_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One caller's visit to one queue. Natural key: (uniqueid, queue, visit). The defaults are
    a visit just opened, of which nothing is known yet."""

    uniqueid: str  # the caller channel's Uniqueid
    queue: str
    visit: int  # 1 for the first entry of this channel into this queue, 2 for a re-entry...
    entered_at: datetime | None = None  # aware, UTC
    position: int | None = None  # position at entry
    campaign: str | None = None  # the number dialled / line the call came in on
    caller_key: str | None = None  # keyed pseudonym of the caller's number; None if withheld
    caller_key_id: str | None = None  # which key made caller_key (for rotation)
    caller_withheld: bool = False
    attempts: tuple[RingAttempt, ...] = ()
    answered_at: datetime | None = None
    answered_by: str | None = None  # responder id
    wait_s: float | None = None
    talk_s: float | None = None
    ended_at: datetime | None = None
    outcome: Outcome | None = None  # None while the call is open
    rolled_over: bool = False  # the dialplan sent it on to the partner centre
    # Forward-only upserts: a stored row is replaced only by a record with a higher
    # (rank, revision). rank: 1 open, 2 answered, 3 closed unknown, 4 closed with a true outcome.
    rank: int = 1
    revision: int = 0
    # The dialplan's call to the partner centre after this visit; None when none was reported.
    # Last, so records built from positional values before it existed still are.
    partner_result: PartnerResult | None = None


# Why a member joined or left a queue.
# override: a supervisor's; surge: a standby responder added or released for a surge;
# certification: a certification the queue requires lapsed.
JoinReason = Literal[
    "shift", "exception", "override", "surge", "drift_repair", "asterisk_restart", "restored",
    "external",
]  # fmt: skip
LeaveReason = Literal[
    "shift", "exception", "override", "surge", "certification", "drift", "asterisk_restart",
    "external", "unknown",
]  # fmt: skip
JOIN_REASONS: Final[tuple[JoinReason, ...]] = get_args(JoinReason)
LEAVE_REASONS: Final[tuple[LeaveReason, ...]] = get_args(LeaveReason)

PausedBy = Literal["hotline", "external"]


@dataclass(frozen=True, slots=True)
class MemberSession:
    """A member's stay in a queue. Natural key: (queue, interface, joined_at)."""

    queue: str
    responder: str  # MemberName
    interface: str
    joined_at: datetime
    left_at: datetime | None
    join_reason: JoinReason
    leave_reason: LeaveReason | None  # None while present
    revision: int


@dataclass(frozen=True, slots=True)
class PauseInterval:
    """A pause of a member in a queue. Natural key: (queue, interface, started_at)."""

    queue: str
    responder: str
    interface: str
    started_at: datetime
    ended_at: datetime | None
    reason: str  # Asterisk's PausedReason, e.g. "Auto-Pause" or a supervisor's text
    paused_by: PausedBy
    revision: int


Record = CallRecord | MemberSession | PauseInterval

# The tables records are written to.
Table = Literal["calls", "member_sessions", "pauses"]
# What a timed write does: an upsert into one table, or the retention purge.
WriteOp = Literal[Table, "purge"]
# How a write failed: the connection broke, it timed out, Postgres refused the data, or anything
# else (a bug or a database set up wrongly).
WriteErrorKind = Literal["connection", "timeout", "constraint", "other"]
# Why records were lost: the spool had no room (spool_full), the disk under it had none (disk_full:
# ENOSPC, or any failed write, once memory could hold no more), or they were unusable (a caller
# event without Queue or Uniqueid, a record the dead-letter file had no room for).
DropReason = Literal["spool_full", "disk_full", "invalid"]
# Why the store set a record aside in its dead letters rather than write it: Postgres refused it
# (constraint), it could not be turned into a row or a spool line (encode), or a spool line was
# JSON but not a record (decode) or not a JSON object at all (unreadable: torn by a crash, damaged).
DeadLetterReason = Literal["constraint", "encode", "decode", "unreadable"]
