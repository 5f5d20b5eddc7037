"""Benchmark: plan time (roster -> desired members -> reconcile plan) for 2,000 responders in
20 queues. Run: `make bench` or `python -m bench.plan`. Target: under 50 ms per plan.

Baseline, in the same run: the least any plan must do, reading every member Asterisk reports
once into a set keyed as the plan compares them; each figure is also printed as a ratio to it."""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from types import MappingProxyType
from zoneinfo import ZoneInfo

from hotline.core import reconcile
from hotline.core.reconcile import ActualMember
from hotline.core.roster import Desired, QueuePolicy, Responder, Roster, Shift, desired_at

RESPONDERS = 2_000
QUEUES = 20
SHIFTS = 300
RUNS = 200


def build_roster(rng: random.Random) -> Roster:
    queues = [f"q{i:02d}" for i in range(QUEUES)]
    responders = {}
    for i in range(RESPONDERS):
        rid = f"r-{i:04d}"
        mine = rng.sample(queues, rng.randint(1, 4))
        responders[rid] = Responder(
            rid,
            f"Responder {i}",
            f"PJSIP/{10000 + i}",
            f"PJSIP/{10000 + i}",
            MappingProxyType({q: rng.randint(0, 3) for q in mine}),
        )
    shifts = random_shifts(rng, list(responders), SHIFTS, (4, 6, 8, 10, 12), crew=40)
    return Roster(
        ZoneInfo("America/New_York"),
        MappingProxyType({q: QueuePolicy(q, 2) for q in queues}),
        MappingProxyType(responders),
        tuple(shifts),
        (),
    )


def random_shifts(
    rng: random.Random, ids: list[str], count: int, hours: tuple[int, ...], crew: int
) -> list[Shift]:
    """`count` shifts starting on the half hour, `hours` long, on random days, of `crew`
    responders each; the benchmarks' rosters draw them all the same way, seed for seed."""
    shifts = []
    for i in range(count):
        start = rng.randrange(0, 24 * 60, 30)
        end = (start + rng.choice(hours) * 60) % (24 * 60)
        shifts.append(
            Shift(
                f"s{i}",
                frozenset(rng.sample(range(7), rng.randint(1, 7))),
                clock_time(start // 60, start % 60),
                clock_time(end // 60, end % 60),
                tuple(rng.sample(ids, crew)),
            )
        )
    return shifts


def as_actual(desired: Desired) -> list[ActualMember]:
    return [
        ActualMember(q, m.interface, m.responder, m.state_interface, m.penalty, True, False, False)
        for q, members in desired.items()
        for m in members.values()
    ]


def timed(fn: object, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def report(label: str, samples: list[float], baseline: float | None = None) -> float:
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    median = statistics.median(samples)
    ratio = f"   {median / baseline:5.1f} x the baseline" if baseline else ""
    print(f"{label:<48} median {median:6.2f} ms   p99 {p99:6.2f} ms{ratio}")
    return median


def main() -> None:
    rng = random.Random(20261128)
    roster = build_roster(rng)
    owned = frozenset(roster.responders)
    start = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    instants = [start + timedelta(minutes=17 * i) for i in range(RUNS)]
    desired_now = desired_at(roster, start)
    steady = as_actual(desired_now)
    members = sum(len(m) for m in desired_now.values())
    print(
        f"{RESPONDERS} responders, {QUEUES} queues, {SHIFTS} shifts; {members} members desired now"
    )

    baseline = report(
        "baseline: every reported member read once",
        timed(lambda: {(m.queue, m.interface, m.name, m.penalty) for m in steady}, RUNS),
    )
    it = iter(instants * 4)
    report(
        "desired_at (roster at an instant)",
        timed(lambda: desired_at(roster, next(it)), RUNS),
        baseline,
    )
    report(
        "plan, steady state (nothing to do)",
        timed(lambda: reconcile.plan(desired_at(roster, start), steady, owned), RUNS),
        baseline,
    )
    later = start + timedelta(hours=6)
    report(
        "plan at a shift change (6 h later)",
        timed(lambda: reconcile.plan(desired_at(roster, later), steady, owned), RUNS),
        baseline,
    )
    report(
        "plan into an empty PBX",
        timed(lambda: reconcile.plan(desired_at(roster, start), [], owned), RUNS),
        baseline,
    )


if __name__ == "__main__":
    main()
