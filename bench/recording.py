"""Benchmark: the call-recording pipeline, from AMI bytes to committed Postgres rows.

Run as root: `python -m bench.recording` (it creates and destroys a Postgres cluster of its own;
`--rate N` paces the replay at N events/s instead of full speed, `--profile` adds a cProfile of
the pipeline, `--help` for the rest). Targets: at least 20,000 events/s, and a p99 latency from
an AgentComplete written by the server to the commit of the row with its outcome under 250 ms.

Absolute rates depend on the machine and on what else it runs, so every full-speed run also
measures its own baselines (bench/baseline.py) in this process, on the same bytes over the same
loopback socket, before and after the pipeline: panoramisk 1.4's own parser (a stock Manager
counting every event in a callback) and a bare `StreamReader.readuntil(b"\r\n\r\n")` split.
It prints the ratio pipeline / panoramisk parse rate beside the absolute figures; the target for
the whole pipeline (parse, pseudonymise, fold, store) is at least 0.7 of the library's bare parse.
The ratio is also given by CPU per event (panoramisk's us/event over the pipeline's), which is
less sensitive to other processes competing for the cores during one of the windows.

What runs where (on a 2-core machine, three kinds of process compete for the cores):
- this process is the pipeline, and nothing else while timed: one asyncio loop running the
  daemon's own components, built by `hotline.daemon.Daemon` from a configuration that turns
  recording on, and its own consumer `Daemon.consume` (QueueBoard, keeper wake-ups, Recording ->
  CallBook/Presence/CallFlow -> Store). Of the daemon's tasks it runs the AMI link, the consumer,
  the store writer and the call ticks; not the HTTP server, the reconcile rounds (the fake server
  does not answer QueueStatus) nor retention. Two substitutions, both public attributes: the
  Store is a `_CommitClock` (the same class, with a note taken after each committed
  transaction), and the inbox a `_ProbedInbox` (the same queue, noting when a sampled
  AgentComplete leaves it);
- the fake AMI server (bench/ami_stream.py) is a `multiprocessing` spawn child: it generates the
  stream (~200,000 events of whole app_queue calls in Asterisk 22's wire format, kept in memory
  as bytes) before anything is timed, answers Login, FullyBooted and Ping, then writes the
  stream as fast as the socket takes it;
- Postgres is a throwaway cluster (tests.pg.PgCluster, fsync off as in the tests).

Throughput: events / (the commit of the last call record with an outcome - the server's first
byte of the stream). Both instants are time.monotonic(), which is system-wide on Linux.

Latency, for every 50th answered call: from the return of the server's write of the chunk that
ends with that call's AgentComplete (the stream is cut there, and the server's transport keeps no
write buffer, so the bytes are in the kernel), to the return of the Store transaction that wrote
the record carrying the outcome (`Store._upsert` commits before it returns; the note is taken
after the pool's connection reset, so it overstates the latency by up to one round trip). No
polling: no query competes with the pipeline. The parts use AmiLink's own `Event.received`.
At full speed the pipeline is the bottleneck, so the "socket" part is the backlog the kernel's
socket buffers hold (buffered bytes / drain rate); `--rate` measures latency below saturation.
CPU: time.process_time() of this process over the timed window; Postgres's from /proc.
A final SQL count checks that every call reached `hotline.calls` with its outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing
import os
import pstats
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.ami_stream import QUEUE, RESPONDERS, Plan, Replayed, serve_in_process
from bench.baseline import Baseline, Reading, read_once
from hotline.adapters import log as logging_setup
from hotline.adapters.clock import SystemClock
from hotline.adapters.store import Spool, Store, StoreObserver, migrate
from hotline.config import parse_config
from hotline.core.ami import Event, Inbound
from hotline.core.records import CallRecord, Record
from hotline.daemon import Daemon, read_secrets
from tests.pg import PgCluster

TARGET_EVENTS_S = 20_000
TARGET_P99_S = 0.250
TARGET_RATIO = 0.7  # of panoramisk's own parse rate, measured in the same run
DEADLINE_S = 150.0


class _CommitClock(Store):
    """The daemon's Store, noting when each transaction that wrote a closed call record
    returned, and which sampled calls it closed."""

    def __init__(
        self,
        dsn: str,
        spool: Spool,
        observer: StoreObserver,
        *,
        samples: dict[str, int],
        calls: int,
    ) -> None:
        super().__init__(dsn, spool, observer)
        self.samples = samples
        self.calls = calls
        self.committed: dict[int, float] = {}  # sample id -> time.monotonic()
        self.closed: set[tuple[str, str, int]] = set()
        self.all_closed = asyncio.Event()
        self.done_at = 0.0
        self.transactions = 0
        self.records = 0

    async def _upsert(self, records: Sequence[Record]) -> None:
        await super()._upsert(records)  # raises, with nothing committed, unless it committed
        now = time.monotonic()
        self.transactions += 1
        self.records += len(records)
        for record in records:
            if isinstance(record, CallRecord) and record.outcome is not None:
                self.closed.add((record.uniqueid, record.queue, record.visit))
                sample = self.samples.get(record.uniqueid)
                if sample is not None and sample not in self.committed:
                    self.committed[sample] = now
        if len(self.closed) >= self.calls and not self.all_closed.is_set():
            self.done_at = now
            self.all_closed.set()


class _ProbedInbox(asyncio.Queue[Inbound]):
    """The daemon's inbox, noting when a sampled call's AgentComplete was read and taken."""

    def __init__(self, maxsize: int, samples: dict[str, int]) -> None:
        super().__init__(maxsize)
        self.samples = samples
        self.received: dict[int, float] = {}  # AmiLink's Event.received (loop.time(), monotonic)
        self.taken: dict[int, float] = {}  # the consumer took it (then folds it at once)

    def get_nowait(self) -> Inbound:
        item = super().get_nowait()
        if isinstance(item, Event) and item.name == "AgentComplete":
            sample = self.samples.get(item.fields.get("Uniqueid", ""))
            if sample is not None:
                self.received[sample] = item.received
                self.taken[sample] = time.monotonic()
        return item


@dataclass(frozen=True)
class Measured:
    plan: Plan
    rate: float | None
    replayed: Replayed | None
    done_at: float | None  # None if the deadline passed first
    closed: int
    cpu_s: float
    pg_cpu_s: float
    latency: list[tuple[float, float, float]]  # per sample, from written: read, taken, committed
    transactions: int
    records: int
    overflows: float
    disconnects: float
    profile: str
    load: tuple[float, float]  # os.getloadavg()[0] at the start and at the end of the window


def config_yaml(workdir: Path, port: int, dsn: str) -> str:
    """A configuration that turns recording on, with the stream's responders on duty."""
    (workdir / "ami-secret").write_text("bench\n")
    (workdir / "caller-keys").write_text(f"7:{secrets.token_hex(32)}\n")
    (workdir / "ami-secret").chmod(0o600)
    (workdir / "caller-keys").chmod(0o600)
    responders = "\n".join(
        f"  r-{i:03d}: {{name: R{i}, interface: PJSIP/{2000 + i}, queues: {{{QUEUE}: 0}}}}"
        for i in range(RESPONDERS)
    )
    ids = ", ".join(f"r-{i:03d}" for i in range(RESPONDERS))
    return (
        "timezone: UTC\n"
        f"ami: {{host: 127.0.0.1, port: {port}, username: hotline,"
        f" secret_file: {workdir / 'ami-secret'}}}\n"
        'http: {listen: "127.0.0.1:9470"}\n'  # not served
        f"database: {{dsn: '{dsn}', spool_dir: {workdir / 'spool'}}}\n"
        f"privacy: {{keys_file: {workdir / 'caller-keys'}}}\n"
        f"queues: {{{QUEUE}: {{min_responders: 1}}}}\n"
        f"responders:\n{responders}\n"
        f'shifts: [{{name: all, days: [daily], start: "00:00", end: "00:00",'
        f" responders: [{ids}]}}]\n"
    )


