"""Pause limits (docs/supervision.md, "Pause limits"): the pauses past their reason's limit now,
computed at scrape time, and the pauses hotline lifted at their limit. Labels are queues and
configured pause reasons only: a pause reason set by hand in Asterisk has no limit, so it never
appears here."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotline.core.pauses import OverLimit

OverLimitSource = Callable[[], Iterable[OverLimit]]


class PauseMetrics(Collector):
    """`hotline_pauses_over_limit{queue,reason}` at scrape time (every queue and limited reason
    present, 0 when none, so an alert sees the series), and `hotline_pauses_lifted_total`.
    The pauses come from `watch`, given once the supervisor service exists."""

    def __init__(
        self,
        registry: CollectorRegistry,
        queues: Iterable[str],
        limited: Mapping[str, bool],  # each reason with a limit -> lifted at it
    ) -> None:
        self._queues = tuple(queues)
        self._limited = tuple(limited)
        self._source: OverLimitSource = tuple
        self._lifted = Counter(
            "hotline_pauses_lifted",
            "Pauses hotline ended at their reason's limit (reasons with lift_at_limit)",
            ["reason"],
            registry=registry,
        )
        for reason, lift in limited.items():
            if lift:
                self._lifted.labels(reason)
        registry.register(self)

    def watch(self, source: OverLimitSource) -> None:
        self._source = source

    def lifted(self, reason: str) -> None:
        self._lifted.labels(reason).inc()

    def collect(self) -> Iterator[Metric]:
        counts: Tally[tuple[str, str]] = Tally((over.queue, over.reason) for over in self._source())
        family = GaugeMetricFamily(
            "hotline_pauses_over_limit",
            "Members paused longer than their pause reason's limit now",
            labels=["queue", "reason"],
        )
        for queue in self._queues:
            for reason in self._limited:
                family.add_metric([queue, reason], counts.get((queue, reason), 0))
        yield family
