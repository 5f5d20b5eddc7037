"""The drill itself: set up the rig, run steps of SIP load, read each step, tear down.

A step: the responders' phones start (one SIPp UAS), the carrier (one SIPp UAC) places calls at
a rate that keeps `concurrency` calls up at once for `hold_s` seconds, and the drill reads, over
exactly that window, the daemon's CPU (/proc/<pid>/stat), its event-lag and Postgres write-latency
histograms and the time each /metrics scrape takes (one every `scrape_every_s`, by default 5 s
as deploy/prometheus scrapes); then it waits for the step's records and checks each against
SIPp's logs (bench/drill/timings.py). A baseline step is the same load with the daemon stopped
(SIGTERM; the queue keeps its members, as Asterisk's persistent members do in production): what
SIPp and Asterisk carry without hotline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.drill import rig
from bench.drill.timings import CallerLeg, Verdict, caller_legs, judge, phone_legs
from tests.harness import free_port, wait_for
from tests.pg import PgCluster

LINE = "988"
ROWS_WITHIN_S = 60.0
LAG_TARGET_S = 0.1


@dataclass(frozen=True)
class Plan:
    """What every step's calls look like."""

    ring_s: float = 0.5  # the phone rings this long, then answers
    talk_s: float = 20.5  # then talks this long and hangs up
    greeting_s: float = field(default_factory=rig.greeting_s)
    wrapup_s: float = field(default_factory=lambda: float(rig.queue_setting("wrapuptime")))
    # Answer() returns once the caller's first audio frame arrives, or after 500 ms: the carrier
    # sends signalling only, so every caller joins the queue 0.5 s + the greeting after the answer.
    answer_wait_s: float = 0.5

    @property
    def joins_after_s(self) -> float:
        """From the carrier's 200 OK to the caller's joining the queue."""
        return self.answer_wait_s + self.greeting_s

    @property
    def call_s(self) -> float:
        """A call's length as the carrier sees it, with a queue that answers at once."""
        return self.joins_after_s + self.ring_s + self.talk_s

    def rate(self, concurrency: int) -> float:
        """Calls per second that keep `concurrency` calls up at once."""
        return concurrency / self.call_s

    def responders(self, concurrency: int) -> int:
        """Enough responders that the queue never runs out of free ones: each call takes a
        responder for its ring, talk and wrap-up; a quarter more for the calls' jitter."""
        busy_s = self.ring_s + self.talk_s + self.wrapup_s + 1
        return math.ceil(self.rate(concurrency) * busy_s * 1.25) + 5


@dataclass
class Step:
    """The readings of one step."""

    concurrency: int
    with_daemon: bool
    calls: int = 0
    elapsed_s: float = 0.0
    calls_per_s: float = 0.0
    peak_concurrency: int = 0
    carrier_exit: int = 0
    carrier_errors: int = 0
    daemon_cpu: float | None = None
    asterisk_cpu: float = 0.0
    sipp_cpu: float = 0.0
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    lag_within_target: float | None = None  # share of events at most 100 ms late (exact edge)
    lag_events: int = 0
    scrape_s: list[float] = field(default_factory=list)
    write_p50_s: float | None = None
    write_p99_s: float | None = None
    writes: int = 0
    dropped: dict[str, float] = field(default_factory=dict)  # by reason
    load: tuple[str, str] = ("", "")
    verdict: Verdict | None = None

    @property
    def sipp_wait_p50_s(self) -> float | None:
        waits = self.verdict.sipp_waits if self.verdict else []
        return statistics.median(waits) if waits else None

    @property
    def sipp_wait_p99_s(self) -> float | None:
        waits = sorted(self.verdict.sipp_waits if self.verdict else [])
        return waits[min(len(waits) - 1, round(0.99 * (len(waits) - 1)))] if waits else None


