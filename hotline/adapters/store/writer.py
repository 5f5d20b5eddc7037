"""The writer task: records submitted by the ledger are upserted into Postgres in batches, one
transaction each. While Postgres is away or slow they go to the on-disk spool and are replayed in
order when it is back: at least once from AMI to Postgres, exactly-once effect through
forward-only upserts (docs/data-model.md, "Durability"). A record that cannot be stored (Postgres
refuses it, or it cannot be encoded or read back) is isolated, set aside in the dead letters and
counted, and never holds up the records after it. Also the daily retention, of the rows and of the
dead letters, and the open records read back after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple, Protocol

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from hotline.adapters.store.codec import (
    CodecError,
    from_json,
    from_row,
    kind_of,
    loose_json,
    problem,
    to_json,
    to_row,
)
from hotline.adapters.store.errors import CONNECTION_ERRORS, StoreUnavailable, classify, describe
from hotline.adapters.store.migrations import SchemaError, open_pool
from hotline.adapters.store.retention import delete_older
from hotline.adapters.store.spool import Segment, Spool, Unreadable, encode
from hotline.adapters.store.tables import CALLS, PAUSES, SESSIONS, TABLES, Table, table_of
from hotline.core.health import NotReady
from hotline.core.records import (
    CallRecord,
    DeadLetterReason,
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
# While the disk under the spool refuses writes (full), records stay in memory up to this many,
# the oldest beyond it dropped (docs/data-model.md, "A full disk").
HELD_MAX: Final = 50_000

# The table of a dead letter; "unknown" for a spool line that does not say which record it is.
LetterTable = Literal[TableName, "unknown"]


class StoreObserver(Protocol):
    """What the store reports; the metrics implement it (docs/metrics.md, "Persistence")."""

    def db_up(self, up: bool) -> None: ...

    def write_done(self, op: WriteOp, rows: int, seconds: float) -> None: ...

    def write_error(self, kind: WriteErrorKind) -> None: ...

    def duplicates(self, table: TableName, n: int) -> None: ...

    def backlog(self, memory: int, spool: int, oldest_age_s: float, spool_bytes: int) -> None: ...

    def dropped(self, reason: DropReason, n: int) -> None: ...

    def dead_lettered(self, table: LetterTable, reason: DeadLetterReason, n: int) -> None: ...


class _Row(NamedTuple):
    """A record ready for its table: its key, its place in the forward-only order, its values."""

    record: Record
    table: Table
    key: tuple[Any, ...]
    order: tuple[Any, ...]
    values: tuple[Any, ...]


class _Letter(NamedTuple):
    """A dead letter before it is stamped: why, and what (`body`: the record, the spooled item
    or the line, under its own name)."""

    table: LetterTable
    reason: DeadLetterReason
    error: str  # what is wrong, never a value
    body: dict[str, Any]


_OF_TYPE: Final[dict[type, LetterTable]] = {t.record: t.name for t in TABLES}


def _prepare(records: Sequence[Record]) -> tuple[list[_Row], list[_Letter]]:
    """Each record as a row, or, if it cannot be one (a value of the wrong type, a key that cannot
    be hashed or an order that cannot be compared), as a dead letter: one bad record never fails
    the others' batch."""
    rows: list[_Row] = []
    letters: list[_Letter] = []
    for record in records:
        try:
            table = table_of(record)
            key = table.key_of(record)
            hash(key)
            order = table.order_of(record)
            if not all(type(value) is int for value in order):
                raise TypeError("the forward-only order is not made of integers")
            rows.append(_Row(record, table, key, order, to_row(record)))
        except Exception as exc:  # a codec's or a field's failure: this record's alone
            letters.append(_unencodable(record, exc))
    return rows, letters


def _unencodable(record: Record, exc: BaseException) -> _Letter:
    error = problem(record) or f"cannot be encoded ({type(exc).__name__})"
    return _Letter(
        _OF_TYPE.get(type(record), "unknown"), "encode", error, {"record": loose_json(record)}
    )


