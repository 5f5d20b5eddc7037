"""Retention: calls that ended, and sessions and pauses that closed, more than N days ago are
deleted, daily by the store and once by `hotline purge`, and so are the dead letters set aside
more than N days ago (docs/data-model.md, "Retention")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from hotline.adapters.store.deadletters import prune_dead_letters
from hotline.adapters.store.errors import outage_as_unavailable
from hotline.adapters.store.migrations import check_schema

log = structlog.get_logger(__name__)

# A call never closed (hotline was away when it ended) goes N days after it entered: retention is
# a privacy promise.
_DELETE = (
    "DELETE FROM hotline.calls WHERE coalesce(ended_at, entered_at, updated_at)"
    " < now() - make_interval(days => $1)",
    "DELETE FROM hotline.member_sessions WHERE left_at < now() - make_interval(days => $1)",
    "DELETE FROM hotline.pauses WHERE ended_at < now() - make_interval(days => $1)",
)


async def delete_older(conn: asyncpg.Connection | PoolConnectionProxy, older_than_days: int) -> int:
    """Delete the rows closed more than `older_than_days` ago (by the database's clock), in one
    transaction; return how many."""
    deleted = 0
    async with conn.transaction():
        # A year of rows can take longer than the writer's 5 s bound.
        await conn.execute("SET LOCAL statement_timeout = '10min'")
        for sql in _DELETE:
            tag = await conn.execute(sql, older_than_days, timeout=600)
            deleted += int(tag.rsplit(" ", 1)[1])
    return deleted


async def purge(dsn: str, older_than_days: int, spool_dir: Path | None = None) -> int:
    """`hotline purge`: the daemon's daily retention, run once by hand; returns rows deleted.
    With `spool_dir`, the dead letters past retention there go first, whether Postgres answers or
    not. Raises StoreUnavailable when Postgres cannot be reached, SchemaError for an unknown
    schema."""
    if spool_dir is not None:
        now = datetime.now(UTC)
        pruned = await asyncio.to_thread(prune_dead_letters, spool_dir, older_than_days, now)
        if pruned.files:
            log.info("dead_letters_purged", files=pruned.files, records=pruned.records)
    with outage_as_unavailable():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await check_schema(conn)
            return await delete_older(conn, older_than_days)
        finally:
            await conn.close()
