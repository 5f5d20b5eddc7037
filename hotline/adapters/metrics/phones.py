"""Responders' phones at scrape time, from the phone book that AMI events keep current: whether
each roster responder's phone can be reached, how many on-shift phones are in each state, and the
calls phones refused (docs/phones.md, "Reachability"). Memory only, no awaits."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotline.core.phones import PhoneBook, Refusal


class PhoneCollector(Collector):
    """Gauges computed at scrape time from the phone book."""

    def __init__(self, book: PhoneBook) -> None:
        self.book = book

    def collect(self) -> Iterator[Metric]:
        reachable = GaugeMetricFamily(
            "hotline_phone_reachable",
            "1 if the responder's phone (a PJSIP endpoint in the roster) can be reached and took "
            "the last call it was offered or was offered none; 0 if it cannot be reached or "
            "refused that call; absent until Asterisk has said",
            labels=["responder"],
        )
        for responder, state in sorted(self.book.phones().items()):
            if state != "unknown":
                reachable.add_metric([responder], 1 if state == "reachable" else 0)
        on_shift = GaugeMetricFamily(
            "hotline_phones_on_shift",
            "Phones of the members of the configured queues, by state (exclusive): unreachable, "
            "refusing (refused the last call offered), reachable, unknown",
            labels=["state"],
        )
        for state, count in self.book.on_shift().items():
            on_shift.add_metric([state], count)
        yield from (reachable, on_shift)


class PhoneMetrics:
    """The phone collector and the count of calls phones refused."""

    def __init__(self, registry: CollectorRegistry, book: PhoneBook) -> None:
        registry.register(PhoneCollector(book))
        self.refused = Counter(
            "hotline_phone_refused_calls_total",
            "Calls a responder's phone refused when offered, for its media (488: no SRTP or no "
            "common codec); the queue rings it again while the caller waits",
            ["responder"],
            registry=registry,
        )

    def refusal(self, refusal: Refusal) -> None:
        self.refused.labels(refusal.responder).inc()
