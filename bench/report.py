"""Benchmark: `hotline report --by day` over one year of a busy line (about 500,000 calls, with
its member sessions and pauses) in a Postgres of its own. Run: `python -m bench.report`.
Target: under 2 s. Same-run baselines: a bare `SELECT count(*)` of the year's calls, and a COPY
of their rows out of Postgres (what any report must at least read)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from hotline.adapters.store import migrate
from hotline.adapters.store.reports import report
from hotline.config import load_config
from hotline.core import report_output
from tests.history import config_file, generate, load
from tests.pg import PgCluster

ZONE = ZoneInfo("America/New_York")
FIRST_DAY = date(2025, 11, 1)
DAYS = 365
CALLS_PER_DAY = 1_560  # about 500,000 a year (fewer at night)
RUNS = 5
TARGET_S = 2.0


async def _bench(cluster: PgCluster, directory: Path) -> None:
    cluster.create_database("hotline")
    dsn = cluster.dsn_for("hotline")
    await migrate(dsn)
    started = time.perf_counter()
    history = generate(FIRST_DAY, DAYS, ZONE, CALLS_PER_DAY)
    conn = await asyncpg.connect(dsn)
    # The report's reads run side by side, each on a connection, as `hotline report` runs them.
    reads = [conn, *[await asyncpg.connect(dsn) for _ in range(2)]]
    try:
        await load(conn, history)
        await conn.execute("VACUUM ANALYZE")
        print(
            f"loaded {len(history.calls):,} calls, {len(history.sessions):,} sessions,"
            f" {len(history.pauses):,} pauses in {time.perf_counter() - started:.0f} s"
        )
        config = load_config(config_file(directory, str(ZONE), dsn))
        start = datetime.combine(FIRST_DAY, datetime.min.time(), ZONE).astimezone(UTC)
        end = datetime.combine(FIRST_DAY + timedelta(days=DAYS), datetime.min.time(), ZONE)

        async def run_report() -> int:
            result = await report(
                reads, config, start=start, end=end, by="day", group=None, now=end
            )
            return len(report_output.as_csv(result.rows, None, ZONE))

        async def count() -> int:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM hotline.calls WHERE entered_at >= $1 AND entered_at < $2",
                start,
                end,
            )
            return n

        async def copy_out() -> int:
            sink = bytearray()

            async def keep(chunk: bytes) -> None:
                sink.extend(chunk)

            await conn.copy_from_query(
                "SELECT * FROM hotline.calls WHERE entered_at >= $1 AND entered_at < $2",
                start,
                end,
                output=keep,
            )
            return len(sink)

        timings = {}
        for name, run in (("report", run_report), ("count", count), ("copy", copy_out)):
            await run()  # warm the cache
            samples = []
            for _ in range(RUNS):
                t = time.perf_counter()
                await run()
                samples.append(time.perf_counter() - t)
            timings[name] = statistics.median(samples)
    finally:
        for each in reads:
            await each.close()
    took = timings["report"]
    print(f"report by day, 1 year ({DAYS} rows): median {took * 1000:.0f} ms of {RUNS} runs")
    for name, what in (("count", "a bare SELECT count(*)"), ("copy", "a COPY of the rows")):
        base = timings[name]
        print(f"baseline {what}: {base * 1000:.0f} ms; report / baseline = {took / base:.2f}")
    print("OK" if took < TARGET_S else f"SLOW: target {TARGET_S:.0f} s")


def main() -> None:
    cluster = PgCluster()
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as directory:
            asyncio.run(_bench(cluster, Path(directory)))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
