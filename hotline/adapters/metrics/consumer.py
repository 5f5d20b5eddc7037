"""The daemon's event consumer: how long it spends on an event (sampled) and the exceptions each
of its consumers raised. ConsumerMetrics is what `hotline.daemon.Daemon.consume` reports to."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram

# Who the consumer hands an event to (docs/metrics.md, "Event counting"): the live queue model,
# the membership keeper, the call ledger, the daemon's own record of Asterisk's reloads, and the
# supervisor service's record of pauses (for their limits), the responders' phone book, and the
# wellbeing guardrails.
EventConsumer = Literal[
    "queues", "membership", "ledger", "asterisk", "pauses", "phones", "wellbeing"
]
# One event in this many is timed: two clock reads and a histogram observation per event would
# be a measurable share of the consumer's cost at full speed.
SAMPLE_EVERY = 64


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.processing_seconds = Histogram(
            "hotline_event_processing_seconds",
            f"Time the event consumer spends on one AMI event, every consumer included "
            f"(one event in {SAMPLE_EVERY} is timed)",
            buckets=(
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                0.01, 0.025, 0.1,
            ),
            registry=r,
        )  # fmt: skip
        self.handler_errors = Counter(
            "hotline_event_handler_errors",
            "Exceptions raised by a consumer of AMI events; the event still reached the others",
            ["consumer"],
            registry=r,
        )
        self._handler_errors = {c: self.handler_errors.labels(c) for c in get_args(EventConsumer)}

    def handler_failed(self, consumer: EventConsumer) -> None:
        self._handler_errors[consumer].inc()
