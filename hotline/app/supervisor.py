"""What supervisors do to the live queues, carried out: pause and unpause through AMI, overrides
stored in Postgres and handed to the membership keeper, a forced resync; every action audited.
Also the pause limits: pauses past their reason's limit are reported, and lifted where the
reason says so (docs/supervision.md).

Every public action raises only the errors of `hotline.core.supervision`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import structlog

from hotline.app.membership import MembershipKeeper
from hotline.config import PauseSettings
from hotline.core import pauses as pause_rules
from hotline.core.ami import Event, Reply, Result
from hotline.core.health import NotReady
from hotline.core.pauses import PAUSE_EVENTS, Limit, OverLimit, Pause, PauseBook
from hotline.core.roster import ExceptionKind, Override, explain
from hotline.core.supervision import (
    SYSTEM,
    ActionRefused,
    Actor,
    AuditAction,
    AuditEntry,
    Conflict,
    NotFound,
    PbxRefused,
    Unavailable,
)

log = structlog.get_logger("hotline.supervisor")

# An override is for the hours ahead; a longer absence belongs in the roster's exceptions.
MAX_OVERRIDE: Final = timedelta(days=31)
# While the overrides could not be read at start, try again this often.
_LOAD_RETRY_S: Final = 5.0
# How long the daemon's start waits for them before going on without.
_LOAD_TIMEOUT_S: Final = 10.0
# Ended overrides are dropped from memory this often (the roster ignores them already).
_PRUNE_EVERY_S: Final = 60.0
# Pause limits are checked at least this often, and at each pause reaching its limit.
_PAUSE_CHECK_S: Final = 5.0
# A lift that failed (AMI down) is tried again after this long.
_LIFT_RETRY_S: Final = 5.0
# How much of a supervisor's free text a log line may carry (it is in the audit row whole).
_LOGGED_CHARS: Final = 80

NO_DATABASE: Final = (
    "overrides and the audit trail need a database (database: in the configuration)"
)
AMI_DOWN: Final = "the link to Asterisk is down; nothing was changed"


class Link(Protocol):
    """The AMI link, for the pauses the supervisor sends."""

    @property
    def up(self) -> bool: ...
    async def send(self, action: Mapping[str, str]) -> Reply: ...


class SupervisionStore(Protocol):
    """Postgres for overrides and the audit trail (adapters/store/supervision.py); every method
    raises Unavailable when Postgres cannot be used now."""

    async def add_override(
        self,
        override: Override,
        created_by: str,
        reason: str | None,
        audit: Callable[[Override], AuditEntry],
    ) -> Override: ...

    async def cancel_override(
        self,
        override_id: int,
        cancelled_by: str,
        now: datetime,
        audit: Callable[[Override], AuditEntry],
    ) -> Override: ...

    async def load_overrides(self, now: datetime) -> list[Override]: ...

    async def record_audit(self, entry: AuditEntry) -> None: ...

    async def recent_audit(self, limit: int, full: bool) -> list[AuditEntry]: ...


class PauseObserver(Protocol):
    """What the pause limits report (adapters/metrics/pauses.py)."""

    def lifted(self, reason: str) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Supervisor:
    """The acting side of the supervisor API. `clock` is the roster's (overrides run on it);
    `wall` is epoch seconds, the clock of Asterisk's pause times."""

    # The events `on_event` reads; the daemon routes only these here.
    EVENTS = PAUSE_EVENTS

    def __init__(
        self,
        keeper: MembershipKeeper,
        link: Link,
        store: SupervisionStore | None,
        pauses: PauseSettings,
        clock: Clock,
        *,
        observer: PauseObserver,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.keeper = keeper
        self.link = link
        self.store = store
        self.clock = clock
        self.observer = observer
        self.wall = wall
        self.reasons = pauses.reasons
        self.limits: Mapping[str, Limit] = {
            name: Limit(reason.max_s, reason.lift_at_limit)
            for name, reason in pauses.reasons.items()
            if reason.max_s is not None
        }
        self.book = PauseBook(keeper.roster.queues)
        # The overrides not yet ended, by id; the keeper has the same set.
        self._overrides: dict[int, Override] = {}
        # Whether the overrides were read from Postgres since the daemon started.
        self.loaded = store is None
        self._pauses_changed = asyncio.Event()
        # Pauses over their limit already logged, and lifts tried: (queue, interface, since).
        self._reported: set[tuple[str, str, float]] = set()
        self._lift_tried: dict[tuple[str, str, float], float] = {}

    # -- pauses ---------------------------------------------------------------------------------

    async def pause(
        self, actor: Actor, responder: str, queue: str | None, reason: str, request_id: str
    ) -> dict[str, object]:
        """Pause `responder` in `queue` (None: every queue they are a member of) with one of
        the configured reasons; audited."""
        if reason not in self.reasons:
            raise NotFound("reason", reason)
        return await self._set_paused(actor, responder, queue, reason=reason, request_id=request_id)

    async def unpause(
        self, actor: Actor, responder: str, queue: str | None, request_id: str
    ) -> dict[str, object]:
        """Unpause `responder` in `queue` (None: every queue); audited."""
        return await self._set_paused(actor, responder, queue, reason=None, request_id=request_id)

    async def _set_paused(
        self,
        actor: Actor,
        responder: str,
        queue: str | None,
        *,
        reason: str | None,
        request_id: str | None,
    ) -> dict[str, object]:
        roster = self.keeper.roster
        found = roster.responders.get(responder)
        if found is None:
            raise NotFound("responder", responder)
        if queue is not None and queue not in roster.queues:
            raise NotFound("queue", queue)
        queues = [queue] if queue is not None else [q for q in found.queues if q in roster.queues]
        before = {q: self._pause_state(q, found.interface) for q in queues}
        request = {
            "Action": "QueuePause",
            "Interface": found.interface,
            "Paused": "true" if reason is not None else "false",
        }
        if queue is not None:
            request["Queue"] = queue
        if reason is not None:
            request["Reason"] = reason
        await self._send(request)
        after = {q: {"paused": reason is not None, "reason": reason} for q in queues}
        where = f"in {queue}" if queue is not None else "in all queues"
        chosen: AuditAction = "pause" if reason is not None else "unpause"
        entry = self._entry(
            actor,
            chosen,
            f"responder {responder} {where}",
            reason=reason,
            before=before,
            after=after,
            request_id=request_id,
        )
        audited = await self._audit(entry)
        log.info(
            "responder_" + ("paused" if reason is not None else "unpaused"),
            action=chosen,
            responder=responder,
            queue=queue or "*",
            reason=reason,
            actor=actor.name,
            role=actor.role,
            request_id=request_id,
        )
        return {
            "responder": responder,
            "queue": queue,
            "paused": reason is not None,
            "reason": reason,
            "queues": queues,
            "audited": audited,
        }

    def _pause_state(self, queue: str, interface: str) -> dict[str, object]:
        current = self.book.get(queue, interface)
        if current is None:
            return {"paused": False, "reason": None}
        return {"paused": True, "reason": current.reason, "since": _iso(current.since)}

    async def _send(self, request: Mapping[str, str]) -> None:
        if not self.link.up:
            raise Unavailable(AMI_DOWN)
        reply = await self.link.send(request)
        if reply.result in (Result.TIMEOUT, Result.DISCONNECTED):
            raise Unavailable(AMI_DOWN)
        if not reply.ok:
            # Asterisk's own words, e.g. "Interface not found": not a member of that queue.
            raise PbxRefused(reply.message or "Asterisk refused the action")

    def paused(self) -> list[Pause]:
        """Every member paused now, with its reason and since when (epoch seconds)."""
        return self.book.pauses()

    def over_limit_pauses(self) -> list[OverLimit]:
        """The pauses past their reason's limit now: for the board and the metrics."""
        return pause_rules.over_limit(self.book.pauses(), self.limits, self.wall())

    def on_event(self, event: Event) -> None:
        self.book.feed(event.name, event.fields, self.wall())
        self._pauses_changed.set()

    def on_status(self, items: list[Mapping[str, str]]) -> None:
        self.book.resync(items, self.wall())
        self._pauses_changed.set()

    async def run_pause_limits(self) -> None:
        """Report each pause that reaches its limit, and lift those whose reason says so; wakes
        at each pause's limit and whenever the pauses change."""
        while True:
            # Cleared before reading, so a change while a lift is under way wakes the next pass.
            self._pauses_changed.clear()
            now = self.wall()
            current = self.book.pauses()
            for over in pause_rules.over_limit(current, self.limits, now):
                await self._over_limit(over, now)
            live = {(p.queue, p.interface, p.since) for p in current}
            self._reported &= live
            self._lift_tried = {k: v for k, v in self._lift_tried.items() if k in live}
            upcoming = pause_rules.next_limit(current, self.limits, now)
            wait = _PAUSE_CHECK_S if upcoming is None else min(_PAUSE_CHECK_S, upcoming - now)
            try:
                async with asyncio.timeout(max(0.01, wait)):
                    await self._pauses_changed.wait()
            except TimeoutError:
                pass

    async def _over_limit(self, over: OverLimit, now: float) -> None:
        key = (over.queue, over.interface, over.since)
        if key not in self._reported:
            self._reported.add(key)
            log.warning(
                "pause_over_limit",
                queue=over.queue,
                responder=over.responder,
                reason=over.reason,
                limit_s=over.limit_s,
                paused_s=round(now - over.since),
                lift=over.lift,
            )
        if not over.lift or now < self._lift_tried.get(key, 0.0):
            return
        self._lift_tried[key] = now + _LIFT_RETRY_S
        request = {
            "Action": "QueuePause",
            "Queue": over.queue,
            "Interface": over.interface,
            "Paused": "false",
        }
        try:
            await self._send(request)
        except ActionRefused as exc:
            log.warning(
                "pause_lift_failed", queue=over.queue, responder=over.responder, error=str(exc)
            )
            return
        self.observer.lifted(over.reason)
        before = {
            "paused": True,
            "reason": over.reason,
            "since": _iso(over.since),
            "limit_s": over.limit_s,
        }
        entry = self._entry(
            SYSTEM,
            "pause_lifted",
            f"responder {over.responder} in {over.queue}",
            reason=over.reason,
            before={over.queue: before},
            after={over.queue: {"paused": False, "reason": None}},
            request_id=None,
        )
        await self._audit(entry)
        log.info(
            "pause_lifted",
            queue=over.queue,
            responder=over.responder,
            reason=over.reason,
            paused_s=round(now - over.since),
        )

    # -- overrides ------------------------------------------------------------------------------

    async def add_override(  # noqa: PLR0917 - the API's call, one argument per field
        self,
        actor: Actor,
        responder: str,
        on: bool,
        queues: list[str] | None,
        until: datetime,
        reason: str | None,
        request_id: str,
    ) -> Override:
        """`responder` on (or off) duty in `queues` (None: all of theirs) from now until
        `until`, stored with its audit row in one transaction, then honoured from the next
        round."""
        store = self._store()
        roster = self.keeper.roster
        found = roster.responders.get(responder)
        if found is None:
            raise NotFound("responder", responder)
        # The queues a responder serves: their own, and those they stand by for (an `on`
        # override calls a standby responder in, docs/supervision.md, "Overrides").
        standby = [q for q, policy in roster.queues.items() if responder in policy.standby]
        own = [q for q in found.queues if q in roster.queues]
        if queues is not None:
            if not queues:
                raise Conflict("queues must name at least one queue, or be left out for all")
            for queue in queues:
                if queue not in roster.queues:
                    raise NotFound("queue", queue)
                if queue not in own and queue not in standby:
                    raise Conflict(f"responder {responder!r} does not serve queue {queue!r}")
        elif not own and not standby:
            raise Conflict(f"responder {responder!r} serves no queue")
        if until.utcoffset() is None:
            raise Conflict("until must carry a UTC offset")
        now = self.clock.now()
        if until <= now:
            raise Conflict(f"until {until.isoformat()} is not in the future")
        if until - now > MAX_OVERRIDE:
            raise Conflict(
                f"an override lasts at most {MAX_OVERRIDE.days} days; use the roster's exceptions"
            )
        kind = ExceptionKind.ON if on else ExceptionKind.OFF
        wanted = Override(0, responder, now, until, kind, frozenset(queues) if queues else None)
        served = sorted(queues) if queues else own or standby
        before = self._standing(responder, served, now)

        def audit(stored: Override) -> AuditEntry:
            return self._entry(
                actor,
                "override_add",
                f"override {stored.id} for responder {responder}",
                reason=reason,
                before=before,
                after=_override_fields(stored),
                request_id=request_id,
                at=now,
            )

        stored = await store.add_override(wanted, actor.name, reason, audit)
        self._overrides[stored.id] = stored
        self._hand_over()
        log.info(
            "override_added",
            override=stored.id,
            responder=responder,
            kind=kind.value,
            queues=served,
            until=until.isoformat(),
            actor=actor.name,
            role=actor.role,
            request_id=request_id,
        )
        return stored

    async def cancel_override(
        self, actor: Actor, override_id: int, reason: str | None, request_id: str
    ) -> None:
        """End an override now (NotFound for an unknown id, Conflict for one already ended or
        cancelled); audited in the same transaction."""
        store = self._store()
        now = self.clock.now()

        def audit(stored: Override) -> AuditEntry:
            return self._entry(
                actor,
                "override_cancel",
                f"override {stored.id} for responder {stored.responder}",
                reason=reason,
                before=_override_fields(stored),
                after={"cancelled_at": now.isoformat()},
                request_id=request_id,
                at=now,
            )

        stored = await store.cancel_override(override_id, actor.name, now, audit)
        self._overrides.pop(override_id, None)
        self._hand_over()
        log.info(
            "override_cancelled",
            override=override_id,
            responder=stored.responder,
            actor=actor.name,
            role=actor.role,
            request_id=request_id,
        )

    def overrides(self) -> list[Override]:
        """The overrides not yet ended (those in memory: see `loaded`), oldest first."""
        now = self.clock.now()
        return sorted(
            (o for o in self._overrides.values() if o.end > now), key=lambda o: (o.start, o.id)
        )

    async def load(self) -> bool:
        """Read the overrides not yet ended from Postgres and hand them to the keeper; False
        (logged) when Postgres cannot be used now."""
        if self.store is None:
            return True
        try:
            async with asyncio.timeout(_LOAD_TIMEOUT_S):
                found = await self.store.load_overrides(self.clock.now())
        except (Unavailable, TimeoutError):
            log.warning("overrides_not_loaded", retry_s=_LOAD_RETRY_S)
            return False
        # Overrides added while loading (they are in Postgres too) are kept.
        self._overrides = {o.id: o for o in found} | self._overrides
        self.loaded = True
        self._hand_over()
        log.info("overrides_loaded", overrides=len(found))
        return True

    async def run(self) -> None:
        """Until the overrides are loaded, retry; then drop ended ones from memory now and
        then."""
        while not self.loaded:
            if await self.load():
                break
            await asyncio.sleep(_LOAD_RETRY_S)
        while True:
            await asyncio.sleep(_PRUNE_EVERY_S)
            now = self.clock.now()
            ended = [i for i, o in self._overrides.items() if o.end <= now]
            if ended:
                for i in ended:
                    del self._overrides[i]
                self._hand_over()

    def readiness(self) -> list[NotReady]:
        """Not ready while the stored overrides could not be read: membership may then go
        against a supervisor's decision."""
        return [] if self.loaded else [NotReady.OVERRIDES_NOT_LOADED]

    def _hand_over(self) -> None:
        self.keeper.set_overrides(tuple(sorted(self._overrides.values(), key=lambda o: o.id)))

    def _standing(self, responder: str, queues: list[str], at: datetime) -> dict[str, object]:
        """Whether `responder` is a member of each of `queues` at `at`, and why."""
        standings = explain(self.keeper.roster, at, self.keeper.surging)
        out: dict[str, object] = {}
        for queue in queues:
            for standing in standings.get(queue, ()):
                if standing.responder == responder:
                    out[queue] = {"member": standing.member is not None, "why": standing.why}
        return out

    # -- the rest -------------------------------------------------------------------------------

    async def resync(self, actor: Actor, request_id: str) -> None:
        """Wake a reconcile round now; audited."""
        self.keeper.wake("resync")
        entry = self._entry(
            actor,
            "resync",
            "membership",
            reason=None,
            before=None,
            after=None,
            request_id=request_id,
        )
        await self._audit(entry)
        log.info("resync_requested", actor=actor.name, role=actor.role, request_id=request_id)

    async def audit(self, limit: int, full: bool) -> list[AuditEntry]:
        """The newest `limit` audit entries, newest first; without `full`, the reduced view
        (no before or after)."""
        return await self._store().recent_audit(limit, full)

    def _store(self) -> SupervisionStore:
        if self.store is None:
            raise Unavailable(NO_DATABASE)
        return self.store

    def _entry(
        self,
        actor: Actor,
        action: AuditAction,
        target: str,
        *,
        reason: str | None,
        before: Mapping[str, object] | None,
        after: Mapping[str, object] | None,
        request_id: str | None,
        at: datetime | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            at or self.clock.now(),
            actor.name,
            actor.role,
            action,
            target,
            reason,
            before,
            after,
            request_id,
        )

    async def _audit(self, entry: AuditEntry) -> bool:
        """Write an entry for an action already carried out in Asterisk. The action stands if
        Postgres is away: the entry then goes to the log (as a warning, its reason shortened)
        and the caller is told it was not stored."""
        if self.store is not None:
            try:
                await self.store.record_audit(entry)
                return True
            except Unavailable:
                pass
        log.warning(
            "audit_not_stored",
            actor=entry.actor,
            role=entry.role,
            action=entry.action,
            target=entry.target,
            reason=_short(entry.reason),
            request_id=entry.request_id,
            why="no database" if self.store is None else "postgres unavailable",
        )
        return False


def _override_fields(override: Override) -> dict[str, object]:
    return {
        "id": override.id,
        "responder": override.responder,
        "kind": override.kind.value,
        "queues": sorted(override.queues) if override.queues is not None else None,
        "start": override.start.isoformat(),
        "end": override.end.isoformat(),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _short(text: str | None) -> str | None:
    """Free text as a log line may carry it: printable, one line, length-limited."""
    if text is None:
        return None
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= _LOGGED_CHARS else clean[: _LOGGED_CHARS - 1] + "…"
