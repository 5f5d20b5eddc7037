"""What supervisors (and hotline's own automatic decisions) do to the live queues, as values: who
acts, the audit entry every action leaves, and the ways an action can be refused. Shared by the
application service that carries actions out and the HTTP API that receives them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args

# viewer reads; supervisor also acts; admin also reads the audit trail in full.
Role = Literal["viewer", "supervisor", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
# An actor's role, or "system" for what hotline decides by itself (a surge, a pause lifted at
# its limit, a wellbeing pause).
ActorRole = Literal[Role, "system"]

AuditAction = Literal[
    "pause", "unpause", "override_add", "override_cancel", "resync",
    "pause_lifted", "surge_on", "surge_off", "wellbeing_pause",
]  # fmt: skip
AUDIT_ACTIONS: Final[tuple[AuditAction, ...]] = get_args(AuditAction)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a token's owner with its role, or hotline itself."""

    name: str
    role: ActorRole


SYSTEM: Final = Actor("hotline", "system")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action, as the audit trail keeps it: never updated, never deleted by the daemon."""

    at: datetime  # aware
    actor: str
    role: ActorRole
    action: AuditAction
    target: str  # e.g. "responder r-ana in crisis", "override 12", "queue crisis"
    reason: str | None
    before: Mapping[str, object] | None
    after: Mapping[str, object] | None
    request_id: str | None  # the API request's id; None for hotline's own decisions


NotFoundKind = Literal["responder", "queue", "override", "reason"]


class ActionRefused(Exception):
    """An action that cannot be carried out; its text is safe to show to the client."""


class NotFound(ActionRefused):
    def __init__(self, kind: NotFoundKind, name: str) -> None:
        super().__init__(f"unknown {kind} {name!r}")
        self.kind = kind
        self.name = name


class Conflict(ActionRefused):
    """The action contradicts the state: e.g. an override that has already ended."""


class PbxRefused(ActionRefused):
    """Asterisk answered the action with an error (the reason is its message)."""


class Unavailable(ActionRefused):
    """Asterisk or Postgres cannot be reached now; nothing was changed."""
