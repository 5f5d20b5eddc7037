"""The Postgres store and its spool against a real PostgreSQL (tests/pg.py): migrations,
forward-only upserts, outages (the server crashed with `pg_ctl stop -m immediate`), a full spool,
a torn spool line, restore after a crash, retention."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from hotline.adapters.store.codec import from_json, to_json
from hotline.adapters.store.errors import StoreUnavailable
from hotline.adapters.store.migrations import (
    SCHEMA_VERSION,
    SchemaError,
    check_schema,
    migrate,
    migrations,
)
from hotline.adapters.store.spool import Spool
from hotline.adapters.store.writer import Store
from hotline.core.records import (
    AttemptOutcome,
    CallRecord,
    MemberSession,
    Outcome,
    PauseInterval,
    RingAttempt,
)
from tests.pg import PgCluster, free_port

T0 = datetime(2026, 1, 5, 3, 0, 0, 250_000, tzinfo=UTC)
# What a stop may spend writing to Postgres (the default of database.flush_timeout).
FLUSH_S = 2.0

# -- fixtures ----------------------------------------------------------------------------------


def _started_cluster() -> PgCluster:
    """A running cluster, or a test failure that says why (never a skip)."""
    cluster: PgCluster | None = None
    try:
        cluster = PgCluster()
        cluster.start()
    except Exception as exc:  # turned into a failure with the reason
        if cluster is not None:
            cluster.destroy()
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[PgCluster]:
    """One cluster for the session; tests that stop Postgres use `own_cluster`."""
    instance = _started_cluster()
    yield instance
    instance.destroy()


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    instance = _started_cluster()
    yield instance
    instance.destroy()


@dataclass(frozen=True)
class Db:
    cluster: PgCluster
    name: str

    @property
    def dsn(self) -> str:
        return self.cluster.dsn_for(self.name)

    async def query(self, sql: str) -> list[str]:
        """Rows as `|`-separated text, from psql (in a thread: it blocks)."""
        out = await asyncio.to_thread(self.cluster.psql, sql, self.name)
        return out.splitlines()


def _fresh_database(cluster: PgCluster) -> Iterator[Db]:
    db = Db(cluster, f"t_{uuid.uuid4().hex[:12]}")
    cluster.create_database(db.name)
    yield db
    if cluster.running:
        cluster.drop_database(db.name)


@pytest.fixture
def database(cluster: PgCluster) -> Iterator[Db]:
    """A fresh, empty database of this test's own."""
    yield from _fresh_database(cluster)


@pytest.fixture
async def migrated(database: Db) -> Db:
    await migrate(database.dsn)
    return database


@pytest.fixture
async def own_migrated(own_cluster: PgCluster) -> AsyncIterator[Db]:
    for db in _fresh_database(own_cluster):
        await migrate(db.dsn)
        yield db


@dataclass
class RecordingObserver:
    ups: list[bool] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    dups: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    dead: Counter[tuple[str, str]] = field(default_factory=Counter)  # (table, reason)
    last_backlog: tuple[int, int, float, int] = (0, 0, 0.0, 0)

    def db_up(self, up: bool) -> None:
        self.ups.append(up)

    def write_done(self, op: str, rows: int, seconds: float) -> None:
        self.rows[op] += rows

    def write_error(self, kind: str) -> None:
        self.errors[kind] += 1

    def duplicates(self, table: str, n: int) -> None:
        self.dups[table] += n

    def backlog(self, memory: int, spool: int, oldest_age_s: float, spool_bytes: int) -> None:
        self.last_backlog = (memory, spool, oldest_age_s, spool_bytes)

    def dropped(self, reason: str, n: int) -> None:
        self.drops[reason] += n

    def dead_lettered(self, table: str, reason: str, n: int) -> None:
        self.dead[table, reason] += n


