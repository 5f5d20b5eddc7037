"""What the call ledger sees: AMI events by name, how far they lag behind Asterisk's clock, call
records not yet closed, caller events that name no call, and caller events it had to drop.
LedgerMetrics is the observer `hotline.app.ledger.Ledger` reports to; the call flow itself is
counted in `flow`."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hotline.core.ami import EventName


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry, dropped: Counter) -> None:
        r = registry
        self.events = Counter(
            "hotline_events_received", "AMI events received, by name", ["event"], registry=r
        )
        # Counted on every event: the labelled children are looked up once, here. Any other
        # name is "other" (docs/metrics.md, "Event counting").
        self._event_counters = {name: self.events.labels(name) for name in get_args(EventName)}
        self._other_events = self.events.labels("other")
        self._dropped = dropped
        self.unattributed_events = Counter(
            "hotline_events_unattributed",
            "Caller events that name no call (an AgentComplete published after both channels "
            "were gone), by name; the call's record closes from its other events",
            ["event"],
            registry=r,
        )
        self.calls_open = Gauge(
            "hotline_calls_open", "Call records not yet closed (waiting or talking)", registry=r
        )
        self.event_lag_seconds = Histogram(
            "hotline_event_lag_seconds",
            "Receipt time minus Asterisk's event Timestamp",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )

    def event_received(self, name: str) -> None:
        (self._event_counters.get(name) or self._other_events).inc()

    def event_lag(self, seconds: float) -> None:
        self.event_lag_seconds.observe(max(0.0, seconds))

    def unattributed(self, name: str) -> None:
        self.unattributed_events.labels(name).inc()

    def dropped(self, reason: str, n: int) -> None:
        self._dropped.labels(reason).inc(n)
