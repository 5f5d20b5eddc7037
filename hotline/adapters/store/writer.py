"""Postgres adapter, the only importer of asyncpg: schema migrations, and one writer task that
upserts call records, member sessions and pauses in batches. While Postgres is away or slow the
records go to the on-disk spool and are replayed in order when it is back: at least once from AMI
to Postgres, exactly-once effect through forward-only upserts (docs/metrics-kpis-ops.md §8.3).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final, NamedTuple, Protocol

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import structlog

from hotline.adapters.store.spool import Segment, Spool
from hotline.core.calls import AttemptOutcome, CallRecord, Outcome, RingAttempt
from hotline.core.presence import MemberSession, PauseInterval

SCHEMA_VERSION: Final = 1

Record = CallRecord | MemberSession | PauseInterval

log = structlog.get_logger(__name__)

# Serialises concurrent migrate() runs (two daemons starting together); any constant would do,
# this one is "hotline" in ASCII.
_MIGRATE_LOCK: Final = 0x686F746C696E65
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# The last tenth of the spool is kept for call records: presence records are shed first (§8.3).
_PRESENCE_SHARE: Final = 0.9
_CLOSE_BUDGET_S: Final = 2.0
_REMIND_EVERY_S: Final = 60.0


class SchemaError(Exception):
    """The database's schema is not the one this code was written for."""


class StoreUnavailable(Exception):
    """Postgres could not be reached (or its schema is wrong) for a query that needs it now."""


class StoreObserver(Protocol):
    """What the store reports; the metrics implement it (docs §2.4)."""

    def db_up(self, up: bool) -> None: ...

    def write_done(self, op: str, rows: int, seconds: float) -> None: ...

    def write_error(self, kind: str) -> None: ...  # connection, timeout, constraint, other

    def duplicates(self, table: str, n: int) -> None: ...

    def backlog(self, memory: int, spool: int, oldest_age_s: float, spool_bytes: int) -> None: ...

    def dropped(self, reason: str, n: int) -> None: ...  # spool_full, invalid