def _collapse(
    rows: Sequence[_Row],
) -> tuple[list[_Row], Counter[TableName], dict[tuple[Any, ...], int]]:
    """Keep, per key, the record the row would end with if the batch were applied one by one
    (one statement cannot update a row twice). Returns the kept rows, per table the records
    that could not have moved their row forward (duplicates, like those ON CONFLICT skips), and
    per key how many lower records a kept one superseded: if the kept one turns out not to be
    newer than the stored row, neither were they."""
    index: dict[tuple[Any, ...], int] = {}
    kept: list[_Row] = []
    duplicates: Counter[TableName] = Counter()
    superseded: dict[tuple[Any, ...], int] = {}
    for row in rows:
        i = index.get(row.key)
        if i is None:
            index[row.key] = len(kept)
            kept.append(row)
        elif row.order > kept[i].order:
            kept[i] = row
            superseded[row.key] = superseded.get(row.key, 0) + 1
        else:
            duplicates[row.table.name] += 1
    return kept, duplicates, superseded


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class _Entry(NamedTuple):
    at: float  # time.monotonic() when submitted
    record: Record


class _Spilled(NamedTuple):
    """Where the records offered to the spool went, by their index in the offer."""

    spooled: int
    no_room: list[int]  # past the spool's bound: dropped (spool_full)
    held: list[int]  # the disk refused them: kept in memory for now
    bad: list[tuple[int, BaseException]]  # cannot be a spool line: dead letters
    error: OSError | None  # the disk's


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
        held_max: int = HELD_MAX,
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
        self._held_max = held_max
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
        # Why the spool's disk refused the last spill (ENOSPC...), while it does; the records it
        # refused are held in memory, and no spill is tried again before _spill_after (monotonic).
        self._disk_problem = ""
        self._disk_dropped = 0
        self._spill_after = 0.0
        self._next_disk_reminder = 0.0
        self._closed = False
        # How many lines of a segment are done (written or set aside) while a replay of it is
        # interrupted, so that resuming it never sets a record aside twice.
        self._replayed: dict[Segment, int] = {}

    # -- the producer side: never blocks, never raises -------------------------------------

    def submit(self, record: Record) -> None:
        self._buffer.append(_Entry(time.monotonic(), record))
        if len(self._buffer) == 1 or len(self._buffer) >= self._batch_max:
            self._wake.set()

    @property
    def up(self) -> bool:
        return self._up

    def status(self) -> str:
        """One line of detail, "" when Postgres is up and nothing is waiting on disk; /readyz
        gives `readiness` instead."""
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
        if self._disk_problem:
            parts.append(
                f"{self._disk_problem}: {len(self._buffer)} records held in memory,"
                f" {self._disk_dropped} dropped"
            )
        if self._spool_full:
            parts.append(
                f"spool full ({_size(self._spool.max_bytes)}): {self._dropped} records dropped"
            )
        return "; ".join(parts)

    def readiness(self) -> list[NotReady]:
        """`status` for /readyz, which anyone who reaches the port may read: fixed reasons only;
        the errors behind them are in the log (db_connect_failed, db_write_failed...)."""
        reasons: list[NotReady] = []
        if self._schema_problem:
            reasons.append(NotReady.POSTGRES_SCHEMA_UNKNOWN)
        elif self._write_problem:
            reasons.append(NotReady.POSTGRES_REFUSES_WRITES)
        elif not self._up:
            reasons.append(NotReady.POSTGRES_UNREACHABLE)
        if self._spool.count:
            reasons.append(NotReady.SPOOL_BACKLOG)
        if self._spool_full or self._disk_problem:
            reasons.append(NotReady.SPOOL_FULL)
        return reasons

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
                if self._buffer:  # to the spool at the flush cadence, if its disk takes them
                    deadlines.append(
                        max(self._buffer[0].at + self._flush_interval_s, self._spill_after)
                    )
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
            if time.monotonic() >= self._spill_after:
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
                pool = await open_pool(
                    self._dsn, self._timeout_s, "hotline", min_size=1, max_size=2
                )
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
        if not self._buffer:  # nothing the spool's disk refused is waiting any more
            self._disk_problem, self._spill_after = "", 0.0

    async def _replay(self) -> None:
        """Write the spool to Postgres oldest segment first, in batches, removing each segment once
        done. A line that is not a record, like a record Postgres refuses, is set aside in the dead
        letters and the lines after it go on. An outage stops the replay; it resumes at the batch
        it stopped in."""
        for segment in self._spool.segments():
            lines = (await asyncio.to_thread(self._spool.read, segment)).lines
            done = self._replayed.get(segment, 0)
            while done < len(lines):
                batch = lines[done : done + self._batch_max]
                records, letters = _decode(batch)
                try:
                    await self._upsert(records)
                except Exception as exc:
                    self._failed(exc, "replay")
                    return  # the segment stays; this batch is repeated next time
                await self._set_aside(letters)
                done += len(batch)
                self._replayed[segment] = done
            await asyncio.to_thread(self._spool.remove, segment)
            self._replayed.pop(segment, None)
            log.info("spool_segment_replayed", segment=segment.path.name, records=len(lines))
        if not self._spool.segments():
            self._spool_full = False

    async def _upsert(self, records: Sequence[Record]) -> None:
        """Upsert in one transaction. A record that cannot be a row, and a record Postgres
        refuses for its data (found by halving the batch until each refused record stands alone),
        go to the dead letters; the others are written. Raises on anything else (Postgres away,
        slow or failing), with the records not yet written left to the caller, who retries them
        all: the forward-only upsert makes the repeats harmless."""
        rows, letters = _prepare(records)
        kept, duplicates, superseded = _collapse(rows)
        written: set[tuple[Any, ...]] = set()
        refused: list[tuple[_Row, BaseException]] = []
        if kept:
            async with self._live_pool().acquire(timeout=self._timeout_s) as conn:
                await self._write_rows(conn, kept, written, refused)
            self._last_write = time.monotonic()
            self._write_problem = ""
        for row, exc in refused:
            self._observer.write_error("constraint")
            error = describe(exc, [column for column, _ in row.table.columns])
            letters.append(_Letter(row.table.name, "constraint", error, {"record": _json(row)}))
        await self._set_aside(letters)
        not_kept = {row.key for row, _ in refused}
        for row in kept:
            if row.key not in written and row.key not in not_kept:
                duplicates[row.table.name] += 1 + superseded.get(row.key, 0)
        for table, n in duplicates.items():
            if n:
                self._observer.duplicates(table, n)

    async def _write_rows(
        self,
        conn: PoolConnectionProxy,
        rows: Sequence[_Row],
        written: set[tuple[Any, ...]],
        refused: list[tuple[_Row, BaseException]],
        whole: bool = True,
    ) -> None:
        """Write `rows` in one transaction, adding the keys of the rows that moved forward to
        `written`. If Postgres refuses them for their data, each half is written the same way, down
        to the single rows it refuses, which are added to `refused`: with k bad rows in n, about
        2·k·log2(n) statements rather than n."""
        try:
            async with conn.transaction():
                done = [await self._upsert_table(conn, table, rows) for table in TABLES]
        except Exception as exc:
            if classify(exc) != "constraint":
                raise
            if len(rows) == 1:
                refused.append((rows[0], exc))
                return
            if whole:
                log.warning("db_batch_refused", records=len(rows), error=describe(exc))
            half = len(rows) // 2
            await self._write_rows(conn, rows[:half], written, refused, whole=False)
            await self._write_rows(conn, rows[half:], written, refused, whole=False)
            return
        for table, keys, seconds in done:
            if keys is not None:
                self._observer.write_done(table, len(keys), seconds)
                written |= keys

    async def _upsert_table(
        self, conn: PoolConnectionProxy, table: Table, rows: Sequence[_Row]
    ) -> tuple[TableName, set[tuple[Any, ...]] | None, float]:
        """(table, the keys of the rows written, seconds); rows not written were not newer than
        the stored ones. None when the batch had nothing for this table."""
        values = [row.values for row in rows if row.table is table]
        if not values:
            return table.name, None, 0.0
        started = time.perf_counter()
        returned = await conn.fetch(
            table.upsert, *(list(column) for column in zip(*values, strict=True))
        )
        keys = {(table.name, *row.values()) for row in returned}
        return table.name, keys, time.perf_counter() - started

    async def _set_aside(self, letters: Sequence[_Letter]) -> None:
        """Keep records that cannot be stored in the dead letters, for a human, and count them
        (hotline_records_dead_lettered_total); if the dead letters cannot take them (full, or their
        disk refuses), they are dropped and counted as such (invalid). The log says which table,
        why and how many, never a value."""
        if not letters:
            return
        at = datetime.fromtimestamp(self._clock(), tz=UTC)
        items = [
            {
                "at": at.isoformat(),
                "reason": letter.reason,
                "table": letter.table,
                "error": letter.error,
                **letter.body,
            }
            for letter in letters
        ]
        dead_letters = self._spool.dead_letters
        try:
            kept = await asyncio.to_thread(dead_letters.add, items, at)
            why = "" if kept else f"the dead letters are full ({_size(dead_letters.max_bytes)})"
        except OSError as exc:
            kept, why = False, f"the dead letters cannot be written ({exc.strerror or exc!r})"
        groups = Counter((letter.table, letter.reason, letter.error) for letter in letters)
        for (table, reason, error), n in groups.items():
            log.error(
                "records_dead_lettered" if kept else "records_dropped",
                table=table,
                reason=reason if kept else "invalid",
                error=error,
                records=n,
                **({} if kept else {"why": why}),
            )
        if not kept:
            self._count_dropped("invalid", len(letters))
            return
        for (table, reason), n in Counter((ltr.table, ltr.reason) for ltr in letters).items():
            self._observer.dead_lettered(table, reason, n)

    async def _spill(self, n: int) -> None:
        """Move the oldest `n` records in memory to the spool. Call records go first and may use
        the whole spool; presence records only the first 90 %, so they are shed first. What does
        not fit the spool's bound is dropped (spool_full). What its disk refuses (full) stays in
        memory for the next try, up to `held_max` records in memory, the oldest beyond that
        dropped (disk_full). A record that cannot be a spool line goes to the dead letters."""
        if n == 0:
            return
        entries = [self._buffer[i] for i in range(n)]
        now = self._clock()
        share = int(self._spool.max_bytes * _PRESENCE_SHARE)

        def write() -> _Spilled:  # in a thread: encoding a big backlog takes a while too
            calls: list[tuple[int, bytes]] = []
            presence: list[tuple[int, bytes]] = []
            bad: list[tuple[int, BaseException]] = []
            for i, entry in enumerate(entries):
                try:
                    line = encode(to_json(entry.record))
                except Exception as exc:  # this record's alone
                    bad.append((i, exc))
                    continue
                (calls if isinstance(entry.record, CallRecord) else presence).append((i, line))
            spooled, no_room, held, error = 0, [], [], None
            for group, limit in ((calls, None), (presence, share)):
                result = self._spool.append_lines([line for _, line in group], now, limit)
                spooled += result.written
                rest = [i for i, _ in group[result.written :]]
                if result.error is None:
                    no_room += rest
                else:
                    held += rest
                    error = result.error
            return _Spilled(spooled, no_room, sorted(held), bad, error)

        spilled = await asyncio.to_thread(write)
        for _ in range(n):
            self._buffer.popleft()
        self._buffer.extendleft(reversed([entries[i] for i in spilled.held]))
        if spilled.no_room:
            calls = sum(isinstance(entries[i].record, CallRecord) for i in spilled.no_room)
            self._spool_full = True
            self._count_dropped("spool_full", len(spilled.no_room))
            log.error(
                "records_dropped",
                reason="spool_full",
                records=len(spilled.no_room),
                calls=calls,
                presence=len(spilled.no_room) - calls,
                spool_bytes=self._spool.size_bytes,
                max_bytes=self._spool.max_bytes,
            )
        else:
            self._spool_full = False
        if spilled.error is not None:
            self._disk_refused(spilled.error)
        else:
            self._disk_problem, self._spill_after = "", 0.0
        if spilled.bad:
            await self._set_aside([_unencodable(entries[i].record, exc) for i, exc in spilled.bad])
        log.debug("records_spooled", records=spilled.spooled, spooled=self._spool.count)

    def _disk_refused(self, error: OSError) -> None:
        """The spool's disk refused a spill (full, or failing): what it refused waits in memory,
        the oldest beyond `held_max` dropped, and the next spill waits `retry_s`."""
        now = time.monotonic()
        problem = f"the spool's disk refuses writes ({error.strerror or type(error).__name__})"
        if problem != self._disk_problem or now >= self._next_disk_reminder:
            self._next_disk_reminder = now + _REMIND_EVERY_S
            log.error(
                "spool_write_failed",
                error=repr(error),
                held=len(self._buffer),
                spool_bytes=self._spool.size_bytes,
            )
        self._disk_problem = problem
        self._spill_after = now + self._retry_s
        excess = len(self._buffer) - self._held_max
        if excess > 0:
            for _ in range(excess):
                self._buffer.popleft()
            self._drop_on_disk_full(excess)

    def _drop_on_disk_full(self, n: int) -> None:
        self._disk_dropped += n
        self._count_dropped("disk_full", n)
        log.error("records_dropped", reason="disk_full", records=n, held=len(self._buffer))

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
            if self._buffer:  # what the spool's disk refused, and this process is ending: lost
                lost = len(self._buffer)
                self._buffer.clear()
                self._drop_on_disk_full(lost)
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
        writer reports that one through `status`). The dead letters set aside more than N days
        ago go first, whether Postgres answers or not."""
        await self._purge_dead_letters(older_than_days)
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

    async def _purge_dead_letters(self, older_than_days: int) -> None:
        """Delete the days of dead letters past retention (by the wall clock); never raises."""
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        try:
            pruned = await asyncio.to_thread(self._spool.dead_letters.prune, older_than_days, now)
        except OSError as exc:
            log.error("dead_letters_purge_failed", error=repr(exc))
            return
        if pruned.files:
            log.info(
                "dead_letters_purged",
                older_than_days=older_than_days,
                files=pruned.files,
                records=pruned.records,
            )


def _decode(lines: Sequence[dict[str, Any] | Unreadable]) -> tuple[list[Record], list[_Letter]]:
    """The records of spool lines, and a dead letter for each line that is not one."""
    records: list[Record] = []
    letters: list[_Letter] = []
    for line in lines:
        if isinstance(line, Unreadable):
            text = line.raw.decode("utf-8", "backslashreplace")
            letters.append(_Letter("unknown", "unreadable", "not a JSON object", {"line": text}))
            continue
        try:
            records.append(from_json(line))
        except Exception as exc:  # a CodecError, or any failure: this line's alone
            cls = kind_of(line)
            table: LetterTable = "unknown" if cls is None else _OF_TYPE[cls]
            error = (
                str(exc) if isinstance(exc, CodecError) else f"not a record ({type(exc).__name__})"
            )
            letters.append(_Letter(table, "decode", error, {"item": line}))
    return records, letters


def _json(row: _Row) -> dict[str, Any]:
    """A refused record as a dead letter holds it: as the spool would, or as near as it can."""
    try:
        item = to_json(row.record)
        encode(item)
    except Exception:  # written as text rather than lost
        return loose_json(row.record)
    return item