def _pg_cpu_s(postmaster: int) -> float:
    """User + system CPU of the postmaster and its children (backends, walwriter...)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        after = stat.rpartition(")")[2].split()  # [state, ppid, ..., utime at 11, stime at 12]
        if int(entry.name) == postmaster or int(after[1]) == postmaster:
            ticks += int(after[11]) + int(after[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def measure(
    workdir: Path,
    port: int,
    dsn: str,
    plan: Plan,
    conn: Connection,
    *,
    postmaster: int,
    rate: float | None,
    profile: bool,
) -> Measured:
    await migrate(dsn)
    loop = asyncio.get_running_loop()
    replayed: asyncio.Future[Replayed] = loop.create_future()

    def on_message() -> None:
        message = conn.recv()
        if message[0] == "replayed" and not replayed.done():
            replayed.set_result(message[1])

    loop.add_reader(conn.fileno(), on_message)
    config = parse_config(config_yaml(workdir, port, dsn), workdir / "hotline.yaml")
    assert config.database is not None
    registry = CollectorRegistry()
    daemon = Daemon(config, read_secrets(config), SystemClock(), registry)
    assert daemon.ledger is not None
    samples = {uid: i for i, uid in enumerate(plan.samples)}
    store = _CommitClock(
        dsn,
        Spool(config.database.spool_dir, config.database.spool_max_bytes),
        daemon.metrics.store,
        samples=samples,
        calls=plan.calls,
    )
    daemon.store = daemon.ledger.sink = store
    inbox = _ProbedInbox(daemon.inbox.maxsize, samples)
    daemon.inbox = daemon.link.inbox = inbox
    await daemon.restore()  # connects the store, as at start-up, before anything is timed
    profiler = cProfile.Profile() if profile else None
    async with asyncio.TaskGroup() as tasks:
        pg_cpu = _pg_cpu_s(postmaster)
        load = os.getloadavg()[0]
        cpu = time.process_time()
        if profiler is not None:
            profiler.enable()
        running = [
            tasks.create_task(daemon.link.run(), name="ami-link"),
            tasks.create_task(daemon.consume(), name="event-consumer"),
            tasks.create_task(store.run(), name="store-writer"),
            tasks.create_task(daemon.ledger.run_ticks(), name="call-ticks"),
        ]
        try:
            async with asyncio.timeout(DEADLINE_S):
                await store.all_closed.wait()
        except TimeoutError:
            pass
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - cpu
        pg_cpu = _pg_cpu_s(postmaster) - pg_cpu
        loads = (load, os.getloadavg()[0])
        for task in running:
            task.cancel()
    await store.close(config.database.flush_timeout_s)
    loop.remove_reader(conn.fileno())
    result = replayed.result() if replayed.done() else None
    latency: list[tuple[float, float, float]] = []
    if result is not None:
        for sample, written in enumerate(result.written_at):
            if sample in store.committed and sample in inbox.received:
                latency.append(
                    (
                        inbox.received[sample] - written,
                        inbox.taken[sample] - written,
                        store.committed[sample] - written,
                    )
                )
    text = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        text = out.getvalue()
    return Measured(
        plan=plan,
        rate=rate,
        replayed=result,
        done_at=store.done_at if store.all_closed.is_set() else None,
        closed=len(store.closed),
        cpu_s=cpu,
        pg_cpu_s=pg_cpu,
        latency=latency,
        transactions=store.transactions,
        records=store.records,
        overflows=registry.get_sample_value("hotline_event_queue_overflows_total") or 0.0,
        disconnects=sum(
            registry.get_sample_value("hotline_ami_disconnects_total", {"reason": reason}) or 0.0
            for reason in ("eof", "ping_timeout", "shutdown_event", "protocol_error")
        ),
        profile=text,
        load=loads,
    )


def _q(values: list[float], q: float) -> str:
    """The q-quantile (nearest rank) in ms."""
    if not values:
        return "n/a"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000:,.0f} ms"


def report(
    m: Measured,
    stored: dict[str, int],
    server_pid: int | None,
    baselines: dict[str, Baseline],
    passes: int,
) -> bool:
    """Print the result block; True if the run completed and every call is in Postgres."""
    p = m.plan
    pace = "full speed" if m.rate is None else f"paced at {m.rate:,.0f} events/s"
    print(f"hotline call recording: AMI bytes -> committed rows, replayed at {pace}")
    print(
        f"  stream       {p.events:,} events, {p.calls:,} calls ({p.answered:,} answered,"
        f" {p.abandoned:,} abandoned, {p.refused:,} refused), {p.size_bytes / 1e6:.1f} MB"
    )
    print(
        f"  processes    pipeline: pid {os.getpid()}, one asyncio loop (measured);"
        f" fake AMI server: pid {server_pid}; Postgres: its own cluster; {os.cpu_count()} cores"
    )
    print(
        f"  machine      1-minute load average {m.load[0]:.2f} at the start of the timed window,"
        f" {m.load[1]:.2f} at its end, on {os.cpu_count()} cores (this benchmark adds about 1)"
    )
    if m.replayed is None or m.done_at is None:
        print(
            f"  INCOMPLETE   after {DEADLINE_S:.0f} s: {m.closed:,} of {p.calls:,} calls committed"
            f" with an outcome (server finished writing: {m.replayed is not None};"
            f" inbox overflows {m.overflows:.0f}, AMI disconnects {m.disconnects:.0f})"
        )
        return False
    r = m.replayed
    elapsed = m.done_at - r.first_byte_at
    rate = p.events / elapsed
    total = [c for _, _, c in m.latency]
    p99 = sorted(total)[min(len(total) - 1, round(0.99 * (len(total) - 1)))] if total else 1e9
    print(
        f"  time         first byte sent -> last row committed: {elapsed:.2f} s"
        f" (the server wrote its last byte at {r.last_byte_at - r.first_byte_at:.2f} s)"
    )
    verdict = "met" if rate >= TARGET_EVENTS_S else "NOT met"
    if m.rate is not None:
        verdict = "not judged: paced, so this is the offered rate, not the capacity"
    else:
        verdict = f"target >= {TARGET_EVENTS_S:,}: {verdict}"
    print(
        f"  throughput   {rate:,.0f} events/s, {p.calls / elapsed:,.0f} calls/s,"
        f" {p.size_bytes / 1e6 / elapsed:.1f} MB/s  ({verdict})"
    )
    if baselines:
        _report_baselines(baselines, passes, rate, m.cpu_s / p.events * 1e6)
    verdict = "met" if p99 < TARGET_P99_S else "NOT met"
    print(
        f"  latency      AgentComplete written -> its row committed, {len(total)} calls:"
        f" p50 {_q(total, 0.5)}, p99 {_q(total, 0.99)}, max {_q(total, 1.0)}"
        f"  (target p99 < {TARGET_P99_S * 1000:.0f} ms: {verdict})"
    )
    read = [a for a, _, _ in m.latency]
    queued = [b - a for a, b, _ in m.latency]
    stored_in = [c - b for _, b, c in m.latency]
    print(
        f"    of which   socket until read: p50 {_q(read, 0.5)}, p99 {_q(read, 0.99)};"
        f" inbox: p50 {_q(queued, 0.5)}, p99 {_q(queued, 0.99)};"
        f" folded and in the store until committed: p50 {_q(stored_in, 0.5)},"
        f" p99 {_q(stored_in, 0.99)}"
    )
    print(
        f"  socket       longest server write blocked on a full socket:"
        f" {r.longest_wait_s * 1000:,.0f} ms (Asterisk drops a reader after writetimeout,"
        " 2,000 ms in our manager.conf)"
    )
    print(
        f"  cpu          pipeline {m.cpu_s:.2f} s ({m.cpu_s / elapsed:.0%} of one core,"
        f" {m.cpu_s / p.events * 1e6:.0f} us/event); Postgres {m.pg_cpu_s:.2f} s;"
        f" fake server {r.cpu_s:.2f} s"
    )
    per = m.records / max(1, m.transactions)
    print(
        f"  store        {m.transactions:,} transactions of {per:.0f} records on average;"
        f" inbox overflows {m.overflows:.0f},"
        f" AMI disconnects {m.disconnects:.0f}"
    )
    closed = sum(stored.values())
    ok = closed == p.calls
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(stored.items()))
    print(
        f"  check        hotline.calls has {closed:,} rows with an outcome ({outcomes}):"
        f" {'as generated' if ok else f'EXPECTED {p.calls:,}'}"
    )
    if m.profile:
        print("\ncProfile of the pipeline process during the run (by own time):")
        print(m.profile)
    return ok


def _report_baselines(
    baselines: dict[str, Baseline], passes: int, rate: float, cpu_us: float
) -> None:
    print(
        f"  baselines    the same stream over the same socket, read by this process"
        f" ({passes} pass{'es' if passes > 1 else ''} each before and after the pipeline;"
        " mean, range):"
    )
    labels = {
        "panoramisk": "panoramisk 1.4 parse (stock Manager, every event to a callback)",
        "readuntil": 'bare StreamReader.readuntil(b"\\r\\n\\r\\n") split',
    }
    for name, baseline in baselines.items():
        print(
            f"    {labels[name]}: {baseline.rate:,.0f} events/s ({baseline.spread()}),"
            f" {baseline.cpu_us:.1f} us/event of CPU"
        )
    parse = baselines.get("panoramisk")
    if parse is not None:
        ratio = rate / parse.rate
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(
            f"  ratio        pipeline / panoramisk parse: {ratio:.2f} by rate"
            f" (target >= {TARGET_RATIO}: {verdict}), {parse.cpu_us / cpu_us:.2f} by CPU per event"
        )
    split = baselines.get("readuntil")
    if split is not None:
        print(
            f"               pipeline / readuntil split: {rate / split.rate:.2f} by rate,"
            f" {split.cpu_us / cpu_us:.2f} by CPU per event"
        )
        if parse is not None:
            print(
                f"               panoramisk parse / readuntil split: {parse.rate / split.rate:.2f}"
                f" by rate, {split.cpu_us / parse.cpu_us:.2f} by CPU per event"
            )


def _baseline_passes(
    order: tuple[str, ...], passes: int, port: int, plan: Plan, conn: Connection
) -> dict[str, list[Reading]]:
    readings: dict[str, list[Reading]] = {name: [] for name in order}
    for _ in range(passes):
        for name in order:
            readings[name].append(read_once(name, port, plan, conn))
    return readings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recording", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=200_000, help="stream size (200000)")
    parser.add_argument("--rate", type=float, help="replay at this many events/s, not flat out")
    parser.add_argument("--sample-every", type=int, default=50, help="answered calls per sample")
    parser.add_argument("--seed", type=int, default=988)
    parser.add_argument("--profile", action="store_true", help="cProfile the pipeline (slower)")
    parser.add_argument(
        "--baselines",
        type=int,
        default=1,
        metavar="N",
        help="passes of each same-run baseline before and after the pipeline (1; 0: none;"
        " none when paced)",
    )
    args = parser.parse_args(argv)
    passes = 0 if args.rate else max(0, args.baselines)
    logging_setup.configure(level="warning")
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(
        target=serve_in_process,
        args=(theirs, args.events, args.seed, args.sample_every, args.rate),
        name="fake-ami",
        daemon=True,
    )
    server.start()  # it generates the stream while the cluster starts
    cluster = PgCluster()
    ok = False
    try:
        cluster.start()
        dsn = cluster.create_database("hotline")
        if ours not in wait([ours, server.sentinel], timeout=120):
            print(
                f"the fake AMI server is not ready (exit code {server.exitcode})", file=sys.stderr
            )
            return 1
        _, port, plan = ours.recv()
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        # Baselines bracket the pipeline, in mirrored order, so a drift in the machine's load
        # during the run weighs on both sides of the ratio.
        before = _baseline_passes(("panoramisk", "readuntil"), passes, port, plan, ours)
        with tempfile.TemporaryDirectory(prefix="hotline-bench-") as workdir:
            measured = asyncio.run(
                measure(
                    Path(workdir),
                    port,
                    dsn,
                    plan,
                    ours,
                    postmaster=postmaster,
                    rate=args.rate,
                    profile=args.profile,
                )
            )
        after = _baseline_passes(("readuntil", "panoramisk"), passes, port, plan, ours)
        baselines = {
            name: Baseline(name, (*before[name], *after[name]))
            for name in ("panoramisk", "readuntil")
            if before[name]
        }
        rows = cluster.psql(
            "SELECT outcome, count(*) FROM hotline.calls WHERE outcome IS NOT NULL GROUP BY 1",
            "hotline",
        )
        stored = {
            name: int(n) for name, n in (line.split("|") for line in rows.split() if "|" in line)
        }
        ok = report(measured, stored, server.pid, baselines, passes)
    finally:
        ours.send("stop")
        server.join(10)
        if server.is_alive():
            server.terminate()
            server.join(5)
        cluster.destroy()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
