"""Benchmark: the coverage look-ahead for 2,000 responders, each in all of 20 queues (40,000
memberships), 300 shifts, exceptions, overrides and certifications, over 7 days (672 slots),
with a forecast load in every slot. Run: `python -m bench.coverage`. Target: under 1 s.

Same-run baseline: what the naive way would cost, `desired_at` once per slot: one call is
timed and multiplied by the 672 slots (the naive way also needs the calls at the changes inside
slots, so it is cheaper than the real thing). The ratio is baseline / coverage.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

from bench.plan import random_shifts
from hotline.core.coverage import Target, coverage
from hotline.core.forecast import SLOTS_PER_DAY, Forecast
from hotline.core.roster import (
    ExceptionKind,
    Override,
    QueuePolicy,
    Responder,
    Roster,
    RosterException,
    desired_at,
)

RESPONDERS = 2_000
QUEUES = 20
CERTIFIED_QUEUES = 5  # the first five queues each require a certification
SHIFTS = 300
EXCEPTIONS = 400
OVERRIDES = 50
DAYS = 7
RUNS = 5
START = datetime(2026, 12, 2, 17, 3, tzinfo=UTC)


def build_roster(rng: random.Random) -> Roster:
    queues = [f"q{i:02d}" for i in range(QUEUES)]
    requires = {q: frozenset({f"cert-{q}"}) for q in queues[:CERTIFIED_QUEUES]}
    responders = {}
    for i in range(RESPONDERS):
        rid = f"r-{i:04d}"
        held = {
            f"cert-{q}": START + timedelta(hours=rng.randint(-24, 24 * 30))
            for q in queues[:CERTIFIED_QUEUES]
            if rng.random() < 0.6
        }
        responders[rid] = Responder(
            rid,
            f"Responder {i}",
            f"PJSIP/{10000 + i}",
            f"PJSIP/{10000 + i}",
            MappingProxyType({q: rng.randint(0, 3) for q in queues}),
            MappingProxyType(held),
        )
    ids = list(responders)
    shifts = random_shifts(rng, ids, SHIFTS, (4, 6, 8, 10, 12), crew=40)

    def window() -> tuple[datetime, datetime]:
        begin = START + timedelta(minutes=rng.randrange(0, DAYS * 24 * 60, 5))
        return begin, begin + timedelta(minutes=rng.randrange(30, 48 * 60, 5))

    exceptions = []
    for _ in range(EXCEPTIONS):
        since, until = window()
        kind = rng.choice(list(ExceptionKind))
        exceptions.append(RosterException(rng.choice(ids), since, until, kind))
    overrides = []
    for oid in range(OVERRIDES):
        since, until = window()
        scope = rng.choice([None, frozenset(rng.sample(queues, 2))])
        overrides.append(
            Override(oid, rng.choice(ids), since, until, rng.choice(list(ExceptionKind)), scope)
        )
    return Roster(
        ZoneInfo("America/New_York"),
        # Every fourth queue asks for more than the roster gives at its quieter hours: gaps.
        MappingProxyType(
            {
                q: QueuePolicy(q, 2 if i % 4 else 700, requires=requires.get(q, frozenset()))
                for i, q in enumerate(queues)
            }
        ),
        MappingProxyType(responders),
        tuple(shifts),
        tuple(exceptions),
        tuple(overrides),
    )


def build_forecast(rng: random.Random, roster: Roster) -> Forecast:
    # Calls per slot as the trailing weeks give them: offered / weeks, eighths for 8 weeks.
    arrivals = {
        q: {(d, s): rng.randint(0, 40) / 8 for d in range(7) for s in range(SLOTS_PER_DAY)}
        for q in roster.queues
    }
    return Forecast(arrivals, {q: 660.0 for q in roster.queues}, 0.25)


def main() -> None:
    rng = random.Random(20261130)
    roster = build_roster(rng)
    forecast = build_forecast(rng, roster)
    targets = {q: Target(20.0, 0.9) for q in roster.queues}
    slots = DAYS * SLOTS_PER_DAY
    memberships = sum(len(r.queues) for r in roster.responders.values())
    print(
        f"{RESPONDERS} responders, {QUEUES} queues ({memberships} memberships), {SHIFTS} shifts,"
        f" {EXCEPTIONS} exceptions, {OVERRIDES} overrides; {DAYS} days = {slots} slots"
    )

    # Wall time and this process's CPU time: on a shared machine the first includes waiting for
    # a core; the second is what the look-ahead costs on a core of its own (it is one thread).
    walls, cpus = [], []
    for _ in range(RUNS):
        wall, cpu = time.perf_counter(), time.process_time()
        result = coverage(roster, START, slots, forecast, targets)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    took, took_cpu = statistics.median(walls), statistics.median(cpus)
    print(
        f"coverage look-ahead        median {took * 1000:8.1f} ms wall, {took_cpu * 1000:8.1f} ms"
        f" CPU   ({len(result.gaps)} gaps)"
    )

    walls, cpus = [], []
    for slot in range(RUNS * 4):
        wall, cpu = time.perf_counter(), time.process_time()
        desired_at(roster, START + timedelta(minutes=15 * slot))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    naive, naive_cpu = statistics.median(walls) * slots, statistics.median(cpus) * slots
    print(
        f"baseline: desired_at x {slots} median {naive * 1000:8.1f} ms wall,"
        f" {naive_cpu * 1000:8.1f} ms CPU"
    )
    print(
        f"ratio baseline / coverage: {naive / took:.1f}x wall, {naive_cpu / took_cpu:.1f}x CPU;"
        f" under 1 s: {took < 1.0} wall, {took_cpu < 1.0} CPU"
    )


if __name__ == "__main__":
    main()