class Drill:
    """The rig for a run of steps: Postgres, the PBX with the drill's endpoints, the daemon."""

    def __init__(self, plan: Plan, responders: int, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.ids = rig.responder_ids(responders)
        self.cluster = PgCluster()
        self.phones_port = rig.udp_port(rig.PHONES_IP)
        sip_port = free_port()
        self.pbx = rig.DrillPbx(
            name=f"drill-{os.getpid()}",
            ami_port=free_port(),
            sip_port=free_port(),
            state_dir=workdir / "pbx",
            overlay=workdir / "overlay",
            drill_sip_port=sip_port,
        )
        self.hotline: rig.HotlineProcess | None = None
        self.steps = 0

    async def __aenter__(self) -> Drill:
        self.pbx.state_dir.mkdir(parents=True, exist_ok=True)
        rig.render_overlay(
            self.pbx.overlay,
            sip_port=self.pbx.drill_sip_port,
            phones_port=self.phones_port,
            ids=self.ids,
        )
        try:
            await asyncio.to_thread(self.cluster.start)
            dsn = await asyncio.to_thread(self.cluster.create_database, "hotline")
            await asyncio.to_thread(self.pbx.start)
            self.hotline = rig.HotlineProcess(self.workdir / "daemon", self.pbx, dsn, self.ids)
            self.hotline.workdir.mkdir()
            self.hotline.write_config()
            await self.hotline.migrate()
            await self.start_daemon()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.hotline is not None:
            with contextlib.suppress(AssertionError):
                await self.hotline.stop()
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(self.pbx.run, "reset")
        await asyncio.to_thread(self.cluster.destroy)

    async def start_daemon(self) -> None:
        assert self.hotline is not None
        await self.hotline.start()
        await wait_for(self._members, lambda n: n == len(self.ids), 60, "every responder on duty")

    async def stop_daemon(self) -> None:
        assert self.hotline is not None
        await self.hotline.stop()

    async def _members(self) -> int:
        out = await asyncio.to_thread(self.pbx.cli, f"queue show {rig.QUEUE}")
        return sum(1 for line in out.splitlines() if "(PJSIP/drill-" in line)

    async def step(self, concurrency: int, hold_s: float, *, scrape_every_s: float = 5.0) -> Step:
        """One step of load; with the daemon if it runs, else a baseline."""
        assert self.hotline is not None
        self.steps += 1
        daemon_up = self.hotline.proc is not None
        result = Step(concurrency, daemon_up)
        prefix = f"{LINE}{self.steps:02d}"
        tag = f"step{self.steps:02d}-{concurrency}{'' if daemon_up else '-baseline'}"
        plan = self.plan
        rate = plan.rate(concurrency)
        calls = max(concurrency, round(rate * hold_s))
        hold_ms = round((plan.call_s + plan.wrapup_s + 30) * 1000)
        phones = await rig.start_phones(
            self.workdir,
            f"{tag}-phones",
            self.phones_port,
            ring_ms=round(plan.ring_s * 1000),
            talk_ms=round(plan.talk_s * 1000),
        )
        carrier: rig.SippRun | None = None
        try:
            async with aiohttp.ClientSession() as http:
                before = await rig.scrape(http, self.hotline.http_port) if daemon_up else None
                daemon_cpu = rig.CpuMeter(self.hotline.pid) if daemon_up else None
                asterisk_cpu = rig.CpuMeter(self.pbx.pid)
                load_before = rig.load_average()
                started = time.monotonic()
                carrier = await rig.start_carrier(
                    self.workdir,
                    f"{tag}-carrier",
                    prefix=prefix,
                    pbx_port=self.pbx.drill_sip_port,
                    rate=rate * 1.05,  # a little over, so that the limit holds the concurrency
                    limit=concurrency,
                    calls=calls,
                    hold_ms=hold_ms,
                )
                scrapes: list[float] = []
                waiting = asyncio.create_task(carrier.wait(calls / rate + hold_ms / 1000 + 120))
                while not waiting.done():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(waiting), scrape_every_s)
                    if waiting.done():
                        break
                    carrier.cpu.share()  # a reading while it runs: its /proc entry goes with it
                    if daemon_up:
                        took, _ = await rig.scrape(http, self.hotline.http_port)
                        scrapes.append(took)
                result.carrier_exit = await waiting
                result.elapsed_s = time.monotonic() - started
                result.load = (load_before, rig.load_average())
                result.asterisk_cpu = asterisk_cpu.share()
                result.sipp_cpu = carrier.cpu.share() + phones.cpu.share()
                if daemon_cpu is not None:
                    result.daemon_cpu = daemon_cpu.share()
                after = await rig.scrape(http, self.hotline.http_port) if daemon_up else None
                result.scrape_s = scrapes
        finally:
            await phones.stop()
            if carrier is not None:
                await carrier.kill()
        assert carrier is not None
        callers = caller_legs(carrier.log, prefix)
        legs = phone_legs(phones.log)
        result.calls = len(callers)
        result.carrier_errors = len(carrier.error_lines())
        # The rate calls arrived at, first INVITE to last (the carrier's pace, if it kept it).
        invited = sorted(c.invite for c in callers.values() if c.invite is not None)
        if len(invited) > 1:
            result.calls_per_s = (len(invited) - 1) / (invited[-1] - invited[0])
        result.peak_concurrency = _peak(callers.values())
        if before is not None and after is not None:
            _read_metrics(result, before[1], after[1])
        rows = await self._rows(prefix, len(callers)) if daemon_up else None
        result.verdict = judge(callers, legs, rows, joins_after_s=plan.joins_after_s)
        return result

    async def _rows(self, prefix: str, calls: int) -> list[dict[str, object]]:
        """The step's records once every call has one with an outcome (or the deadline)."""

        async def rows() -> list[dict[str, object]]:
            return await asyncio.to_thread(rig.call_rows, self.cluster, "hotline", prefix)

        with contextlib.suppress(AssertionError):
            await wait_for(
                rows,
                lambda found: sum(1 for r in found if r["outcome"]) >= calls,
                ROWS_WITHIN_S,
                "every call's record",
                interval=0.5,
            )
        return await rows()


