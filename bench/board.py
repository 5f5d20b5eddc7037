"""Benchmark: the board's state endpoint (GET /api/v1/board) with 50 queues and 2,000 members, in
daemon time: the route's handler in-process, from a request with a bearer token to the finished
response (token check, the live model read member by member, roster explained now and at the next
change, JSON encoded). Target: under 20 ms median. Run: `python -m bench.board`.

Same-run baselines: `json.dumps` of the very board the endpoint answers (what encoding an
equally sized document costs on this machine now), and an aiohttp handler answering those bytes
as a constant body through the same path."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bench.plan import random_shifts
from hotline.adapters.api import Api, Sources
from hotline.config import Config, parse_config
from hotline.core.access import AuthFailure, token_hash
from hotline.core.board import Schedule, build_board, schedule
from hotline.core.queuestate import QueueBoard
from hotline.core.roster import Override, QueuePolicy, Responder, Roster
from hotline.core.supervision import Actor, AuditEntry

QUEUES = 50
PER_QUEUE = 40  # 2,000 members
SHIFTS = 120
RUNS = 300
TOKEN = "bench-token-" + "x" * 32
NOW = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_roster(rng: random.Random) -> Roster:
    queues = [f"q{i:02d}" for i in range(QUEUES)]
    responders = {}
    for i in range(QUEUES * PER_QUEUE):
        rid = f"r-{i:04d}"
        responders[rid] = Responder(
            rid,
            f"Responder {i}",
            f"PJSIP/{10000 + i}",
            f"PJSIP/{10000 + i}",
            MappingProxyType({queues[i % QUEUES]: rng.randint(0, 3)}),
        )
    ids = list(responders)
    shifts = random_shifts(rng, ids, SHIFTS, (4, 6, 8, 12), crew=60)
    return Roster(
        ZoneInfo("America/New_York"),
        MappingProxyType({q: QueuePolicy(q, 2) for q in queues}),
        MappingProxyType(responders),
        tuple(shifts),
        (),
    )


def live_board(roster: Roster, rng: random.Random, now: float) -> QueueBoard:
    """Every responder a member of their queue, in every state, some paused with a reason, and
    a few callers waiting in each queue."""
    board = QueueBoard(dict.fromkeys(roster.queues, 30.0))
    items: list[dict[str, str]] = []
    for rid, responder in roster.responders.items():
        (queue,) = responder.queues
        paused = rng.random() < 0.15
        items.append(
            {
                "Event": "QueueMember",
                "Queue": queue,
                "Name": rid,
                "Location": responder.interface,
                "Status": str(rng.choice((1, 1, 1, 2, 6, 5))),
                "Paused": "1" if paused else "0",
                "PausedReason": rng.choice(("break", "decompression", "admin")) if paused else "",
                "LastPause": str(int(now - rng.randint(0, 3600))) if paused else "0",
                "InCall": "0",
                "LastCall": str(int(now - rng.randint(0, 600))),
            }
        )
    for queue in roster.queues:
        for n in range(rng.randint(0, 4)):
            items.append(
                {"Event": "QueueEntry", "Queue": queue, "Uniqueid": f"{queue}.{n}", "Wait": "12"}
            )
    board.resync(items, now)
    return board


class _Idle:
    """The supervisor: the board endpoint never calls it."""

    async def pause(self, *args: object) -> Mapping[str, object]:
        raise AssertionError

    async def unpause(self, *args: object) -> Mapping[str, object]:
        raise AssertionError

    async def add_override(self, *args: object) -> Override:
        raise AssertionError

    async def cancel_override(self, *args: object) -> None:
        raise AssertionError

    async def resync(self, actor: Actor, request_id: str) -> None:
        raise AssertionError

    async def audit(self, limit: int, full: bool) -> list[AuditEntry]:
        raise AssertionError

    def overrides(self) -> list[Override]:
        return []


class _Quiet:
    def auth_failed(self, reason: AuthFailure) -> None:
        raise AssertionError(reason)


def _settings() -> Config:
    text = (
        "timezone: UTC\nami: {username: hotline, secret_env: UNUSED}\n"
        f"http: {{tokens: [{{name: wall, role: viewer, sha256: {token_hash(TOKEN).hex()}}}]}}\n"
        "queues: {q: {}}\nresponders: {}\n"
    )
    return parse_config(text, Path("bench.yaml"))


Sample = tuple[float, float]  # (wall ms, CPU ms of this process)


def _clocks() -> Sample:
    return time.perf_counter() * 1000, time.process_time() * 1000


def _since(started: Sample) -> Sample:
    wall, cpu = _clocks()
    return wall - started[0], cpu - started[1]


async def timed(handler: Handler, app: web.Application, runs: int) -> list[Sample]:
    samples = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(runs):
        request = make_mocked_request("GET", "/api/v1/board", headers=headers, app=app)
        started = _clocks()
        response = await handler(request)
        samples.append(_since(started))
        assert response.status == 200
    return samples


def timed_sync(fn: Callable[[], object], runs: int) -> list[Sample]:
    samples = []
    for _ in range(runs):
        started = _clocks()
        fn()
        samples.append(_since(started))
    return samples


def report(label: str, samples: list[Sample]) -> tuple[float, float]:
    """Medians of wall and CPU time. CPU time is the daemon's own work: on a loaded machine the
    wall clock also counts the time other processes held the core."""
    wall = sorted(w for w, _ in samples)
    cpu = statistics.median(c for _, c in samples)
    p99 = wall[int(len(wall) * 0.99) - 1]
    median = statistics.median(wall)
    print(f"{label:<52} median {median:6.2f} ms (CPU {cpu:6.2f} ms)   p99 {p99:6.2f} ms")
    return median, cpu


async def main() -> None:
    rng = random.Random(20261130)
    roster = build_roster(rng)
    wall = time.time()
    queues = live_board(roster, rng, wall)
    config = _settings()
    limits = {name: reason.max_s for name, reason in config.pauses.reasons.items()}
    at = NOW

    plans: list[Schedule] = []

    def board() -> dict[str, object]:
        # As the daemon does: the roster's part is reused until the plan's next change.
        now = time.time()
        if not plans or not plans[0].holds(roster, frozenset(), at):
            plans[:] = [schedule(roster, at, frozenset())]
        return build_board(queues.detail(now), plans[0], at, pause_limits=limits, wall=now)

    def cold() -> dict[str, object]:
        plans.clear()
        return board()

    api = Api(
        config.http,
        Sources(
            supervisor=_Idle(),
            board=board,
            plan=lambda _at: {},
            roster=lambda: roster,
            now=lambda: at,
            pause_reasons=config.pauses.reasons,
            observer=_Quiet(),
        ),
    )
    app = web.Application()
    api.install(app)
    handler = next(
        route.handler
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
        and route.resource.canonical == "/api/v1/board"
    )  # fmt: skip
    document = board()
    body = json.dumps(document, separators=(",", ":")).encode()
    listed = document["queues"]
    assert isinstance(listed, list)
    members = sum(len(queue["members"]) for queue in listed)
    print(f"{QUEUES} queues, {members} members; the board is {len(body) / 1024:.0f} KiB of JSON")

    async def constant(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    # As the daemon runs (Daemon.start): what start-up built is frozen out of the collector's
    # reach, and young collections run less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    await timed(handler, app, 20)  # warm-up
    endpoint = report("GET /api/v1/board (handler, in-process)", await timed(handler, app, RUNS))
    baseline = report(
        "baseline: json.dumps of the same board",
        timed_sync(lambda: json.dumps(document, separators=(",", ":")), RUNS),
    )
    report(
        "first board after a plan change (roster explained)",
        timed_sync(lambda: json.dumps(cold(), separators=(",", ":")), RUNS // 10),
    )
    fixed = report("baseline: aiohttp handler, constant body", await timed(constant, app, RUNS))
    print(
        f"endpoint / json.dumps = {endpoint[0] / baseline[0]:.1f}x wall, "
        f"{endpoint[1] / baseline[1]:.1f}x CPU; endpoint / constant body = "
        f"{endpoint[0] / fixed[0]:.0f}x; target median < 20 ms: "
        f"{'met' if endpoint[0] < 20 else 'NOT met'} (wall), "
        f"{'met' if endpoint[1] < 20 else 'NOT met'} (CPU)"
    )


if __name__ == "__main__":
    asyncio.run(main())