@contextlib.asynccontextmanager
async def running(store: Store) -> AsyncIterator[Store]:
    """The store's writer task for the duration of the block; closed (flushed) at the end."""
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(store.run())
        try:
            yield store
        finally:
            await store.close(FLUSH_S)


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_for_rows(db: Db, sql: str, expected: list[str], within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (rows := await db.query(sql)) != expected:
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {sql}: {rows}")
        await asyncio.sleep(0.02)


def unreachable_dsn() -> str:
    """A DSN nobody listens on: Postgres "down" without stopping anything."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


@dataclass(frozen=True)
class Rig:
    store: Store
    spool: Spool
    seen: RecordingObserver


def make_store(
    dsn: str,
    spool_dir: Path,
    max_bytes: int = 50_000_000,
    flush_interval_s: float = 0.05,
    timeout_s: float = 5.0,
) -> Rig:
    """A store retrying every 0.1 s, with its spool and what it reported."""
    spool, seen = Spool(spool_dir, max_bytes), RecordingObserver()
    store = Store(
        dsn, spool, seen, retry_s=0.1, flush_interval_s=flush_interval_s, timeout_s=timeout_s
    )
    return Rig(store, spool, seen)


def call(
    n: int,
    *,
    rank: int = 1,
    revision: int = 1,
    entered_at: datetime = T0,
    ended_at: datetime | None = None,
    outcome: Outcome | None = None,
) -> CallRecord:
    answered = rank >= 2
    return CallRecord(
        uniqueid=f"1767582000.{n}",
        queue="crisis",
        visit=1,
        entered_at=entered_at,
        position=n % 7 + 1,
        campaign="988",
        caller_key=None if n % 5 == 0 else f"k2026q1:{'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[n % 26] * 26}",
        caller_key_id=None if n % 5 == 0 else "2026q1",
        caller_withheld=n % 5 == 0,
        attempts=(
            RingAttempt("r-ana", entered_at + timedelta(seconds=2), AttemptOutcome.NOANSWER, 15000),
            RingAttempt(
                "r-ben",
                entered_at + timedelta(seconds=17),
                AttemptOutcome.ANSWERED if answered else AttemptOutcome.RINGING,
                3200 if answered else None,
            ),
        )
        if n % 3
        else (),
        answered_at=entered_at + timedelta(seconds=20.5) if answered else None,
        answered_by="r-ben" if answered else None,
        wait_s=20.5 if answered else None,
        talk_s=300.25 if ended_at and answered else None,
        ended_at=ended_at,
        outcome=outcome,
        rolled_over=False,
        rank=rank,
        revision=revision,
    )


def closed(
    n: int, *, revision: int = 3, ended_at: datetime = T0 + timedelta(minutes=6)
) -> CallRecord:
    return call(n, rank=4, revision=revision, ended_at=ended_at, outcome=Outcome.ANSWERED)


def session(n: int, *, left_at: datetime | None = None, joined_at: datetime = T0) -> MemberSession:
    return MemberSession(
        queue="crisis",
        responder=f"r-{n}",
        interface=f"PJSIP/{1000 + n}",
        joined_at=joined_at,
        left_at=left_at,
        join_reason="shift",
        leave_reason="shift" if left_at else None,
        revision=2 if left_at else 1,
    )


def pause(n: int, *, ended_at: datetime | None = None, started_at: datetime = T0) -> PauseInterval:
    return PauseInterval(
        queue="crisis",
        responder=f"r-{n}",
        interface=f"PJSIP/{1000 + n}",
        started_at=started_at,
        ended_at=ended_at,
        reason="Auto-Pause",
        paused_by="external",
        revision=2 if ended_at else 1,
    )


# -- migrations --------------------------------------------------------------------------------


async def test_migrate_applies_each_migration_once_and_a_second_run_changes_nothing(
    database: Db,
) -> None:
    applied = await migrate(database.dsn)
    assert applied[0] == "0001_initial"
    assert applied == [m.name for m in migrations()]
    schema = database.cluster.pg_dump(database.name, "--schema-only")
    assert await migrate(database.dsn) == []
    assert database.cluster.pg_dump(database.name, "--schema-only") == schema
    assert await database.query("SELECT version FROM hotline.schema_migrations ORDER BY 1") == [
        str(version) for version in range(1, SCHEMA_VERSION + 1)
    ]


async def test_concurrent_migrations_apply_the_schema_once(database: Db) -> None:
    results = await asyncio.gather(*(migrate(database.dsn) for _ in range(3)))
    assert sorted(name for applied in results for name in applied) == [m.name for m in migrations()]


async def test_check_schema_refuses_a_database_that_was_never_migrated(database: Db) -> None:
    conn = await asyncpg.connect(database.dsn)
    try:
        with pytest.raises(SchemaError, match="no hotline schema"):
            await check_schema(conn)
    finally:
        await conn.close()


async def test_check_schema_and_migrate_refuse_a_schema_newer_than_this_code(migrated: Db) -> None:
    conn = await asyncpg.connect(migrated.dsn)
    try:
        await check_schema(conn)  # exactly the known version: accepted
        await conn.execute(
            "INSERT INTO hotline.schema_migrations (version) VALUES ($1)", SCHEMA_VERSION + 1
        )
        with pytest.raises(SchemaError, match="newer"):
            await check_schema(conn)
    finally:
        await conn.close()
    with pytest.raises(SchemaError, match="newer"):
        await migrate(migrated.dsn)


async def test_the_store_spools_rather_than_write_into_a_schema_it_does_not_know(
    database: Db, tmp_path: Path
) -> None:
    rig = make_store(database.dsn, tmp_path)
    async with running(rig.store):
        rig.store.submit(call(1))
        await wait_until(lambda: rig.spool.count == 1, 10, "the record spooled")
        assert "no hotline schema" in rig.store.status()
        assert not rig.store.up
    restarting = make_store(database.dsn, tmp_path)
    try:
        with pytest.raises(SchemaError, match="no hotline schema"):
            await restarting.store.load_open()
    finally:
        await restarting.store.close(FLUSH_S)
    assert restarting.spool.count == 1


async def test_every_call_record_field_has_a_column_and_none_holds_a_callers_number_or_name(
    migrated: Db,
) -> None:
    columns = await migrated.query(
        "SELECT table_name || '.' || column_name FROM information_schema.columns"
        " WHERE table_schema = 'hotline'"
    )
    for name in columns:
        assert not any(
            word in name.lower() for word in ("number", "phone", "callerid", "name", "e164", "cid")
        ), name
    calls = {c.split(".")[1] for c in columns if c.startswith("calls.")}
    assert calls == {f.name for f in fields(CallRecord)} | {"updated_at"}


async def test_the_database_refuses_an_outcome_outside_the_closed_set(migrated: Db) -> None:
    with pytest.raises(Exception, match="calls_outcome_check"):
        await migrated.query(
            "INSERT INTO hotline.calls (uniqueid, queue, visit, caller_withheld, rolled_over,"
            " rank, revision, outcome) VALUES ('1.1', 'crisis', 1, true, false, 4, 1, 'hung_up')"
        )


async def test_the_database_refuses_a_phone_number_as_caller_key(migrated: Db) -> None:
    with pytest.raises(Exception, match="calls_caller_key_is_not_a_number"):
        await migrated.query(
            "INSERT INTO hotline.calls (uniqueid, queue, visit, caller_key, caller_key_id,"
            " caller_withheld, rolled_over, rank, revision)"
            " VALUES ('1.1', 'crisis', 1, '+1 (555) 010-0199', 'k1', false, false, 1, 1)"
        )


# -- writing and reading back ------------------------------------------------------------------


def test_records_survive_the_trip_through_json_unchanged() -> None:
    for record in (call(1), call(3), closed(2), session(1), session(2, left_at=T0), pause(1)):
        assert from_json(json.loads(json.dumps(to_json(record)))) == record


async def test_load_open_returns_the_open_records_written_and_none_of_the_closed_ones(
    migrated: Db, tmp_path: Path
) -> None:
    later = T0 + timedelta(hours=1)
    open_calls = [call(1), call(2, rank=2, revision=2), call(3)]
    records: list[CallRecord | MemberSession | PauseInterval] = [
        *open_calls,
        closed(4),
        session(1),
        session(2, left_at=later),
        pause(1),
        pause(2, ended_at=later),
    ]
    rig = make_store(migrated.dsn, tmp_path / "spool")
    async with running(rig.store):
        for record in records:
            rig.store.submit(record)
    assert (await migrated.query("SELECT count(*) FROM hotline.calls")) == ["4"]

    restarted = make_store(migrated.dsn, tmp_path / "spool")
    try:
        calls, sessions, pauses = await restarted.store.load_open()
    finally:
        await restarted.store.close(FLUSH_S)
    assert calls == open_calls
    assert sessions == [session(1)]
    assert pauses == [pause(1)]


async def test_an_older_rank_and_revision_never_overwrites_a_newer_row_and_counts_a_duplicate(
    migrated: Db, tmp_path: Path
) -> None:
    rig = make_store(migrated.dsn, tmp_path)
    async with running(rig.store):
        rig.store.submit(closed(1, revision=3))
        await wait_until(lambda: rig.seen.rows["calls"] == 1, 10, "the first write")
        rig.store.submit(call(1, rank=2, revision=2))  # answered, older than the stored close
        rig.store.submit(closed(1, revision=3))  # the same record again, as a replay would
        rig.store.submit(session(1, left_at=T0 + timedelta(hours=1)))
        await wait_until(lambda: rig.seen.dups["calls"] == 2, 10, "the duplicates")
        rig.store.submit(session(1))  # revision 1, older than the stored revision 2
        await wait_until(lambda: rig.seen.dups["member_sessions"] == 1, 10, "a duplicate")
    assert await migrated.query("SELECT rank, revision, outcome FROM hotline.calls") == [
        "4|3|answered"
    ]
    assert await migrated.query("SELECT left_at IS NOT NULL FROM hotline.member_sessions") == ["t"]
    assert rig.seen.rows["calls"] == 1


async def test_a_newer_revision_at_the_same_rank_replaces_the_row(
    migrated: Db, tmp_path: Path
) -> None:
    rig = make_store(migrated.dsn, tmp_path)
    async with running(rig.store):
        rig.store.submit(call(1))
        await wait_until(lambda: rig.seen.rows["calls"] == 1, 10, "the first write")
        rig.store.submit(replace(call(1), position=1, revision=2))
    assert await migrated.query("SELECT position, revision FROM hotline.calls") == ["1|2"]


async def test_an_older_record_replayed_from_the_spool_is_counted_as_a_duplicate(
    migrated: Db, tmp_path: Path
) -> None:
    rig = make_store(migrated.dsn, tmp_path)
    async with running(rig.store):
        rig.store.submit(closed(1))
    Spool(tmp_path, 1_000_000).append([to_json(call(1)), to_json(closed(2))])

    replaying = make_store(migrated.dsn, tmp_path)
    async with running(replaying.store):
        await wait_until(lambda: replaying.spool.count == 0, 10, "the spool replayed")
    assert replaying.seen.dups["calls"] == 1
    assert await migrated.query("SELECT uniqueid, outcome FROM hotline.calls ORDER BY 1") == [
        "1767582000.1|answered",
        "1767582000.2|answered",
    ]


async def test_a_refused_record_goes_to_the_dead_letters_and_the_rest_of_its_batch_is_written(
    migrated: Db, tmp_path: Path
) -> None:
    rig = make_store(migrated.dsn, tmp_path, flush_interval_s=0.5)
    async with running(rig.store):
        rig.store.submit(call(1))
        rig.store.submit(replace(call(2), rank=9))  # outside the CHECK: a bug upstream
        rig.store.submit(call(3))
    assert await migrated.query("SELECT uniqueid FROM hotline.calls ORDER BY 1") == [
        "1767582000.1",
        "1767582000.3",
    ]
    assert rig.seen.errors == Counter({"constraint": 1})
    assert rig.seen.dead == Counter({("calls", "constraint"): 1})
    letters = rig.spool.dead_letters.read()
    assert [from_json(letter["record"]) for letter in letters] == [replace(call(2), rank=9)]
    assert (letters[0]["reason"], letters[0]["table"]) == ("constraint", "calls")
    assert "calls_rank_check" in letters[0]["error"]
    assert rig.spool.count == 0


# -- outages -----------------------------------------------------------------------------------


async def test_a_thousand_records_submitted_while_postgres_is_down_are_written_once_when_it_is_back(
    own_migrated: Db, tmp_path: Path
) -> None:
    pg = own_migrated.cluster
    rig = make_store(own_migrated.dsn, tmp_path)
    async with running(rig.store):
        await wait_until(lambda: rig.store.up, 10, "the store connected")
        assert rig.store.status() == ""
        await asyncio.to_thread(pg.stop, "immediate")

        for n in range(1000):
            rig.store.submit(call(n))
        await wait_until(lambda: rig.spool.count == 1000, 30, "1,000 records spooled")
        assert not rig.store.up
        assert "postgres unreachable for" in rig.store.status()
        assert "1000 records spooled" in rig.store.status()
        assert rig.seen.errors["connection"] >= 1
        assert rig.seen.last_backlog[:2] == (0, 1000)

        await asyncio.to_thread(pg.start)
        await wait_until(lambda: rig.spool.count == 0, 30, "the spool replayed")
        assert rig.store.up
        assert rig.store.status() == ""
        assert rig.spool.segments() == []  # replayed segments are deleted
        rig.store.submit(closed(7))  # new records still flow after the replay
    assert await own_migrated.query(
        "SELECT count(*), count(DISTINCT uniqueid), sum(revision) FROM hotline.calls"
    ) == ["1000|1000|1002"]
    assert rig.seen.ups == [False, True, False, True, False]
    assert not rig.seen.drops


async def test_records_written_while_postgres_is_too_slow_are_spooled_and_written_once_later(
    migrated: Db, tmp_path: Path
) -> None:
    rig = make_store(migrated.dsn, tmp_path, timeout_s=0.5)
    async with asyncio.TaskGroup() as sessions:
        # Another session holds the table for 3 s: every write in that time overruns its timeout.
        holder = sessions.create_task(
            migrated.query(
                "BEGIN; LOCK TABLE hotline.calls IN ACCESS EXCLUSIVE MODE;"
                " SELECT pg_sleep(3); COMMIT"
            )
        )
        await wait_for_rows(
            migrated,
            "SELECT count(*) FROM pg_locks WHERE relation = 'hotline.calls'::regclass"
            " AND mode = 'AccessExclusiveLock' AND granted",
            ["1"],
            within=10,
        )
        async with running(rig.store):
            rig.store.submit(call(1))
            await wait_until(lambda: rig.seen.errors["timeout"] >= 1, 10, "a timeout")
            # The error is counted before the batch is spooled (in a thread, with an fsync).
            await wait_until(lambda: rig.spool.count == 1, 2, "the record spooled")
            await holder
            await wait_until(lambda: rig.spool.count == 0, 10, "the spool replayed")
    assert await migrated.query("SELECT uniqueid FROM hotline.calls") == ["1767582000.1"]
    assert not rig.seen.drops


async def test_load_open_says_postgres_is_unavailable_rather_than_return_nothing(
    tmp_path: Path,
) -> None:
    rig = make_store(unreachable_dsn(), tmp_path)
    try:
        with pytest.raises(StoreUnavailable, match="postgres unreachable"):
            await rig.store.load_open()
    finally:
        await rig.store.close(FLUSH_S)


async def test_records_flushed_by_close_while_postgres_is_away_are_written_by_the_next_process(
    migrated: Db, tmp_path: Path
) -> None:
    away = make_store(unreachable_dsn(), tmp_path)
    for n in range(5):
        away.store.submit(call(n))
    await away.store.close(FLUSH_S)  # no writer ever ran: close alone must keep them
    assert away.spool.count == 5

    back = make_store(migrated.dsn, tmp_path)
    async with running(back.store):
        await wait_until(lambda: back.spool.count == 0, 10, "the spool replayed")
    assert await migrated.query("SELECT count(*) FROM hotline.calls") == ["5"]


async def test_when_the_spool_is_full_records_are_dropped_counted_and_reported(
    tmp_path: Path,
) -> None:
    rig = make_store(unreachable_dsn(), tmp_path, max_bytes=10_000)
    async with running(rig.store):
        for n in range(100):
            rig.store.submit(call(n))
        await wait_until(
            lambda: rig.spool.count + rig.seen.drops["spool_full"] == 100,
            10,
            "every record spooled or dropped",
        )
        kept = rig.spool.count
        assert 0 < kept < 100
        assert rig.spool.size_bytes <= 10_000
        assert rig.seen.drops == Counter({"spool_full": 100 - kept})
        assert f"spool full (10.0 kB): {100 - kept} records dropped" in rig.store.status()


async def test_presence_records_are_shed_before_call_records_as_the_spool_fills(
    tmp_path: Path,
) -> None:
    line = len(json.dumps(to_json(call(1)), separators=(",", ":"))) + 1
    max_bytes = 20 * line
    filler = Spool(tmp_path, 100_000)
    # Fill the spool past the 90 % presence records may use, leaving room for one call record.
    while filler.size_bytes + 2 * line <= max_bytes:
        filler.append([to_json(call(1))])
    assert filler.size_bytes > 0.9 * max_bytes
    filler.close()

    rig = make_store(unreachable_dsn(), tmp_path, max_bytes=max_bytes)
    async with running(rig.store):
        rig.store.submit(session(1))
        rig.store.submit(call(2))
        await wait_until(lambda: sum(rig.seen.drops.values()) == 1, 10, "a drop")
    assert rig.seen.drops == Counter({"spool_full": 1})
    tail = rig.spool.read(rig.spool.segments()[-1]).items
    assert [from_json(item) for item in tail] == [call(2)]


# -- the spool ---------------------------------------------------------------------------------


def test_the_spool_refuses_an_append_that_would_exceed_its_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100)
    assert spool.append([{"n": "x" * 40}])
    assert not spool.append([{"n": "y" * 40}, {"n": "z"}])
    assert spool.count == 1
    assert spool.append_fitting([{"n": "z"}, {"n": "y" * 80}, {"n": "w"}]).written == 1
    assert [spool.read(s).items for s in spool.segments()] == [[{"n": "x" * 40}, {"n": "z"}]]


def test_the_spool_gives_back_segments_oldest_first_across_a_restart(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1_000_000, segment_bytes=200)
    for n in range(10):
        first.append([{"n": n, "pad": "." * 50}])
    first.close()
    second = Spool(tmp_path, 1_000_000, segment_bytes=200)
    second.append([{"n": n, "pad": "." * 50} for n in range(10, 20)])  # one append, cut up
    assert len(second.segments()) >= 6
    assert [i["n"] for s in second.segments() for i in second.read(s).items] == list(range(20))
    assert second.count == 20


async def test_a_torn_spool_line_is_set_aside_counted_and_the_rest_replayed(
    migrated: Db, tmp_path: Path
) -> None:
    before_crash = Spool(tmp_path, 1_000_000)
    before_crash.append([to_json(call(n)) for n in range(3)])
    before_crash.close()
    (segment,) = before_crash.segments()
    torn = json.dumps(to_json(call(3))).encode()[:70]
    with segment.path.open("ab") as f:  # the crash came in the middle of a write
        f.write(torn)

    after_crash = Spool(tmp_path, 1_000_000)
    assert after_crash.count == 3
    after_crash.append([to_json(call(4))])  # never glued to the torn line: a new segment
    assert len(after_crash.segments()) == 2
    assert after_crash.read(segment).skipped == 1
    after_crash.close()

    rig = make_store(migrated.dsn, tmp_path)
    async with running(rig.store):
        await wait_until(lambda: rig.spool.count == 0, 10, "the spool replayed")
    assert await migrated.query("SELECT count(*) FROM hotline.calls") == ["4"]
    assert rig.seen.dead == Counter({("unknown", "unreadable"): 1})
    assert not rig.seen.drops
    (letter,) = rig.spool.dead_letters.read()
    assert (letter["reason"], letter["line"]) == ("unreadable", torn.decode())
    assert rig.spool.segments() == []


# -- retention ---------------------------------------------------------------------------------


async def test_purge_deletes_only_rows_closed_before_the_cutoff_and_calls_never_closed(
    migrated: Db, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    rig = make_store(migrated.dsn, tmp_path)
    async with running(rig.store):
        rig.store.submit(closed(1, ended_at=old))
        rig.store.submit(closed(2, ended_at=recent))
        rig.store.submit(call(3, entered_at=old))  # never closed: hotline was away when it ended
        rig.store.submit(call(4, entered_at=recent))
        rig.store.submit(session(1, joined_at=old - timedelta(hours=8), left_at=old))
        rig.store.submit(session(2, joined_at=old))  # still logged in: kept
        rig.store.submit(pause(1, started_at=old, ended_at=old))
        rig.store.submit(pause(2, started_at=recent, ended_at=recent))
    purging = make_store(migrated.dsn, tmp_path)
    try:
        assert await purging.store.purge(30) == 4
        assert await purging.store.purge(30) == 0
    finally:
        await purging.store.close(FLUSH_S)
    assert await migrated.query("SELECT uniqueid FROM hotline.calls ORDER BY 1") == [
        "1767582000.2",
        "1767582000.4",
    ]
    assert await migrated.query("SELECT responder FROM hotline.member_sessions") == ["r-2"]
    assert await migrated.query("SELECT responder FROM hotline.pauses") == ["r-2"]