class Queryable(Protocol):
    """An asyncpg Connection or Pool."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...


# -- migrations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migration files beside this module, in version order (0001, 0002, ... no gaps)."""
    found: list[Migration] = []
    for entry in resources.files("hotline.adapters.store").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name[:-4], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, SCHEMA_VERSION + 1)):
        raise SchemaError(
            f"migration files {[m.name for m in found]} do not run 1..{SCHEMA_VERSION} without"
            " gaps (is hotline/migrations installed with the package?)"
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
    try:
        return await _migrate(dsn)
    except (SchemaError, StoreUnavailable):
        raise
    except Exception as exc:
        if classify(exc) == "other":
            raise
        raise StoreUnavailable(_describe(exc)) from exc


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


async def check_schema(conn_or_pool: Queryable) -> None:
    """Raise SchemaError unless the database is at exactly SCHEMA_VERSION."""
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


# -- records as JSON (the spool) and as rows (Postgres) ----------------------------------------


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _at(text: Any) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _at_required(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO time, got {text!r}")
    return datetime.fromisoformat(text)


def _attempt_json(a: RingAttempt) -> dict[str, Any]:
    return {
        "responder": a.responder,
        "rang_at": a.rang_at.isoformat(),
        "outcome": a.outcome.value,
        "ring_ms": a.ring_ms,
    }


def _attempt(item: dict[str, Any]) -> RingAttempt:
    return RingAttempt(
        responder=item["responder"],
        rang_at=_at_required(item["rang_at"]),
        outcome=AttemptOutcome(item["outcome"]),
        ring_ms=item.get("ring_ms"),
    )


def to_json(record: Record) -> dict[str, Any]:
    """A JSON-safe dict with a "kind" discriminator: times as ISO strings, enums as values."""
    if isinstance(record, CallRecord):
        return {
            "kind": "call",
            "uniqueid": record.uniqueid,
            "queue": record.queue,
            "visit": record.visit,
            "entered_at": _iso(record.entered_at),
            "position": record.position,
            "campaign": record.campaign,
            "caller_key": record.caller_key,
            "caller_key_id": record.caller_key_id,
            "caller_withheld": record.caller_withheld,
            "attempts": [_attempt_json(a) for a in record.attempts],
            "answered_at": _iso(record.answered_at),
            "answered_by": record.answered_by,
            "wait_s": record.wait_s,
            "talk_s": record.talk_s,
            "ended_at": _iso(record.ended_at),
            "outcome": None if record.outcome is None else record.outcome.value,
            "rolled_over": record.rolled_over,
            "rank": record.rank,
            "revision": record.revision,
        }
    if isinstance(record, MemberSession):
        return {
            "kind": "member_session",
            "queue": record.queue,
            "responder": record.responder,
            "interface": record.interface,
            "joined_at": record.joined_at.isoformat(),
            "left_at": _iso(record.left_at),
            "join_reason": record.join_reason,
            "leave_reason": record.leave_reason,
            "revision": record.revision,
        }
    return {
        "kind": "pause",
        "queue": record.queue,
        "responder": record.responder,
        "interface": record.interface,
        "started_at": record.started_at.isoformat(),
        "ended_at": _iso(record.ended_at),
        "reason": record.reason,
        "paused_by": record.paused_by,
        "revision": record.revision,
    }


def from_json(item: dict[str, Any]) -> Record:
    """The inverse of to_json; ValueError, KeyError or TypeError if `item` is not a record."""
    kind = item["kind"]
    if kind == "call":
        outcome = item["outcome"]
        return CallRecord(
            uniqueid=item["uniqueid"],
            queue=item["queue"],
            visit=item["visit"],
            entered_at=_at(item["entered_at"]),
            position=item["position"],
            campaign=item["campaign"],
            caller_key=item["caller_key"],
            caller_key_id=item["caller_key_id"],
            caller_withheld=item["caller_withheld"],
            attempts=tuple(_attempt(a) for a in item["attempts"]),
            answered_at=_at(item["answered_at"]),
            answered_by=item["answered_by"],
            wait_s=item["wait_s"],
            talk_s=item["talk_s"],
            ended_at=_at(item["ended_at"]),
            outcome=None if outcome is None else Outcome(outcome),
            rolled_over=item["rolled_over"],
            rank=item["rank"],
            revision=item["revision"],
        )
    if kind == "member_session":
        return MemberSession(
            queue=item["queue"],
            responder=item["responder"],
            interface=item["interface"],
            joined_at=_at_required(item["joined_at"]),
            left_at=_at(item["left_at"]),
            join_reason=item["join_reason"],
            leave_reason=item["leave_reason"],
            revision=item["revision"],
        )
    if kind == "pause":
        return PauseInterval(
            queue=item["queue"],
            responder=item["responder"],
            interface=item["interface"],
            started_at=_at_required(item["started_at"]),
            ended_at=_at(item["ended_at"]),
            reason=item["reason"],
            paused_by=item["paused_by"],
            revision=item["revision"],
        )
    raise ValueError(f"unknown record kind {kind!r}")


@dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, Postgres type), in the dataclass' order
    key: tuple[str, ...]
    order: tuple[str, ...]  # the forward-only ordering: a row is replaced only by a higher one

    @property
    def upsert(self) -> str:
        """One statement per batch: INSERT ... SELECT FROM unnest(arrays), so a batch is one round
        trip, RETURNING the keys of the rows that really changed (the others are duplicates)."""
        names = ", ".join(c for c, _ in self.columns)
        arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(self.columns, 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in self.columns if c not in self.key)
        stored = ", ".join(f"t.{c}" for c in self.order)
        incoming = ", ".join(f"EXCLUDED.{c}" for c in self.order)
        # S608: built from the constant table definitions below, never from input.
        return (
            f"INSERT INTO hotline.{self.name} AS t ({names})"  # noqa: S608
            f" SELECT * FROM unnest({arrays})"
            f" ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}, updated_at = now()"
            f" WHERE ({stored}) < ({incoming})"
            f" RETURNING {', '.join(f't.{c}' for c in self.key)}"
        )

    @property
    def select_open(self) -> str:
        names = ", ".join(c for c, _ in self.columns)
        open_column = {"calls": "outcome", "member_sessions": "left_at", "pauses": "ended_at"}
        return (
            f"SELECT {names} FROM hotline.{self.name}"  # noqa: S608 (constant definitions)
            f" WHERE {open_column[self.name]} IS NULL"
            f" ORDER BY {', '.join(self.key)}"
        )


_CALLS = _Table(
    "calls",
    (
        ("uniqueid", "text"),
        ("queue", "text"),
        ("visit", "integer"),
        ("entered_at", "timestamptz"),
        ("position", "integer"),
        ("campaign", "text"),
        ("caller_key", "text"),
        ("caller_key_id", "text"),
        ("caller_withheld", "boolean"),
        ("attempts", "jsonb"),
        ("answered_at", "timestamptz"),
        ("answered_by", "text"),
        ("wait_s", "double precision"),
        ("talk_s", "double precision"),
        ("ended_at", "timestamptz"),
        ("outcome", "text"),
        ("rolled_over", "boolean"),
        ("rank", "smallint"),
        ("revision", "bigint"),
    ),
    key=("uniqueid", "queue", "visit"),
    order=("rank", "revision"),
)
_SESSIONS = _Table(
    "member_sessions",
    (
        ("queue", "text"),
        ("responder", "text"),
        ("interface", "text"),
        ("joined_at", "timestamptz"),
        ("left_at", "timestamptz"),
        ("join_reason", "text"),
        ("leave_reason", "text"),
        ("revision", "bigint"),
    ),
    key=("queue", "interface", "joined_at"),
    order=("revision",),
)
_PAUSES = _Table(
    "pauses",
    (
        ("queue", "text"),
        ("responder", "text"),
        ("interface", "text"),
        ("started_at", "timestamptz"),
        ("ended_at", "timestamptz"),
        ("reason", "text"),
        ("paused_by", "text"),
        ("revision", "bigint"),
    ),
    key=("queue", "interface", "started_at"),
    order=("revision",),
)
_TABLES = (_CALLS, _SESSIONS, _PAUSES)


def _table(record: Record) -> _Table:
    if isinstance(record, CallRecord):
        return _CALLS
    return _SESSIONS if isinstance(record, MemberSession) else _PAUSES


def _row(record: Record) -> tuple[Any, ...]:
    if isinstance(record, CallRecord):
        return (
            record.uniqueid,
            record.queue,
            record.visit,
            record.entered_at,
            record.position,
            record.campaign,
            record.caller_key,
            record.caller_key_id,
            record.caller_withheld,
            json.dumps([_attempt_json(a) for a in record.attempts]),
            record.answered_at,
            record.answered_by,
            record.wait_s,
            record.talk_s,
            record.ended_at,
            None if record.outcome is None else record.outcome.value,
            record.rolled_over,
            record.rank,
            record.revision,
        )
    if isinstance(record, MemberSession):
        return (
            record.queue,
            record.responder,
            record.interface,
            record.joined_at,
            record.left_at,
            record.join_reason,
            record.leave_reason,
            record.revision,
        )
    return (
        record.queue,
        record.responder,
        record.interface,
        record.started_at,
        record.ended_at,
        record.reason,
        record.paused_by,
        record.revision,
    )


def _key(record: Record) -> tuple[Any, ...]:
    if isinstance(record, CallRecord):
        return ("calls", record.uniqueid, record.queue, record.visit)
    if isinstance(record, MemberSession):
        return ("member_sessions", record.queue, record.interface, record.joined_at)
    return ("pauses", record.queue, record.interface, record.started_at)


def _order(record: Record) -> tuple[int, int]:
    if isinstance(record, CallRecord):
        return (record.rank, record.revision)
    return (0, record.revision)


def _collapse(
    records: Sequence[Record],
) -> tuple[list[Record], Counter[str], dict[tuple[Any, ...], int]]:
    """Keep, per key, the record the row would end with if the batch were applied one by one
    (one statement cannot update a row twice). Returns the kept records, per table the records
    that could not have moved their row forward (duplicates, like those ON CONFLICT skips), and
    per key how many lower records a kept one superseded: if the kept one turns out not to be
    newer than the stored row, neither were they."""
    index: dict[tuple[Any, ...], int] = {}
    kept: list[Record] = []
    duplicates: Counter[str] = Counter()
    superseded: dict[tuple[Any, ...], int] = {}
    for record in records:
        key = _key(record)
        i = index.get(key)
        if i is None:
            index[key] = len(kept)
            kept.append(record)
        elif _order(record) > _order(kept[i]):
            kept[i] = record
            superseded[key] = superseded.get(key, 0) + 1
        else:
            duplicates[key[0]] += 1
    return kept, duplicates, superseded


def _call(row: Any) -> CallRecord:
    return CallRecord(
        uniqueid=row["uniqueid"],
        queue=row["queue"],
        visit=row["visit"],
        entered_at=row["entered_at"],
        position=row["position"],
        campaign=row["campaign"],
        caller_key=row["caller_key"],
        caller_key_id=row["caller_key_id"],
        caller_withheld=row["caller_withheld"],
        attempts=tuple(_attempt(a) for a in json.loads(row["attempts"])),
        answered_at=row["answered_at"],
        answered_by=row["answered_by"],
        wait_s=row["wait_s"],
        talk_s=row["talk_s"],
        ended_at=row["ended_at"],
        outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
        rolled_over=row["rolled_over"],
        rank=row["rank"],
        revision=row["revision"],
    )


# -- errors --------------------------------------------------------------------------------

_CONSTRAINT = (
    asyncpg.IntegrityConstraintViolationError,  # 23: not null, check, unique, foreign key
    asyncpg.DataError,  # 22: out of range, invalid text representation
    asyncpg.exceptions._base.DataError,  # a value asyncpg cannot encode for its column
)
_TIMEOUT = (TimeoutError, asyncpg.QueryCanceledError)  # client and server-side timeouts
_CONNECTION = (
    OSError,  # refused, reset, unreachable
    asyncpg.InterfaceError,  # connection closed, pool closing
    asyncpg.PostgresConnectionError,  # 08: ConnectionDoesNotExist, ConnectionFailure
    asyncpg.OperatorInterventionError,  # 57: AdminShutdown (57P01, the first query after a
    # server restart), CrashShutdown, CannotConnectNow (57P03, starting up)
    asyncpg.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.InvalidAuthorizationSpecificationError,  # 28: a password being rotated
    asyncpg.InvalidCatalogNameError,  # 3D000: the database is not (yet) created
)


def classify(exc: BaseException) -> str:
    """connection, timeout, constraint or other (docs §8.3). Order matters: asyncpg's client-side
    DataError is an InterfaceError, and QueryCanceledError an OperatorInterventionError."""
    if isinstance(exc, _CONSTRAINT):
        return "constraint"
    if isinstance(exc, _TIMEOUT):
        return "timeout"
    if isinstance(exc, _CONNECTION):
        return "connection"
    return "other"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class _Entry(NamedTuple):
    at: float  # time.monotonic() when submitted
    record: Record


class _Refused(NamedTuple):
    record: Record
    error: BaseException


# -- the store ------------------------------------------------------------------------------


class Store:
    """Batches submitted records into Postgres from one writer task (`run`), spooling to disk
    whatever cannot be written now. Only `run`, `close`, `load_open` and `purge` touch Postgres or
    the spool, one at a time (`_lock`); `submit` only appends to memory."""

    def __init__(
        self,
        dsn: str,
        spool: Spool,
        observer: StoreObserver,
        *,
        batch_max: int = 500,
        flush_interval_s: float = 0.05,
        retry_s: float = 1.0,
        ping_interval_s: float = 5.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dsn = dsn
        self._spool = spool
        self._observer = observer
        self._batch_max = batch_max
        self._flush_interval_s = flush_interval_s
        self._retry_s = retry_s
        # An idle writer would not notice Postgres going away until the next call: a cheap query
        # now and then keeps hotline_db_up and /readyz honest.
        self._ping_interval_s = ping_interval_s
        # Connect, acquire and every query are bounded (docs §8.3): an unbounded one is how pools
        # hang (aiopg #20, momoko #147); a slow Postgres then counts as down and records spool.
        self._timeout_s = timeout_s
        self._clock = clock  # wall clock, epoch seconds: the spool's ages survive restarts
        self._buffer: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pool: Any = None
        self._up = False
        self._reported_up: bool | None = None
        self._down_since: float | None = None  # monotonic
        self._next_attempt = 0.0  # monotonic
        self._next_reminder = 0.0
        self._last_write = time.monotonic()
        # Why Postgres is unusable although it answers: a schema it does not know, or writes it
        # refuses for a reason other than the data (cleared by the next successful write).
        self._schema_problem = ""
        self._write_problem = ""
        self._spool_full = False
        self._dropped = 0
        self._closed = False
        self._skips_reported: set[Segment] = set()

    # -- the producer side: never blocks, never raises -------------------------------------

    def submit(self, record: CallRecord | MemberSession | PauseInterval) -> None:
        self._buffer.append(_Entry(time.monotonic(), record))
        if len(self._buffer) == 1 or len(self._buffer) >= self._batch_max:
            self._wake.set()

    @property
    def up(self) -> bool:
        return self._up

    def status(self) -> str:
        """One line for /readyz, "" when Postgres is up and nothing is waiting on disk."""
        parts: list[str] = []
        if self._schema_problem or self._write_problem:
            parts.append(self._schema_problem or self._write_problem)
        elif not self._up:
            if self._down_since is None:
                parts.append("postgres not connected yet")
            else:
                parts.append(
                    f"postgres unreachable for {time.monotonic() - self._down_since:.0f} s"
                )
        elif self._spool.count:
            parts.append("replaying the spool")
        if self._spool.count:
            parts.append(f"{self._spool.count} records spooled ({_size(self._spool.size_bytes)})")
        if self._spool_full:
            parts.append(
                f"spool full ({_size(self._spool.max_bytes)}): {self._dropped} records dropped"
            )
        return "; ".join(parts)

    # -- the writer task ---------------------------------------------------------------------

    async def run(self) -> None:
        """The writer: runs until cancelled or closed. Records being written when it is cancelled
        stay in memory for `close` (a batch leaves memory only once written or spooled)."""
        self._report_up()
        while not self._closed:
            await self._wait_for_work()
            async with self._lock:
                if self._closed:
                    break
                await self._work()
            self._report_backlog()

    async def _wait_for_work(self) -> None:
        while not self._closed:
            now = time.monotonic()
            deadlines: list[float] = []
            if self._pool is None:
                deadlines.append(self._next_attempt)
            elif self._spool.segments():
                return  # Postgres is back: replay first
            else:
                deadlines.append(self._last_write + self._ping_interval_s)
            if len(self._buffer) >= self._batch_max:
                return
            if self._buffer:
                deadlines.append(self._buffer[0].at + self._flush_interval_s)
            deadline = min(deadlines)
            if now >= deadline:
                return
            self._wake.clear()
            self._report_backlog()
            with suppress(TimeoutError):
                async with asyncio.timeout(deadline - now):
                    await self._wake.wait()

    async def _work(self) -> None:
        if self._pool is None and time.monotonic() >= self._next_attempt:
            await self._connect()
        if self._pool is None:
            # Down: memory goes to disk at the flush cadence, so a crash loses little.
            await self._spill(len(self._buffer))
            return
        if self._spool.segments():
            await self._replay()
            return
        if self._buffer:
            await self._flush(min(len(self._buffer), self._batch_max))
        elif time.monotonic() >= self._last_write + self._ping_interval_s:
            await self._ping()

    async def _connect(self) -> bool:
        now = time.monotonic()
        self._next_attempt = now + self._retry_s
        try:
            async with asyncio.timeout(2 * self._timeout_s):
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=2,
                    timeout=self._timeout_s,  # connect
                    command_timeout=self._timeout_s,
                    max_inactive_connection_lifetime=60,
                    server_settings={
                        "application_name": "hotline",
                        "statement_timeout": str(int(self._timeout_s * 1000)),
                    },
                )
                try:
                    await check_schema(pool)
                except BaseException:
                    pool.terminate()
                    raise
        except SchemaError as exc:
            if self._schema_problem != str(exc) or now >= self._next_reminder:
                self._next_reminder = now + _REMIND_EVERY_S
                log.error("db_schema_mismatch", error=str(exc), spooled=self._spool.count)
            self._schema_problem = str(exc)
            self._set_down()
            return False
        except Exception as exc:
            self._set_down()
            self._schema_problem = ""
            if now >= self._next_reminder:
                self._next_reminder = now + _REMIND_EVERY_S
                log.warning(
                    "db_connect_failed",
                    kind=classify(exc),
                    error=repr(exc),
                    down_s=round(now - (self._down_since or now)),
                    spooled=self._spool.count,
                )
            return False
        self._pool = pool
        self._schema_problem = ""
        self._last_write = time.monotonic()
        if not self._up:
            down_s = None if self._down_since is None else round(now - self._down_since)
            log.info("db_connected", down_s=down_s, spooled=self._spool.count)
        self._up = True
        self._down_since = None
        self._next_reminder = 0.0
        self._report_up()
        return True

    def _set_down(self) -> None:
        if self._pool is not None:
            # Recreate rather than expire: pools can fail to recover after a server restart
            # (asyncpg #447, #385), and terminate() frees the sockets without waiting on them.
            self._pool.terminate()
            self._pool = None
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._up = False
        self._report_up()
        self._next_attempt = time.monotonic() + self._retry_s

    def _report_up(self) -> None:
        if self._reported_up != self._up:
            self._reported_up = self._up
            self._observer.db_up(self._up)

    def _failed(self, exc: Exception, while_: str) -> None:
        """A query failed with anything but a data error: the records stay (spooled), the pool is
        dropped and rebuilt after retry_s."""
        kind = classify(exc)
        self._observer.write_error(kind)
        now = time.monotonic()
        if kind == "other":
            # Not an outage but a bug or a database set up wrongly (a permission, a missing
            # table): retried like an outage so nothing is lost, and loud, but not every second.
            problem = f"postgres refuses the writes: {_describe(exc)}"
            if problem != self._write_problem or now >= self._next_reminder:
                log.error("db_write_failed", kind=kind, during=while_, exc_info=exc)
            self._write_problem = problem
        elif self._up:  # the first failure of an outage; db_connect_failed reminds after that
            log.warning("db_write_failed", kind=kind, during=while_, error=repr(exc))
        if now >= self._next_reminder or self._up:
            self._next_reminder = now + _REMIND_EVERY_S
        self._set_down()

    async def _ping(self) -> None:
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                await conn.fetchval("SELECT 1")
        except Exception as exc:
            self._failed(exc, "ping")
            return
        self._last_write = time.monotonic()

    async def _flush(self, n: int) -> None:
        """Write the oldest `n` records in memory; spill everything to disk if Postgres fails."""
        batch = [self._buffer[i].record for i in range(n)]
        try:
            await self._upsert(batch)
        except Exception as exc:
            self._failed(exc, "flush")
            await self._spill(len(self._buffer))
            return
        for _ in range(n):
            self._buffer.popleft()

    async def _replay(self) -> None:
        """Write the spool to Postgres oldest segment first, removing each segment once written."""
        for segment in self._spool.segments():
            content = await asyncio.to_thread(self._spool.read, segment)
            if content.skipped and segment not in self._skips_reported:
                self._skips_reported.add(segment)
                log.error("spool_lines_skipped", segment=segment.path.name, lines=content.skipped)
                self._observer.dropped("invalid", content.skipped)
            records: list[Record] = []
            invalid: list[dict[str, Any]] = []
            for item in content.items:
                try:
                    records.append(from_json(item))
                except (ValueError, KeyError, TypeError):
                    invalid.append(item)
            if invalid:
                await self._dead_letter(
                    [{"error": "not a record", "item": item} for item in invalid]
                )
            for start in range(0, len(records), self._batch_max):
                try:
                    await self._upsert(records[start : start + self._batch_max])
                except Exception as exc:
                    self._failed(exc, "replay")
                    return  # this segment stays, to be replayed whole next time
            await asyncio.to_thread(self._spool.remove, segment)
            self._skips_reported.discard(segment)
            log.info("spool_segment_replayed", segment=segment.path.name, records=len(records))
        if not self._spool.segments():
            self._spool_full = False

    async def _upsert(self, records: Sequence[Record]) -> None:
        """Upsert in one transaction; a batch Postgres refuses (data or constraint error) is
        retried row by row so that only the bad rows go to the dead letters. Raises on anything
        else, with nothing committed."""
        kept, duplicates, superseded = _collapse(records)
        refused: list[_Refused] = []
        async with self._pool.acquire(timeout=self._timeout_s) as conn:
            try:
                async with conn.transaction():
                    done = [await self._upsert_table(conn, t, kept) for t in _TABLES]
            except _CONSTRAINT as exc:
                log.warning("db_batch_refused", records=len(kept), error=_describe(exc))
                done = []
                for record in kept:
                    try:
                        done.append(await self._upsert_table(conn, _table(record), [record]))
                    except _CONSTRAINT as row_exc:
                        refused.append(_Refused(record, row_exc))
        self._last_write = time.monotonic()
        self._write_problem = ""
        if refused:
            await self._refuse(refused)
        written: set[tuple[Any, ...]] = set()
        for table, keys, seconds in done:
            if keys is not None:
                self._observer.write_done(table, len(keys), seconds)
                written |= keys
        not_kept = {_key(item.record) for item in refused}
        for record in kept:
            key = _key(record)
            if key not in written and key not in not_kept:
                duplicates[key[0]] += 1 + superseded.get(key, 0)
        for table, n in duplicates.items():
            if n:
                self._observer.duplicates(table, n)

    async def _upsert_table(
        self, conn: Any, table: _Table, records: Sequence[Record]
    ) -> tuple[str, set[tuple[Any, ...]] | None, float]:
        """(table, the keys of the rows written, seconds); rows not written were not newer than
        the stored ones. None when the batch had nothing for this table."""
        rows = [_row(r) for r in records if _table(r) is table]
        if not rows:
            return table.name, None, 0.0
        started = time.perf_counter()
        returned = await conn.fetch(
            table.upsert, *(list(column) for column in zip(*rows, strict=True))
        )
        keys = {(table.name, *row.values()) for row in returned}
        return table.name, keys, time.perf_counter() - started

    async def _refuse(self, refused: list[_Refused]) -> None:
        for item in refused:
            self._observer.write_error("constraint")
            log.error(
                "db_record_refused",
                table=_table(item.record).name,
                error=_describe(item.error),
            )
        await self._dead_letter(
            [{"error": _describe(item.error), "record": to_json(item.record)} for item in refused]
        )

    async def _dead_letter(self, items: list[dict[str, Any]]) -> None:
        at = datetime.fromtimestamp(self._clock(), tz=UTC).isoformat()
        stamped = [{"at": at, **item} for item in items]
        try:
            kept = await asyncio.to_thread(self._spool.dead_letter, stamped)
        except OSError as exc:
            log.error("dead_letter_failed", error=repr(exc))
            kept = False
        if not kept:
            self._count_dropped("invalid", len(items))

    async def _spill(self, n: int) -> None:
        """Move the oldest `n` records in memory to the spool. Call records go first and may use
        the whole spool; presence records only the first 90 %, so they are shed first."""
        if n == 0:
            return
        records = [self._buffer[i].record for i in range(n)]
        calls = [r for r in records if isinstance(r, CallRecord)]
        presence = [r for r in records if not isinstance(r, CallRecord)]
        now = self._clock()

        def write() -> tuple[int, int]:  # in a thread: encoding a big backlog takes a while too
            written_calls = self._spool.append_fitting([to_json(r) for r in calls], now)
            share = int(self._spool.max_bytes * _PRESENCE_SHARE)
            items = [to_json(r) for r in presence]
            return written_calls, self._spool.append_fitting(items, now, limit=share)

        try:
            written_calls, written_presence = await asyncio.to_thread(write)
        except OSError as exc:  # the disk is full or failing: the records cannot be kept
            log.error("spool_write_failed", error=repr(exc))
            written_calls, written_presence = 0, 0
        for _ in range(n):
            self._buffer.popleft()
        lost = n - written_calls - written_presence
        if lost:
            self._spool_full = True
            self._count_dropped("spool_full", lost)
            log.error(
                "records_dropped",
                reason="spool_full",
                records=lost,
                calls=len(calls) - written_calls,
                presence=len(presence) - written_presence,
                spool_bytes=self._spool.size_bytes,
                max_bytes=self._spool.max_bytes,
            )
        else:
            self._spool_full = False
        log.debug("records_spooled", records=n - lost, spooled=self._spool.count)

    def _count_dropped(self, reason: str, n: int) -> None:
        self._dropped += n
        self._observer.dropped(reason, n)

    def _report_backlog(self) -> None:
        memory_age = time.monotonic() - self._buffer[0].at if self._buffer else 0.0
        self._observer.backlog(
            memory=len(self._buffer),
            spool=self._spool.count,
            oldest_age_s=max(memory_age, self._spool.oldest_age_s(self._clock())),
            spool_bytes=self._spool.size_bytes,
        )

    # -- shutdown, restore, retention --------------------------------------------------------

    async def close(self) -> None:
        """Flush memory to Postgres if it answers within about 2 s, else to the spool; end `run`."""
        self._closed = True
        self._wake.set()
        async with self._lock:
            if self._buffer:
                # Anything already spooled must be written first, and a replay may take longer
                # than systemd's stop timeout: then memory joins it on disk.
                with suppress(TimeoutError):
                    async with asyncio.timeout(_CLOSE_BUDGET_S):
                        if self._pool is None:
                            await self._connect()
                        while self._buffer and self._pool is not None:
                            if self._spool.segments():
                                break
                            await self._flush(min(len(self._buffer), self._batch_max))
                await self._spill(len(self._buffer))
            if self._pool is not None:
                try:
                    async with asyncio.timeout(_CLOSE_BUDGET_S):
                        await self._pool.close()
                except (TimeoutError, *_CONNECTION):
                    self._pool.terminate()
                self._pool = None
            await asyncio.to_thread(self._spool.close)
            self._report_backlog()
            self._up = False
            self._report_up()

    async def _ready_pool(self, schema_errors: bool = False) -> Any:
        if self._pool is None and not await self._connect():
            if schema_errors and self._schema_problem:
                raise SchemaError(self._schema_problem)
            raise StoreUnavailable(self.status())
        return self._pool

    async def load_open(
        self,
    ) -> tuple[list[CallRecord], list[MemberSession], list[PauseInterval]]:
        """The records still open (no outcome, not left, not ended), to rebuild state after a
        crash. What waits in the spool and in memory is written first, so it counts. Raises
        StoreUnavailable if Postgres cannot be used now, SchemaError if it answers with a schema
        this code does not know (at start-up, that is a deployment to stop, not an outage)."""
        async with self._lock:
            await self._ready_pool(schema_errors=True)
            if self._spool.segments():
                await self._replay()
            while self._buffer and self._pool is not None:
                await self._flush(min(len(self._buffer), self._batch_max))
            pool = await self._ready_pool()
            if self._spool.segments():
                raise StoreUnavailable(f"the spool could not be replayed: {self.status()}")
            try:
                async with pool.acquire(timeout=self._timeout_s) as conn:
                    calls = [_call(r) for r in await conn.fetch(_CALLS.select_open)]
                    sessions = [MemberSession(**r) for r in await conn.fetch(_SESSIONS.select_open)]
                    pauses = [PauseInterval(**r) for r in await conn.fetch(_PAUSES.select_open)]
            except Exception as exc:
                if classify(exc) == "other":
                    raise
                self._failed(exc, "load_open")
                raise StoreUnavailable(repr(exc)) from exc
        return calls, sessions, pauses

    async def purge(self, older_than_days: int) -> int:
        """Delete calls that ended, and sessions and pauses that closed, more than N days ago
        (by the database's clock); return the rows deleted. A call never closed (hotline was
        away when it ended) is deleted N days after it entered: retention is a privacy promise.
        Raises StoreUnavailable if Postgres cannot be used now (a wrong schema included: the
        writer reports that one through `status`)."""
        async with self._lock:
            pool = await self._ready_pool()
        started = time.perf_counter()
        try:
            async with pool.acquire(timeout=self._timeout_s) as conn:
                deleted = await _purge(conn, older_than_days)
        except Exception as exc:
            if classify(exc) == "other":
                raise
            raise StoreUnavailable(repr(exc)) from exc
        self._observer.write_done("purge", deleted, time.perf_counter() - started)
        log.info("records_purged", older_than_days=older_than_days, rows=deleted)
        return deleted


_PURGE = (
    "DELETE FROM hotline.calls WHERE coalesce(ended_at, entered_at, updated_at)"
    " < now() - make_interval(days => $1)",
    "DELETE FROM hotline.member_sessions WHERE left_at < now() - make_interval(days => $1)",
    "DELETE FROM hotline.pauses WHERE ended_at < now() - make_interval(days => $1)",
)


async def _purge(conn: Any, older_than_days: int) -> int:
    deleted = 0
    async with conn.transaction():
        # A year of rows can take longer than the writer's 5 s bound.
        await conn.execute("SET LOCAL statement_timeout = '10min'")
        for sql in _PURGE:
            tag = await conn.execute(sql, older_than_days, timeout=600)
            deleted += int(tag.rsplit(" ", 1)[1])
    return deleted


async def purge(dsn: str, older_than_days: int) -> int:
    """`hotline purge`: the daemon's daily retention, run once by hand; returns rows deleted.
    Raises StoreUnavailable when Postgres cannot be reached, SchemaError for an unknown schema."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await check_schema(conn)
            return await _purge(conn, older_than_days)
        finally:
            await conn.close()
    except (SchemaError, StoreUnavailable):
        raise
    except Exception as exc:
        if classify(exc) == "other":
            raise
        raise StoreUnavailable(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    """The error without its DETAIL, which repeats the row's values (a caller key among them)."""
    sqlstate = getattr(exc, "sqlstate", None)
    constraint = getattr(exc, "constraint_name", None)
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if sqlstate:
        text += f" (sqlstate {sqlstate}"
        text += f", constraint {constraint})" if constraint else ")"
    return text
