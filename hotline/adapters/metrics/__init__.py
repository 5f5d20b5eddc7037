"""The daemon's metrics, on one injected CollectorRegistry (docs/metrics.md, "Metric catalogue").

One module per concern, each observer implementing the one protocol its component reports to:
`link` (the AMI link), `membership` (the membership keeper), `ledger` (the call ledger), `store`
(the Postgres store), `dropped` (records lost, shared by the last two), `runtime` (the daemon
itself), `consumer` (the daemon's event consumer), `http` (the HTTP listener), `pauses` (pause
limits, built by the daemon beside the supervisor service), `surge` and `wellbeing` (the
surge pool and the wellbeing guardrails, built by the daemon), `coverage` (the coverage
look-ahead and the certifications about to lapse, built by the daemon); `flow` counts and
renders the call flow, `queues` computes queue state and `partner` the partner trunk's
reachability at scrape time. Labels come only from small fixed sets: never a caller, a call
or free text.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

from hotline.adapters.metrics.consumer import ConsumerMetrics
from hotline.adapters.metrics.dropped import dropped_counter
from hotline.adapters.metrics.flow import CallFlow
from hotline.adapters.metrics.http import HttpMetrics
from hotline.adapters.metrics.ledger import LedgerMetrics
from hotline.adapters.metrics.link import LinkMetrics
from hotline.adapters.metrics.membership import MembershipMetrics
from hotline.adapters.metrics.pauses import PauseMetrics
from hotline.adapters.metrics.queues import QueueCollector
from hotline.adapters.metrics.runtime import RuntimeMetrics
from hotline.adapters.metrics.store import StoreMetrics
from hotline.adapters.metrics.surge import SurgeMetrics
from hotline.adapters.metrics.wellbeing import WellbeingMetrics

__all__ = [
    "CallFlow",
    "ConsumerMetrics",
    "HttpMetrics",
    "LedgerMetrics",
    "LinkMetrics",
    "MembershipMetrics",
    "Metrics",
    "PauseMetrics",
    "QueueCollector",
    "RuntimeMetrics",
    "StoreMetrics",
    "SurgeMetrics",
    "WellbeingMetrics",
    "render_metrics",
]

# `_created` series double the series count for nothing Prometheus users need here.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """Every observer, built on one registry: hand each component its own."""

    def __init__(self, registry: CollectorRegistry, queues: Iterable[str]) -> None:
        self.registry = registry
        self.runtime = RuntimeMetrics(registry)
        self.consumer = ConsumerMetrics(registry)
        self.membership = MembershipMetrics(registry, queues)
        self.link = LinkMetrics(registry, synced=self.membership.synced)
        dropped = dropped_counter(registry)
        self.ledger = LedgerMetrics(registry, dropped)
        self.store = StoreMetrics(registry, dropped)
        self.http = HttpMetrics(registry)


def render_metrics(registry: CollectorRegistry, flow: CallFlow) -> bytes:
    """The whole exposition in the text format: the registry's families, then the call flow."""
    return generate_latest(registry) + flow.render().encode()
