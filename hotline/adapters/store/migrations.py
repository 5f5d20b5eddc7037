"""The schema: the numbered SQL files in migrations/ (0001_initial.sql, ...), applied in order,
each once and in one transaction; the newest is the version this code works with, SCHEMA_VERSION,
and a database at any other version is refused (docs/data-model.md, "Schema")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final, Protocol

import asyncpg
import structlog

from hotline.adapters.store.errors import outage_as_unavailable

log = structlog.get_logger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Serialises concurrent migrate() runs (two daemons starting together); any constant would do,
# this one is "hotline" in ASCII.
_MIGRATE_LOCK: Final = 0x686F746C696E65


def _files() -> Traversable:
    return resources.files(__package__ or __name__).joinpath("migrations")


SCHEMA_VERSION: Final = max(
    (int(match[1]) for entry in _files().iterdir() if (match := _FILE.match(entry.name))),
    default=0,
)


class SchemaError(Exception):
    """The database's schema is not the one this code was written for."""


class Queryable(Protocol):
    """An asyncpg Connection or Pool."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migration files, in version order (0001, 0002, ... no gaps)."""
    found: list[Migration] = []
    for entry in _files().iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name[:-4], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if not found or [m.version for m in found] != list(range(1, SCHEMA_VERSION + 1)):
        raise SchemaError(
            f"migration files {[m.name for m in found]} do not run 1..{SCHEMA_VERSION} without"
            " gaps (is hotline/adapters/store/migrations installed with the package?)"
        )
    return found


async def _schema_version(conn: Queryable) -> int:
    """0 when the database has never been migrated."""
    if await conn.fetchval("SELECT to_regclass('hotline.schema_migrations') IS NULL"):
        return 0
    return int(
        await conn.fetchval("SELECT coalesce(max(version), 0) FROM hotline.schema_migrations")
    )


async def migrate(dsn: str) -> list[str]:
    """Apply the pending migrations, each in one transaction; return the names applied.
    Raises StoreUnavailable when Postgres cannot be reached, SchemaError for a newer schema."""
    with outage_as_unavailable():
        return await _migrate(dsn)


async def _migrate(dsn: str) -> list[str]:
    pending = migrations()
    conn = await asyncpg.connect(dsn, timeout=10)
    applied: list[str] = []
    try:
        for migration in pending:
            async with conn.transaction():
                # Read the version under the lock, so a concurrent migrate() waits, then skips.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                current = await _schema_version(conn)
                if current > SCHEMA_VERSION:
                    raise SchemaError(
                        f"the database has schema version {current}, newer than this code's"
                        f" {SCHEMA_VERSION}: upgrade hotline, do not downgrade the database"
                    )
                if current >= migration.version:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO hotline.schema_migrations (version) VALUES ($1)",
                    migration.version,
                )
            applied.append(migration.name)
            log.info("migration_applied", migration=migration.name)
        await check_schema(conn)  # what the writers will check: exactly SCHEMA_VERSION
    finally:
        await conn.close()
    return applied


async def open_pool(
    dsn: str, timeout_s: float, application_name: str, min_size: int, max_size: int
) -> asyncpg.Pool:
    """A pool on a database whose schema check_schema accepts; closed again if it is refused.
    Every connect and statement is bounded by `timeout_s`; idle connections go after a minute."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,  # connect
        command_timeout=timeout_s,
        max_inactive_connection_lifetime=60,
        server_settings={
            "application_name": application_name,
            "statement_timeout": str(int(timeout_s * 1000)),
        },
    )
    try:
        await check_schema(pool)
    except BaseException:
        pool.terminate()
        raise
    return pool


async def check_schema(conn_or_pool: Queryable) -> None:
    """Raise SchemaError unless the database is at exactly SCHEMA_VERSION."""
    if SCHEMA_VERSION == 0:
        raise SchemaError("no migration files were installed with hotline: reinstall it")
    version = await _schema_version(conn_or_pool)
    if version == SCHEMA_VERSION:
        return
    if version == 0:
        raise SchemaError("the database has no hotline schema: run the migrations")
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"the database has schema version {version}, this code needs {SCHEMA_VERSION}:"
            " run the migrations"
        )
    raise SchemaError(
        f"the database has schema version {version}, newer than this code's {SCHEMA_VERSION}"
    )
