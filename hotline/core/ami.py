"""What every layer may know of Asterisk's manager interface (AMI): the values a link hands out
(events, replies, link changes) and one set of readers for event fields. No I/O: the connection
itself is `hotline.adapters.ami`."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

# The events hotline reads, each counted by name (any other is counted as "other"). The queue
# events come from app_queue; QueueResult and QueueRollover only ever as UserEvents raised by the
# shipped dialplan (docs/asterisk-ami.md, "Refused joins and the QueueResult UserEvent").
EventName = Literal[
    "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled",
    "AgentRingNoAnswer", "AgentConnect", "AgentComplete", "AgentDump", "DialEnd", "Hangup",
    "UserEvent", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause",
    "QueueMemberPenalty", "QueueMemberStatus", "QueueMemberRinginuse", "FullyBooted", "Reload",
    "Shutdown", "ContactStatus",
]  # fmt: skip
EVENT_NAMES: frozenset[str] = frozenset(get_args(EventName))
# The actions hotline sends (Login aside); any other is reported as "other".
ActionName = Literal[
    "Ping", "QueueAdd", "QueueRemove", "QueuePenalty", "QueuePause", "QueueStatus"
]  # fmt: skip
# Where a link is in its life: only "live" (logged in, Asterisk fully booted) carries actions.
LinkState = Literal["disconnected", "connecting", "authenticating", "waiting_fullybooted", "live"]
# How a connection attempt ended ("tls_failed": the TLS handshake, or Asterisk's certificate).
ConnectResult = Literal[
    "success", "timeout", "refused", "tls_failed", "auth_failed", "disconnected"
]  # fmt: skip
# Why an action was refused before it was sent: a CR, LF or NUL in a header's name or value
# would end the header and start another one; a lone surrogate cannot be encoded as UTF-8.
RefusedReason = Literal["crlf", "unencodable"]
# Why a live link ended: Asterisk's Shutdown event, the peer closed, two missed Pings, our close.
DisconnectReason = Literal["shutdown_event", "eof", "ping_timeout", "local"]


class Result(enum.Enum):
    SUCCESS = "success"
    ALREADY = "already"
    ERROR = "error"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class Reply:
    result: Result
    message: str = ""
    items: tuple[Mapping[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.result in (Result.SUCCESS, Result.ALREADY)


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    fields: Mapping[str, str]
    received: float  # the link's monotonic clock at receipt


@dataclass(frozen=True, slots=True)
class LinkUp:
    """Logged in and Asterisk fully booted: state must be re-read."""

    uptime_s: float | None


@dataclass(frozen=True, slots=True)
class LinkDown:
    reason: DisconnectReason


Inbound = Event | LinkUp | LinkDown
# Applied to every event and list item before it leaves the link (the privacy allow-list).
Scrub = Callable[[Mapping[str, str]], dict[str, str]]

_COUNT = re.compile(r"[0-9]{1,9}")


def field_text(fields: Mapping[str, str], name: str) -> str | None:
    """A field's value, stripped; None when it is missing or blank."""
    value = fields.get(name)
    if isinstance(value, str):
        value = value.strip()
        if value:
            return value
    return None


def field_count(fields: Mapping[str, str], name: str) -> int | None:
    """A small non-negative integer field (seconds, positions); None for anything else."""
    value = field_text(fields, name)
    return int(value) if value is not None and _COUNT.fullmatch(value) else None


def field_flag(fields: Mapping[str, str], name: str) -> bool | None:
    """Asterisk's 0/1 flags; anything else is no information."""
    value = field_text(fields, name)
    return True if value == "1" else False if value == "0" else None


def field_number(fields: Mapping[str, str], name: str) -> float | None:
    """A finite number of plausible size; None when missing or not one."""
    value = fields.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and abs(number) < 1e12 else None


def aware(at: datetime) -> datetime:
    """An instant with a zone: naive ones are taken as UTC."""
    return at if at.utcoffset() is not None else at.replace(tzinfo=UTC)
