"""The supervisors' overrides and the audit trail in Postgres (docs/supervision.md; tables in
migrations/0002_supervision.sql).

A store of its own, beside the record writer: the writer batches and spools, while an action
wants its answer now, so this one has its own small pool, connected on first use and rebuilt
after an outage, and answers every call at once. Nothing is spooled: while Postgres is away an
action that needs it is refused with `Unavailable` (the API answers 503) and changes nothing.
An override and its audit row are written in one transaction; the audit table is only ever
inserted into, except for its retention (`purge_audit`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Final, TypeVar

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from hotline.adapters.store.errors import classify, describe
from hotline.adapters.store.migrations import SchemaError, open_pool
from hotline.core.roster import ExceptionKind, Override
from hotline.core.supervision import ActorRole, AuditAction, AuditEntry, Conflict, NotFound
from hotline.core.supervision import Unavailable as ActionUnavailable

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

# What a client is told; what failed (a host, a Postgres message) goes to the log only.
UNAVAILABLE: Final = "the database cannot be reached now; nothing was changed"

_INSERT_OVERRIDE = (
    "INSERT INTO hotline.overrides (responder, kind, queues, starts_at, ends_at, created_by,"
    " reason) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    " RETURNING id, responder, kind, queues, starts_at, ends_at"
)
_INSERT_AUDIT = (
    "INSERT INTO hotline.audit (at, actor, role, action, target, reason, before, after,"
    " request_id) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9)"
)
_LIVE_OVERRIDES = (
    "SELECT id, responder, kind, queues, starts_at, ends_at FROM hotline.overrides"
    " WHERE cancelled_at IS NULL AND ends_at > $1 ORDER BY starts_at, id"
)
_PURGE_AUDIT = "DELETE FROM hotline.audit WHERE at < now() - make_interval(days => $1)"


class SupervisionStore:
    """Overrides and audit entries, each call bounded by `timeout_s`. Every method raises
    `Unavailable` (core.supervision) when Postgres cannot be used now, with a fixed text."""

    def __init__(self, dsn: str, *, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()

    async def add_override(
        self,
        override: Override,
        created_by: str,
        reason: str | None,
        audit: Callable[[Override], AuditEntry],
    ) -> Override:
        """Store `override` (its id is ignored: Postgres assigns one) and the audit entry
        `audit` makes of the stored override, in one transaction; return the stored override."""
        kind = override.kind.value
        queues = sorted(override.queues) if override.queues is not None else None

        async def run(conn: PoolConnectionProxy) -> Override:
            async with conn.transaction():
                row = await conn.fetchrow(
                    _INSERT_OVERRIDE,
                    override.responder,
                    kind,
                    queues,
                    override.start,
                    override.end,
                    created_by,
                    reason,
                )
                stored = _override(row)
                await _insert_audit(conn, audit(stored))
            return stored

        return await self._use("add_override", run)

    async def cancel_override(
        self,
        override_id: int,
        cancelled_by: str,
        now: datetime,
        audit: Callable[[Override], AuditEntry],
    ) -> Override:
        """Mark the override cancelled at `now` and write the audit entry `audit` makes of it,
        in one transaction. NotFound for an id that names no override, Conflict for one
        already cancelled or ended by `now`."""

        async def run(conn: PoolConnectionProxy) -> Override:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT id, responder, kind, queues, starts_at, ends_at, cancelled_at"
                    " FROM hotline.overrides WHERE id = $1 FOR UPDATE",
                    override_id,
                )
                if row is None:
                    raise NotFound("override", str(override_id))
                if row["cancelled_at"] is not None:
                    raise Conflict(f"override {override_id} is already cancelled")
                if row["ends_at"] <= now:
                    raise Conflict(f"override {override_id} has already ended")
                await conn.execute(
                    "UPDATE hotline.overrides SET cancelled_at = $2, cancelled_by = $3"
                    " WHERE id = $1",
                    override_id,
                    now,
                    cancelled_by,
                )
                stored = _override(row)
                await _insert_audit(conn, audit(stored))
            return stored

        return await self._use("cancel_override", run)

    async def load_overrides(self, now: datetime) -> list[Override]:
        """The overrides not cancelled that have not ended by `now`: in force or to come."""

        async def run(conn: PoolConnectionProxy) -> list[Override]:
            return [_override(row) for row in await conn.fetch(_LIVE_OVERRIDES, now)]

        return await self._use("load_overrides", run)

    async def record_audit(self, entry: AuditEntry) -> None:
        """Append one audit entry."""

        async def run(conn: PoolConnectionProxy) -> None:
            await _insert_audit(conn, entry)

        await self._use("record_audit", run)

    async def recent_audit(self, limit: int, full: bool) -> list[AuditEntry]:
        """The `limit` newest entries, newest first. Without `full` (supervisors), the states
        before and after are left out (docs/supervision.md, "Who reads the audit trail")."""
        limit = max(0, min(limit, 10_000))

        async def run(conn: PoolConnectionProxy) -> list[AuditEntry]:
            rows = await conn.fetch(
                "SELECT at, actor, role, action, target, reason, before, after, request_id"
                " FROM hotline.audit ORDER BY at DESC, id DESC LIMIT $1",
                limit,
            )
            return [_entry(row, full) for row in rows]

        return await self._use("recent_audit", run)

    async def purge_audit(self, older_than_days: int) -> int:
        """Delete audit entries older than `older_than_days` (by the database's clock): the
        audit trail's own retention, database.audit_retention_days. Returns the rows deleted."""

        async def run(conn: PoolConnectionProxy) -> int:
            async with conn.transaction():
                # A year of entries can take longer than the usual bound.
                await conn.execute("SET LOCAL statement_timeout = '10min'")
                tag = await conn.execute(_PURGE_AUDIT, older_than_days, timeout=600)
            return int(tag.rsplit(" ", 1)[1])

        return await self._use("purge_audit", run)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    async def _use(self, what: str, run: Callable[[PoolConnectionProxy], Awaitable[_T]]) -> _T:
        pool = await self._ready_pool(what)
        try:
            async with pool.acquire(timeout=self._timeout_s) as conn:
                return await run(conn)
        except (NotFound, Conflict):
            raise
        except Exception as exc:
            kind = classify(exc)
            log.warning("supervision_store_failed", during=what, kind=kind, error=describe(exc))
            if kind in ("connection", "timeout"):
                self._drop_pool()
            raise ActionUnavailable(UNAVAILABLE) from exc

    async def _ready_pool(self, what: str) -> asyncpg.Pool:
        async with self._connecting:
            if self._pool is not None:
                return self._pool
            try:
                async with asyncio.timeout(2 * self._timeout_s):
                    pool = await open_pool(
                        self._dsn, self._timeout_s, "hotline-supervision", min_size=0, max_size=2
                    )
            except SchemaError as exc:
                log.error("supervision_store_schema", during=what, error=str(exc))
                raise ActionUnavailable(UNAVAILABLE) from exc
            except Exception as exc:
                log.warning(
                    "supervision_store_failed", during=what, kind=classify(exc), error=repr(exc)
                )
                raise ActionUnavailable(UNAVAILABLE) from exc
            self._pool = pool
            return pool

    def _drop_pool(self) -> None:
        # Rebuilt rather than trusted to recover after a server restart (as the writer does).
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()


async def _insert_audit(conn: PoolConnectionProxy, entry: AuditEntry) -> None:
    await conn.execute(
        _INSERT_AUDIT,
        entry.at,
        entry.actor,
        entry.role,
        entry.action,
        entry.target,
        entry.reason,
        _json(entry.before),
        _json(entry.after),
        entry.request_id,
    )


def _json(value: Mapping[str, object] | None) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def _override(row: asyncpg.Record | None) -> Override:
    assert row is not None  # INSERT ... RETURNING returns the row
    queues: Sequence[str] | None = row["queues"]
    return Override(
        id=int(row["id"]),
        responder=row["responder"],
        start=row["starts_at"],
        end=row["ends_at"],
        kind=ExceptionKind(row["kind"]),
        queues=frozenset(queues) if queues is not None else None,
    )


def _entry(row: asyncpg.Record, full: bool) -> AuditEntry:
    role: ActorRole = row["role"]
    action: AuditAction = row["action"]
    return AuditEntry(
        at=row["at"],
        actor=row["actor"],
        role=role,
        action=action,
        target=row["target"],
        reason=row["reason"],
        before=json.loads(row["before"]) if full and row["before"] is not None else None,
        after=json.loads(row["after"]) if full and row["after"] is not None else None,
        request_id=row["request_id"],
    )