def _peak(callers: Iterable[CallerLeg]) -> int:
    """The most calls up at once, from the carrier's own timings."""
    events: list[tuple[float, int]] = []
    for c in callers:
        if c.invite is not None:
            events.append((c.invite, 1))
            events.append((c.ended if c.ended is not None else c.invite, -1))
    peak = now = 0
    for _, change in sorted(events):
        now += change
        peak = max(peak, now)
    return peak


def _read_metrics(step: Step, before: rig.Samples, after: rig.Samples) -> None:
    lag = rig.delta(
        rig.histogram(after, "hotline_event_lag_seconds"),
        rig.histogram(before, "hotline_event_lag_seconds"),
    )
    step.lag_p50_s = rig.quantile(lag, 0.5)
    step.lag_p99_s = rig.quantile(lag, 0.99)
    step.lag_within_target = rig.share_within(lag, LAG_TARGET_S)
    step.lag_events = round(lag.get(float("inf"), 0.0))
    writes = rig.delta(
        rig.histogram(after, "hotline_db_write_duration_seconds"),
        rig.histogram(before, "hotline_db_write_duration_seconds"),
    )
    step.write_p50_s = rig.quantile(writes, 0.5)
    step.write_p99_s = rig.quantile(writes, 0.99)
    step.writes = round(writes.get(float("inf"), 0.0))
    for (name, labels), value in after.items():
        lost = value - before.get((name, labels), 0.0)
        if name == "hotline_events_dropped_total" and lost:
            reason = dict(labels).get("reason", "")
            step.dropped[reason] = step.dropped.get(reason, 0.0) + lost


@contextlib.asynccontextmanager
async def drill(plan: Plan, max_concurrency: int) -> AsyncIterator[Drill]:
    """A rig sized for `max_concurrency`, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="hotline-drill-") as workdir:
        async with Drill(plan, plan.responders(max_concurrency), Path(workdir)) as rigged:
            yield rigged
