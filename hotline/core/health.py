"""What every layer may know of the daemon's health surface: the reasons a component gives for not
being ready, and the words the HTTP listener uses for connections it sheds. No I/O: the listener
itself is `hotline.adapters.http` (docs/http.md).

A reason is public (`/readyz` answers anyone who can reach the port), so it is a stable code and a
fixed sentence, never an error's own text: a connection error, a host, a schema name or a
Postgres message go to the log, where the component wrote them when they happened.
"""

from __future__ import annotations

import enum
from typing import Literal


class NotReady(enum.Enum):
    """A reason not to be ready: `code` for scripts and alerts, `text` for people."""

    AMI_NOT_LIVE = ("ami_not_live", "The link to Asterisk's manager interface is not live.")
    MEMBERSHIP_NOT_IN_SYNC = (
        "membership_not_in_sync",
        "Queue membership in Asterisk may differ from the roster.",
    )
    POSTGRES_UNREACHABLE = (
        "postgres_unreachable",
        "Postgres cannot be reached; call records are kept in memory or spooled.",
    )
    POSTGRES_SCHEMA_UNKNOWN = (
        "postgres_schema_unknown",
        "The database schema is not one this version knows; call records are spooled.",
    )
    POSTGRES_REFUSES_WRITES = (
        "postgres_refuses_writes",
        "Postgres refuses to write call records; they are spooled.",
    )
    SPOOL_BACKLOG = ("spool_backlog", "Call records wait in the spool to be written to Postgres.")
    SPOOL_FULL = (
        "spool_full",
        "The spool is full or its disk refuses writes: call records may be lost.",
    )
    OVERRIDES_NOT_LOADED = (
        "overrides_not_loaded",
        "The supervisors' overrides could not be read from Postgres yet; membership follows the"
        " roster alone.",
    )

    NO_PHONE_REACHABLE = (
        "no_phone_reachable",
        "Responders are on shift, but not one of their phones can be reached.",
    )
    PHONES_REFUSE_CALLS = (
        "phones_refuse_calls",
        "Every on-shift phone that can be reached refuses the calls it is offered (no SRTP?).",
    )

    def __init__(self, code: str, text: str) -> None:
        self.code = code
        self.text = text


# Why the HTTP listener closed a connection early: the connection limit was reached (closed as
# soon as accepted), no complete request head came in time, or the client stopped reading a
# response for longer than the idle timeout.
ShedReason = Literal["limit", "header_timeout", "write_stalled"]
# Why accepting a connection failed: out of descriptors (EMFILE, ENFILE), out of memory (ENOBUFS,
# ENOMEM), or the client went away or the network failed before the accept (anything else).
AcceptFailure = Literal["descriptors", "memory", "aborted"]
