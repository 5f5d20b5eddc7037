"""The writer task: records submitted by the ledger are upserted into Postgres in batches, one
transaction each. While Postgres is away or slow they go to the on-disk spool and are replayed in
order when it is back: at least once from AMI to Postgres, exactly-once effect through
forward-only upserts (docs/data-model.md, "Durability"). Also the daily retention, and the open
records read back after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, Protocol

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from hotline.adapters.store.codec import from_json, from_row, to_json, to_row
from hotline.adapters.store.errors import (
    CONNECTION_ERRORS,
    CONSTRAINT_ERRORS,
    StoreUnavailable,
    classify,
    describe,
)
from hotline.adapters.store.migrations import SchemaError, check_schema
from hotline.adapters.store.retention import delete_older
from hotline.adapters.store.spool import Segment, Spool
from hotline.adapters.store.tables import CALLS, PAUSES, SESSIONS, TABLES, Table, table_of
from hotline.core.records import (
    CallRecord,
    DropReason,
    MemberSession,
    PauseInterval,
    Record,
    WriteErrorKind,
    WriteOp,
)
from hotline.core.records import Table as TableName

log = structlog.get_logger(__name__)

# The last tenth of the spool is kept for call records: presence records are shed first
# (docs/data-model.md, "Shedding: presence first").
_PRESENCE_SHARE: Final = 0.9
_REMIND_EVERY_S: Final = 60.0


class StoreObserver(Protocol):
    """What the store reports; the metrics implement it (docs/metrics.md, "Persistence")."""

    def db_up(self, up: bool) -> None: ...

    def write_done(self, op: WriteOp, rows: int, seconds: float) -> None: ...

    def write_error(self, kind: WriteErrorKind) -> None: ...

    def duplicates(self, table: TableName, n: int) -> None: ...

    def backlog(self, memory: int, spool: int, oldest_age_s: float, spool_bytes: int) -> None: ...

    def dropped(self, reason: DropReason, n: int) -> None: ...


def _collapse(
    records: Sequence[Record],
) -> tuple[list[Record], Counter[TableName], dict[tuple[Any, ...], int]]:
    """Keep, per key, the record the row would end with if the batch were applied one by one
    (one statement cannot update a row twice). Returns the kept records, per table the records
    that could not have moved their row forward (duplicates, like those ON CONFLICT skips), and
    per key how many lower records a kept one superseded: if the kept one turns out not to be
    newer than the stored row, neither were they."""
    index: dict[tuple[Any, ...], int] = {}
    kept: list[Record] = []
    duplicates: Counter[TableName] = Counter()
    superseded: dict[tuple[Any, ...], int] = {}
    for record in records:
        table = table_of(record)
        key = table.key_of(record)
        i = index.get(key)
        if i is None:
            index[key] = len(kept)
            kept.append(record)
        elif table.order_of(record) > table.order_of(kept[i]):
            kept[i] = record
            superseded[key] = superseded.get(key, 0) + 1
        else:
            duplicates[key[0]] += 1
    return kept, duplicates, superseded


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
        # Connect, acquire and every query are bounded (docs/data-model.md, "Bounded timeouts"):
        # an unbounded one is how pools hang (aiopg #20, momoko #147); a slow Postgres then counts
        # as down and records spool.
        self._timeout_s = timeout_s
        self._clock = clock  # wall clock, epoch seconds: the spool's ages survive restarts
        self._buffer: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pool: asyncpg.Pool | None = None
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

    def submit(self, record: Record) -> None:
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
            problem = f"postgres refuses the writes: {describe(exc)}"
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
            async with self._live_pool().acquire(timeout=self._timeout_s) as conn:
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
        async with self._live_pool().acquire(timeout=self._timeout_s) as conn:
            try:
                async with conn.transaction():
                    done = [await self._upsert_table(conn, t, kept) for t in TABLES]
            except CONSTRAINT_ERRORS as exc:
                log.warning("db_batch_refused", records=len(kept), error=describe(exc))
                done = []
                for record in kept:
                    try:
                        done.append(await self._upsert_table(conn, table_of(record), [record]))
                    except CONSTRAINT_ERRORS as row_exc:
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
        not_kept = {table_of(item.record).key_of(item.record) for item in refused}
        for record in kept:
            key = table_of(record).key_of(record)
            if key not in written and key not in not_kept:
                duplicates[key[0]] += 1 + superseded.get(key, 0)
        for table, n in duplicates.items():
            if n:
                self._observer.duplicates(table, n)

    async def _upsert_table(
        self, conn: PoolConnectionProxy, table: Table, records: Sequence[Record]
    ) -> tuple[TableName, set[tuple[Any, ...]] | None, float]:
        """(table, the keys of the rows written, seconds); rows not written were not newer than
        the stored ones. None when the batch had nothing for this table."""
        rows = [to_row(r) for r in records if table_of(r) is table]
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
                table=table_of(item.record).name,
                error=describe(item.error),
            )
        await self._dead_letter(
            [{"error": describe(item.error), "record": to_json(item.record)} for item in refused]
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

    def _count_dropped(self, reason: DropReason, n: int) -> None:
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

    async def close(self, budget_s: float) -> None:
        """Flush memory to Postgres if it answers within `budget_s`, else to the spool; end `run`.
        Closing the pool gets the same budget again."""
        self._closed = True
        self._wake.set()
        async with self._lock:
            if self._buffer:
                # Anything already spooled must be written first, and a replay may take longer
                # than systemd's stop timeout: then memory joins it on disk.
                with suppress(TimeoutError):
                    async with asyncio.timeout(budget_s):
                        if self._pool is None:
                            await self._connect()
                        while self._buffer and self._pool is not None:
                            if self._spool.segments():
                                break
                            await self._flush(min(len(self._buffer), self._batch_max))
                await self._spill(len(self._buffer))
            if self._pool is not None:
                try:
                    async with asyncio.timeout(budget_s):
                        await self._pool.close()
                except (TimeoutError, *CONNECTION_ERRORS):
                    self._pool.terminate()
                self._pool = None
            await asyncio.to_thread(self._spool.close)
            self._report_backlog()
            self._up = False
            self._report_up()

    async def _ready_pool(self, schema_errors: bool = False) -> asyncpg.Pool:
        if self._pool is None and not await self._connect():
            if schema_errors and self._schema_problem:
                raise SchemaError(self._schema_problem)
            raise StoreUnavailable(self.status())
        return self._live_pool()

    def _live_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("postgres not connected")
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
                    calls = [from_row(CallRecord, r) for r in await conn.fetch(CALLS.select_open)]
                    sessions = [
                        from_row(MemberSession, r) for r in await conn.fetch(SESSIONS.select_open)
                    ]
                    pauses = [
                        from_row(PauseInterval, r) for r in await conn.fetch(PAUSES.select_open)
                    ]
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
                deleted = await delete_older(conn, older_than_days)
        except Exception as exc:
            if classify(exc) == "other":
                raise
            raise StoreUnavailable(repr(exc)) from exc
        self._observer.write_done("purge", deleted, time.perf_counter() - started)
        log.info("records_purged", older_than_days=older_than_days, rows=deleted)
        return deleted
