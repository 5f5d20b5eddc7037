"""A flood of half-sent requests on the HTTP port cannot take the daemon down (docs/http.md): for
30 s, 2,000 connections that each send the start of a request head and never finish it, reopened
as soon as they are closed. Meanwhile the AMI link stays up without a reconnect, membership
follows a shift change, a real call is recorded in Postgres; afterwards /healthz answers at once,
and the whole flood has cost a handful of log lines.

The daemon runs in this process with the 1,024 descriptors of the original finding (where about
1,100 such connections left it unable to reconnect to AMI). The flood runs in a process of its
own (`tests/flood.py`), as an attacker's would: its 2,000 sockets and its CPU are not the
daemon's, so what is measured is the daemon's behaviour, not the test's load on its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from hotline.daemon import Daemon
from tests.conftest import StartDaemon
from tests.harness import REPO, AmiTestClient, ManualClock, local, wait_for
from tests.integration.conftest import Recorded

NY = ZoneInfo("America/New_York")
ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 1}}
responders:
  r-ana: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-ben: {{name: Ben, interface: "{local(1002)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: early, days: [daily], start: "10:00", end: "10:10", responders: [r-ana]}}
  - {{name: late, days: [daily], start: "10:10", end: "10:20", responders: [r-ben]}}
"""
EARLY = datetime(2026, 12, 2, 10, 0, 30, tzinfo=NY)
LATE = datetime(2026, 12, 2, 10, 10, 30, tzinfo=NY)
CALLER = "+15550300001"

FLOOD_CONNECTIONS = 2000
FLOOD_S = 30
DESCRIPTORS = 1024  # the daemon's limit in the finding
STDERR_LINES_MAX = 200


@contextlib.contextmanager
def descriptor_limit(soft: int) -> Iterator[None]:
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def sample(hotline: Daemon, name: str, labels: dict[str, str] | None = None) -> float:
    value = hotline.metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, f"{name}{labels or ''} is not exported"
    return value


def ami_sessions(hotline: Daemon) -> tuple[float, float]:
    """(successful AMI logins, AMI sessions lost) so far."""
    logins = sample(hotline, "hotline_ami_connect_attempts_total", {"result": "success"})
    lost = sum(
        sample(hotline, "hotline_ami_disconnects_total", {"reason": reason})
        for reason in ("shutdown_event", "eof", "ping_timeout", "local")
    )
    return logins, lost


async def test_a_flood_of_half_sent_requests_leaves_ami_membership_and_records_working(
    recorded: Recorded,
    ami: AmiTestClient,
    start_daemon: StartDaemon,
    capfd: pytest.CaptureFixture[str],
) -> None:
    loop = asyncio.get_running_loop()
    with descriptor_limit(DESCRIPTORS):
        clock = ManualClock(EARLY)
        hotline = await start_daemon(ROSTER, clock, extra=recorded.config)
        port, limit = hotline.config.http.port, hotline.config.http.max_connections
        await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 5, "r-ana on duty")
        await wait_for(_in_sync(hotline), bool, 5, "membership in sync")
        sessions_before = ami_sessions(hotline)
        capfd.readouterr()  # only what the flood costs is counted

        # The daemon's side, every 50 ms: connections served, and the AMI link's state.
        served: list[float] = []
        link_states: set[str] = set()

        async def watch() -> None:
            while True:
                served.append(sample(hotline, "hotline_http_connections"))
                link_states.add(hotline.link.state)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        flood = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.flood",
            str(port),
            "--connections",
            str(FLOOD_CONNECTIONS),
            "--seconds",
            str(FLOOD_S),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        flooded_at = loop.time()
        try:
            # Flooded for good: the limit reached, and the first connections it served closed for
            # never finishing their request head (then taken again by the flood).
            await wait_for(
                _metric(hotline, "hotline_http_connections_shed_total", {"reason": "limit"}),
                lambda shed: shed > 0,
                10,
                "the flood to fill the connection limit",
            )
            await wait_for(
                _metric(
                    hotline, "hotline_http_connections_shed_total", {"reason": "header_timeout"}
                ),
                lambda shed: shed >= limit,
                hotline.config.http.header_timeout_s + 5,
                "the first header timeouts",
            )

            # While flooded: a shift change reaches Asterisk, and a real call is recorded.
            clock.set(LATE)
            await wait_for(ami.names, lambda n: n == {"crisis": ["r-ben"]}, 5, "r-ben on duty")
            await wait_for(_in_sync(hotline), bool, 5, "membership in sync after the change")
            await ami.call("988", caller=CALLER, hold_s=20, talk_s=2)

            async def rows() -> list[dict[str, object]]:
                return await asyncio.to_thread(recorded.by_caller, CALLER)

            found = await wait_for(
                rows, lambda rs: bool(rs) and all(r["outcome"] for r in rs), 15, "the call closed"
            )
            checked_after_s = loop.time() - flooded_at
            assert checked_after_s < FLOOD_S, "the flood ended before the checks were done"
            out, err = await asyncio.wait_for(flood.communicate(), FLOOD_S + 30)
        finally:
            watcher.cancel()
            if flood.returncode is None:
                flood.kill()
                await flood.wait()
        assert flood.returncode == 0, err.decode()
        figures = json.loads(out)

        # After the flood: /healthz answers at once, and the daemon is ready.
        async with aiohttp.ClientSession() as http:

            async def health() -> int:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        return response.status
                except aiohttp.ClientError:
                    return 0

            await wait_for(health, lambda status: status == 200, 2, "/healthz after the flood")
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert (response.status, await response.json()) == (
                    200,
                    {"ready": True, "reasons": []},
                )
        output, errors = capfd.readouterr()

    assert [(r["outcome"], r["answered_by"]) for r in found] == [("answered", "r-ben")]
    # The AMI link never left "live": no reconnect, no session lost.
    assert link_states == {"live"}
    assert ami_sessions(hotline) == sessions_before
    # The flood was real and the limit held: connections beyond it closed at once, those that
    # never finished their head closed after header_timeout, never a descriptor short.
    assert figures["opened"] >= FLOOD_CONNECTIONS
    assert max(served) <= limit
    shed_limit = sample(hotline, "hotline_http_connections_shed_total", {"reason": "limit"})
    shed_late = sample(hotline, "hotline_http_connections_shed_total", {"reason": "header_timeout"})
    assert shed_limit > 0
    assert shed_late >= limit
    for kind in ("descriptors", "memory"):
        assert sample(hotline, "hotline_http_accept_errors_total", {"kind": kind}) == 0
    # A few summary lines, never one per connection.
    error_lines = errors.splitlines()
    assert len(error_lines) < STDERR_LINES_MAX, error_lines[:20]
    assert len(output.splitlines()) < STDERR_LINES_MAX
    # The figures, for `pytest -rP` (docs/http.md quotes them).
    print(
        "flood figures:",
        json.dumps(
            {
                **figures,
                "served_max": max(served),
                "shed_at_limit": shed_limit,
                "shed_header_timeout": shed_late,
                "checks_done_after_s": round(checked_after_s, 1),
                "stderr_lines": len(error_lines),
                "stdout_lines": len(output.splitlines()),
                "ami_link_states": sorted(link_states),
            }
        ),
    )


def _in_sync(hotline: Daemon) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return hotline.keeper.in_sync

    return probe


def _metric(hotline: Daemon, name: str, labels: dict[str, str]) -> Callable[[], Awaitable[float]]:
    async def probe() -> float:
        return sample(hotline, name, labels)

    return probe
