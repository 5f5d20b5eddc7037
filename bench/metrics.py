"""Benchmark: the daemon's time to render /metrics with 50 queues and 2,000 members.

Builds the daemon's real registry (Metrics, CallFlow, QueueCollector over a QueueBoard), fills
the board from a QueueStatus-shaped snapshot with waiting callers, records 20,000 finished calls,
then times the exposition render on the event loop's thread, as aiohttp's handler does it.
Run: `python -m bench.metrics`. Target: under 20 ms per scrape.

Baseline, in the same run: prometheus_client's own `generate_latest` over a registry of stock
labelled gauges holding as many samples as the daemon's exposition, the library's bare rate for
that much output; the ratio is the daemon's render time over it."""

from __future__ import annotations

import random
import statistics
import time
import uuid
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from hotline.adapters.metrics import CallFlow, Metrics, QueueCollector, render_metrics
from hotline.config import QueueService
from hotline.core.queuestate import QueueBoard
from hotline.core.records import CallRecord, Outcome

QUEUES = 50
MEMBERS = 2_000
CALLS = 20_000
RUNS = 300


def main() -> None:
    rng = random.Random(7)
    now = time.time()
    queues = [f"queue-{i:02d}" for i in range(QUEUES)]
    service = {q: QueueService(20.0, 0.9, 30.0) for q in queues}
    registry = CollectorRegistry()
    Metrics(registry, queues)
    flow = CallFlow(registry, service)
    board = QueueBoard({q: 30.0 for q in queues})
    registry.register(QueueCollector(board, flow, service, time.time))

    items = [{"Event": "QueueParams", "Queue": q, "Strategy": "leastrecent"} for q in queues]
    items += [
        {
            "Event": "QueueMember", "Queue": queues[i % QUEUES], "Location": f"PJSIP/{1000 + i}",
            "Name": f"r-{i}", "Status": rng.choice("125666"), "Paused": rng.choice("0001"),
            "InCall": rng.choice("001"), "LastCall": str(int(now) - rng.randrange(0, 120)),
        }
        for i in range(MEMBERS)
    ]  # fmt: skip
    items += [
        {"Event": "QueueEntry", "Queue": rng.choice(queues), "Uniqueid": f"{i}.1",
         "Wait": str(rng.randrange(0, 90))}
        for i in range(200)
    ]  # fmt: skip
    board.resync(items, now)
    outcomes = [Outcome.ANSWERED] * 7 + [Outcome.ABANDONED, Outcome.TIMEOUT, Outcome.JOINEMPTY]
    for _ in range(CALLS):
        outcome = rng.choice(outcomes)
        flow.call(
            CallRecord(
                uuid.uuid4().hex, rng.choice(queues), 1, datetime.now(UTC), 1, "988", None, None,
                True, (), None, "r-1", rng.uniform(0, 120), rng.uniform(60, 3000), None, outcome,
                False, 4, 1,
            ),
            now - rng.uniform(0, 1700),
        )  # fmt: skip

    def finished(queue: str) -> CallRecord:
        return CallRecord(
            uuid.uuid4().hex, queue, 1, datetime.now(UTC), 1, "988", None, None, True, (), None,
            "r-1", 3.0, 300.0, None, Outcome.ANSWERED, False, 4, 1,
        )  # fmt: skip

    text = render_metrics(registry, flow)
    samples_out = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    print(
        f"/metrics with {QUEUES} queues, {MEMBERS} members, {CALLS} calls "
        f"({len(text) / 1024:.0f} KiB, {samples_out} samples)"
    )
    baseline = _median_ms(_bare_registry(samples_out))
    print(
        f"  baseline: generate_latest of {samples_out} stock gauge samples"
        f"{'':<11} median {baseline:5.2f} ms"
    )
    for label, churn in (("no call ended since the last scrape", False),
                         ("a call ended in every queue since the last scrape", True)):  # fmt: skip
        samples = []
        for _ in range(RUNS):
            if churn:
                for q in queues:
                    flow.call(finished(q), time.time())
            t0 = time.perf_counter()
            render_metrics(registry, flow)
            samples.append((time.perf_counter() - t0) * 1000)
        samples.sort()
        median = statistics.median(samples)
        print(
            f"  {label:<52} median {median:5.2f} ms, "
            f"p99 {samples[int(RUNS * 0.99) - 1]:5.2f} ms over {RUNS} scrapes, "
            f"{median / baseline:.2f} x the baseline"
        )


def _bare_registry(samples: int) -> CollectorRegistry:
    """Stock gauges, 50 families of two labels, holding `samples` samples between them."""
    registry = CollectorRegistry()
    families = [
        Gauge(f"bench_family_{i:02d}", "A stock gauge", ["queue", "state"], registry=registry)
        for i in range(QUEUES)
    ]
    for n in range(samples):
        families[n % QUEUES].labels(f"queue-{n % QUEUES:02d}", f"s{n}").set(n)
    return registry


def _median_ms(registry: CollectorRegistry) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        generate_latest(registry)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    main()
