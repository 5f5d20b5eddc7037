"""Durability of the store against a real PostgreSQL (tests/pg.py) and a real full disk (a small
tmpfs mounted by the test, so these tests need root): a record that cannot be stored is set aside
in the dead letters with its reason, counted, and never holds up the records after it; a full
disk keeps what it can and counts exactly what it loses; dead letters obey retention; the spool
replays after each of these."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import stat
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from prometheus_client import CollectorRegistry

from hotline.adapters.metrics.dropped import dropped_counter
from hotline.adapters.metrics.store import StoreMetrics
from hotline.adapters.store.codec import from_json, to_json
from hotline.adapters.store.deadletters import LEGACY_FILE, DeadLetters
from hotline.adapters.store.errors import StoreUnavailable
from hotline.adapters.store.migrations import migrate
from hotline.adapters.store.retention import purge
from hotline.adapters.store.spool import Spool, encode
from hotline.adapters.store.writer import Store, StoreObserver
from hotline.core.records import Record
from tests.integration.test_store import (
    FLUSH_S,
    Db,
    RecordingObserver,
    _fresh_database,
    _started_cluster,
    call,
    closed,
    make_store,
    running,
    session,
    unreachable_dsn,
    wait_until,
)
from tests.pg import PgCluster

# What the database's last line of defence refuses: a caller key that looks like a phone number.
PHONE = "+1 (555) 010-0199"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    instance = _started_cluster()
    yield instance
    instance.destroy()


@pytest.fixture
async def db(pg: PgCluster) -> AsyncIterator[Db]:
    for database in _fresh_database(pg):
        await migrate(database.dsn)
        yield database


@pytest.fixture
async def own_db() -> AsyncIterator[Db]:
    """A migrated database in a cluster of the test's own, which the test may stop."""
    cluster = _started_cluster()
    try:
        for database in _fresh_database(cluster):
            await migrate(database.dsn)
            yield database
    finally:
        cluster.destroy()


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory` for the block: a disk that really fills."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (run as root): {mounted.stderr.strip()}", pytrace=False)
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=False)


def leave_free(directory: Path, room: int) -> Path:
    """Fill the file system under `directory` with a file, leaving about `room` bytes free."""
    filler = directory / "filler"
    info = os.statvfs(directory)
    size = info.f_bavail * info.f_frsize - room
    with filler.open("wb") as f:
        f.write(b"\0" * size)
        f.flush()
        os.fsync(f.fileno())
    return filler


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exported"
    return value


def spool_lines(spool_dir: Path, items: Sequence[dict[str, Any] | bytes]) -> None:
    """One segment as an earlier process would have left it, raw lines included."""
    data = b"".join(item if isinstance(item, bytes) else encode(item) for item in items)
    (spool_dir / "0000000001-1767582000000.jsonl").write_bytes(data)


def uniqueids(spool: Spool) -> list[str]:
    """The calls in the spool, in spool order."""
    items = [item for segment in spool.segments() for item in spool.read(segment).items]
    return [item["uniqueid"] for item in items if item["kind"] == "call"]


# -- a record that cannot be stored ------------------------------------------------------------


async def test_a_poison_record_in_the_spool_is_a_dead_letter_and_the_records_after_it_are_written(
    db: Db, tmp_path: Path
) -> None:
    before = [call(n) for n in range(1, 301)]
    poison = replace(call(301), caller_key=PHONE)  # passes the codec; Postgres's CHECK refuses it
    after = [call(n) for n in range(302, 602)]
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    spool_lines(spool_dir, [to_json(r) for r in (*before, poison, *after)])

    registry = CollectorRegistry()
    spool = Spool(spool_dir, 50_000_000)
    store = Store(db.dsn, spool, StoreMetrics(registry, dropped_counter(registry)), retry_s=0.1)
    with structlog.testing.capture_logs() as logs:
        async with running(store):
            await wait_until(lambda: spool.count == 0, 20, "the spool replayed")
            store.submit(call(602))  # a record submitted after the poison one is not held up
            store.submit(closed(1))
    assert await db.query("SELECT count(*), count(DISTINCT uniqueid) FROM hotline.calls") == [
        "601|601"
    ]
    assert await db.query("SELECT count(*) FROM hotline.calls WHERE caller_key LIKE '+%'") == ["0"]
    assert await db.query("SELECT outcome FROM hotline.calls WHERE uniqueid = '1767582000.1'") == [
        "answered"
    ]
    (letter,) = spool.dead_letters.read()
    assert from_json(letter["record"]) == poison
    assert (letter["reason"], letter["table"]) == ("constraint", "calls")
    assert "calls_caller_key_is_not_a_number" in letter["error"]
    assert PHONE not in letter["error"]
    labels = {"table": "calls", "reason": "constraint"}
    assert metric(registry, "hotline_records_dead_lettered_total", **labels) == 1
    assert metric(registry, "hotline_db_write_errors_total", kind="constraint") == 1
    assert metric(registry, "hotline_events_dropped_total", reason="invalid") == 0
    assert spool.segments() == []
    assert spool.count == 0
    assert not list(spool_dir.glob("*.jsonl"))
    # The log says which table and why, never the record's values.
    assert any(entry["event"] == "records_dead_lettered" for entry in logs)
    assert not [entry for entry in logs if "010-0199" in repr(entry)]


async def test_spool_lines_that_are_not_records_are_set_aside_by_reason_and_the_rest_written(
    db: Db, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    good = [call(n) for n in range(1, 5)]
    wrong_type = {**to_json(call(90)), "visit": "1"}
    unhashable = {**to_json(call(91)), "uniqueid": ["1767582000.91"]}
    bad_time = {**to_json(call(92)), "entered_at": "yesterday"}
    too_big = to_json(replace(call(93), uniqueid=secrets.token_hex(5000)))  # 54000 in its index
    spool_lines(
        spool_dir,
        [
            to_json(good[0]),
            b'{"kind": "call", "uniqueid": "1767582000.80", "queue": "cri\n',  # torn
            to_json(good[1]),
            wrong_type,
            b"[1, 2, 3]\n",  # JSON, but not an object
            unhashable,
            {"kind": "voicemail", "uniqueid": "1767582000.81"},
            bad_time,
            b'{"kind": "call", "uniqueid": "1767582000.82", "wait_s": NaN}\n',  # not JSON
            to_json(good[2]),
            too_big,
            to_json(good[3]),
        ],
    )
    rig = make_store(db.dsn, spool_dir)
    async with running(rig.store):
        await wait_until(lambda: rig.spool.count == 0, 20, "the spool replayed")
        rig.store.submit(call(5))
    assert await db.query("SELECT uniqueid FROM hotline.calls ORDER BY 1") == [
        f"1767582000.{n}" for n in range(1, 6)
    ]
    assert rig.seen.dead == Counter(
        {
            ("unknown", "unreadable"): 3,
            ("calls", "decode"): 3,
            ("unknown", "decode"): 1,
            ("calls", "constraint"): 1,
        }
    )
    assert not rig.seen.drops
    letters = rig.spool.dead_letters.read()
    errors = {(letter["reason"], letter["error"]) for letter in letters}
    assert ("decode", "CallRecord.visit: expected int, got str") in errors
    assert ("decode", "CallRecord.uniqueid: expected str, got list") in errors
    assert ("decode", "CallRecord.entered_at: not an ISO time") in errors
    assert ("decode", "not a record: no known kind") in errors
    assert ("unreadable", "not a JSON object") in errors
    (index_error,) = [letter for letter in letters if letter["reason"] == "constraint"]
    assert index_error["error"].startswith("ProgramLimitExceededError: index row")
    assert index_error["record"]["uniqueid"] == too_big["uniqueid"]
    assert wrong_type in [letter.get("item") for letter in letters]
    assert rig.spool.segments() == []


async def test_a_record_that_cannot_be_encoded_is_a_dead_letter_and_the_writer_goes_on(
    db: Db, tmp_path: Path
) -> None:
    rig = make_store(db.dsn, tmp_path / "spool", flush_interval_s=0.3)
    async with running(rig.store):
        rig.store.submit(call(1))
        rig.store.submit(replace(call(2), uniqueid=cast(Any, ["1767582000.2"])))  # no key
        rig.store.submit(replace(call(3), rank=cast(Any, "4")))  # no order
        rig.store.submit(replace(call(4), entered_at=cast(Any, "yesterday")))  # asyncpg refuses
        rig.store.submit(call(5))
        await wait_until(lambda: rig.seen.rows["calls"] == 2, 10, "the good records written")
        rig.store.submit(call(6))
        await wait_until(lambda: rig.seen.rows["calls"] == 3, 10, "the next record written")
        assert rig.store.status() == ""
    assert await db.query("SELECT uniqueid FROM hotline.calls ORDER BY 1") == [
        "1767582000.1",
        "1767582000.5",
        "1767582000.6",
    ]
    assert rig.seen.dead == Counter({("calls", "encode"): 2, ("calls", "constraint"): 1})
    assert sorted((ltr["reason"], ltr["error"]) for ltr in rig.spool.dead_letters.read()) == [
        (
            "constraint",
            "DataError: invalid input for query argument $4 (entered_at) (sqlstate 22000)",
        ),
        ("encode", "CallRecord.rank: expected int, got str"),
        ("encode", "CallRecord.uniqueid: expected str, got list"),
    ]


async def test_a_record_the_spool_cannot_hold_is_a_dead_letter_and_the_others_are_spooled(
    tmp_path: Path,
) -> None:
    rig = make_store(unreachable_dsn(), tmp_path / "spool")
    async with running(rig.store):
        rig.store.submit(call(1))
        rig.store.submit(replace(call(2), rank=2, wait_s=float("nan")))  # not JSON
        rig.store.submit(session(3))
        await wait_until(lambda: rig.spool.count == 2, 10, "the others spooled")
    assert uniqueids(rig.spool) == ["1767582000.1"]
    assert rig.seen.dead == Counter({("calls", "encode"): 1})
    (letter,) = rig.spool.dead_letters.read()
    assert letter["error"] == "CallRecord.wait_s: invalid value (ValueError)"
    assert letter["record"]["wait_s"] == "nan"  # kept as text
    assert letter["record"]["uniqueid"] == "1767582000.2"


class _OutageOnce(Store):
    """A store whose second write fails as if Postgres had gone away."""

    writes = 0

    async def _upsert(self, records: Sequence[Record]) -> None:
        self.writes += 1
        if self.writes == 2:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        await super()._upsert(records)


async def test_a_replay_interrupted_by_an_outage_resumes_and_sets_nothing_aside_twice(
    db: Db, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    poison = replace(call(1), caller_key=PHONE)
    spool_lines(spool_dir, [to_json(poison), b"torn\n", *(to_json(call(n)) for n in range(2, 6))])
    seen = RecordingObserver()
    store = _OutageOnce(db.dsn, Spool(spool_dir, 1_000_000), seen, batch_max=2, retry_s=0.1)
    async with running(store):
        await wait_until(lambda: not list(spool_dir.glob("*.jsonl")), 10, "the spool replayed")
    assert store.writes == 4  # [poison, torn] [2, 3] failed, [2, 3] again, [4, 5]
    assert seen.errors["connection"] == 1
    assert seen.dead == Counter({("calls", "constraint"): 1, ("unknown", "unreadable"): 1})
    assert len(DeadLetters(spool_dir, 1_000_000).read()) == 2
    assert await db.query("SELECT count(*) FROM hotline.calls") == ["4"]


# -- a full disk -------------------------------------------------------------------------------


def test_a_full_disk_keeps_the_whole_lines_before_it_and_no_part_of_the_others(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "256k") as disk:
        spool = Spool(disk / "spool", 10_000_000)
        filler = leave_free(disk, 12_000)
        lines = [encode(to_json(call(n))) for n in range(100)]
        result = spool.append_lines(lines)
        assert 0 < result.written < 100
        assert isinstance(result.error, OSError)
        assert result.error.errno == errno.ENOSPC
        assert spool.count == result.written
        (segment,) = spool.segments()
        assert segment.path.read_bytes() == b"".join(lines[: result.written])  # no partial line
        assert spool.size_bytes == segment.path.stat().st_size

        filler.unlink()  # room again: the same segment goes on, line after whole line
        assert spool.append_lines(lines[result.written :]) == (100 - result.written, None)
        assert spool.segments() == [segment]
        content = spool.read(segment)
        assert content.skipped == 0
        assert [from_json(item) for item in content.items] == [call(n) for n in range(100)]
        spool.close()


async def test_on_a_full_disk_spooled_plus_counted_lost_is_every_record_and_each_reaches_postgres_once(  # noqa: E501
    own_db: Db, tmp_path: Path
) -> None:
    pg, n, held_max = own_db.cluster, 400, 50
    # Records of one size: what the disk refused once it refuses every time after.
    records = [call(1000 + 15 * i) for i in range(n)]
    await asyncio.to_thread(pg.stop, "immediate")
    with tmpfs(tmp_path / "disk", "256k") as disk:
        spool = Spool(disk / "spool", 10_000_000)
        seen = RecordingObserver()
        store = Store(own_db.dsn, spool, seen, retry_s=0.1, held_max=held_max)
        filler = leave_free(disk, 40_000)
        async with running(store):
            for record in records:
                store.submit(record)
            await wait_until(
                lambda: (
                    spool.count + seen.last_backlog[0] + seen.drops["disk_full"] == n
                    and seen.drops["disk_full"] > 0
                ),
                10,
                "every record spooled, held in memory or counted lost",
            )
            spooled, lost = spool.count, seen.drops["disk_full"]
            assert 0 < spooled < n - held_max
            assert seen.last_backlog[0] == held_max == n - spooled - lost
            assert seen.drops == Counter({"disk_full": lost})
            assert "spool's disk refuses writes (No space left on device)" in store.status()
            assert f"{held_max} records held in memory, {lost} dropped" in store.status()
            # What reached the disk is the oldest records, what is held the newest: the oldest
            # of those the disk refused were dropped to keep memory bounded.
            assert uniqueids(spool) == [r.uniqueid for r in records[:spooled]]

            filler.unlink()
            await asyncio.to_thread(pg.start)
            await wait_until(
                lambda: spool.count == 0 and seen.last_backlog[0] == 0, 30, "everything written"
            )
            assert store.status() == ""
        written = [r.uniqueid for r in (*records[:spooled], *records[n - held_max :])]
        assert await own_db.query("SELECT uniqueid FROM hotline.calls ORDER BY 1") == sorted(
            written
        )
        assert seen.rows["calls"] == len(written) == n - lost
        assert seen.drops == Counter({"disk_full": lost})


async def test_records_the_full_disk_refused_at_a_stop_are_counted_lost_and_the_spooled_replayed(
    own_db: Db, tmp_path: Path
) -> None:
    pg, n = own_db.cluster, 300
    await asyncio.to_thread(pg.stop, "immediate")
    with tmpfs(tmp_path / "disk", "256k") as disk:
        away = make_store(own_db.dsn, disk / "spool")
        leave_free(disk, 30_000)
        async with running(away.store):
            for i in range(n):
                away.store.submit(call(i) if i % 4 else session(i))
            await wait_until(lambda: away.spool.count > 0, 10, "a spill")
        spooled, lost = away.spool.count, away.seen.drops["disk_full"]
        assert spooled + lost == n
        assert 0 < spooled < n
        assert away.seen.drops == Counter({"disk_full": lost})
        assert not any(away.spool.read(s).skipped for s in away.spool.segments())

        await asyncio.to_thread(pg.start)
        back = make_store(own_db.dsn, disk / "spool")
        async with running(back.store):
            await wait_until(lambda: back.spool.count == 0, 30, "the spool replayed")
        rows = await own_db.query(
            "SELECT (SELECT count(*) FROM hotline.calls) + (SELECT count(*) FROM"
            " hotline.member_sessions)"
        )
        assert rows == [str(spooled)]
        assert sum(back.seen.rows.values()) == spooled
        assert not back.seen.dups


# -- dead letters ----------------------------------------------------------------------------


def _letter(at: datetime, n: int) -> dict[str, Any]:
    return {"at": at.isoformat(), "reason": "constraint", "record": to_json(call(n))}


async def test_retention_deletes_the_dead_letters_older_than_retention_days(
    db: Db, tmp_path: Path
) -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    spool = Spool(tmp_path / "spool", 1_000_000)
    letters = spool.dead_letters
    for days, n in ((400, 1), (31, 2), (30.5, 3), (29, 4), (0, 5)):
        at = now - timedelta(days=days)
        assert letters.add([_letter(at, n)], at)
    assert stat.S_IMODE(letters.directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in letters.files()} == {0o600}

    seen = RecordingObserver()
    store = Store(db.dsn, spool, seen, clock=now.timestamp)
    try:
        assert await store.purge(30) == 0  # no rows; the dead letters go by the same rule
    finally:
        await store.close(FLUSH_S)
    kept = [letter["record"]["uniqueid"] for letter in letters.read()]
    # Older than 30 days: gone. 30.5 days ago is in a day that ended 29.5 days ago: it goes at
    # the next daily run.
    assert kept == ["1767582000.3", "1767582000.4", "1767582000.5"]
    names = ["2026-05-02.jsonl", "2026-05-03.jsonl", "2026-06-01.jsonl"]
    assert [p.name for p in letters.files()] == names
    assert letters.size_bytes == sum(p.stat().st_size for p in letters.files())


async def test_dead_letters_are_purged_even_while_postgres_is_away(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    letters = DeadLetters(tmp_path, 1_000_000)
    letters.add([_letter(now - timedelta(days=40), 1)], now - timedelta(days=40))
    letters.add([_letter(now, 2)], now)
    away = make_store(unreachable_dsn(), tmp_path)
    try:
        with pytest.raises(StoreUnavailable):
            await away.store.purge(30)
    finally:
        await away.store.close(FLUSH_S)
    assert [letter["record"]["uniqueid"] for letter in letters.read()] == ["1767582000.2"]


def test_the_single_dead_letter_file_of_earlier_versions_is_filed_by_day_so_retention_reaches_it(
    tmp_path: Path,
) -> None:
    old, new = datetime(2025, 1, 2, 23, 0, tzinfo=UTC), datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
    (tmp_path / LEGACY_FILE).write_text(
        json.dumps({"at": old.isoformat(), "error": "x", "record": to_json(call(1))})
        + "\n"
        + json.dumps({"at": new.isoformat(), "error": "y", "record": to_json(call(2))})
        + "\n"
    )
    letters = Spool(tmp_path, 1_000_000).dead_letters
    assert not (tmp_path / LEGACY_FILE).exists()
    assert [p.name for p in letters.files()] == ["2025-01-02.jsonl", "2026-03-04.jsonl"]
    pruned = letters.prune(30, datetime(2026, 3, 10, tzinfo=UTC))
    assert (pruned.files, pruned.records) == (1, 1)
    assert [letter["error"] for letter in letters.read()] == ["y"]


def test_dead_letters_past_their_bound_are_refused_whole(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    letters = DeadLetters(tmp_path, len(encode(_letter(now, 1))) + 10)
    assert letters.add([_letter(now, 1)], now)
    assert not letters.add([_letter(now, 2)], now)
    assert len(letters.read()) == 1


def test_a_full_disk_leaves_no_partial_dead_letter(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "64k") as disk:
        letters = DeadLetters(disk, 10_000_000)
        now = datetime.now(UTC)
        assert letters.add([_letter(now, 1)], now)
        before = letters.files()[0].read_bytes()
        leave_free(disk, 100)
        with pytest.raises(OSError, match="No space left"):
            letters.add([_letter(now, n) for n in range(2, 50)], now)
        assert letters.files()[0].read_bytes() == before
        assert letters.size_bytes == len(before)


def test_the_observer_protocol_is_what_the_metrics_implement() -> None:
    registry = CollectorRegistry()
    observer: StoreObserver = StoreMetrics(registry, dropped_counter(registry))
    observer.dead_lettered("unknown", "unreadable", 2)
    observer.dropped("disk_full", 3)
    assert (
        metric(
            registry, "hotline_records_dead_lettered_total", table="unknown", reason="unreadable"
        )
        == 2
    )
    assert metric(registry, "hotline_events_dropped_total", reason="disk_full") == 3
    assert (
        metric(registry, "hotline_records_dead_lettered_total", table="pauses", reason="encode")
        == 0
    )


async def test_hotline_purge_deletes_old_dead_letters_and_creates_nothing(
    db: Db, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    spool_dir = tmp_path / "spool"
    letters = DeadLetters(spool_dir, 1_000_000)
    letters.add([_letter(now - timedelta(days=40), 1)], now - timedelta(days=40))
    letters.add([_letter(now, 2)], now)
    assert await purge(db.dsn, 30, spool_dir) == 0
    assert [letter["record"]["uniqueid"] for letter in letters.read()] == ["1767582000.2"]

    elsewhere = tmp_path / "never-used"
    assert await purge(db.dsn, 30, elsewhere) == 0
    assert not elsewhere.exists()
