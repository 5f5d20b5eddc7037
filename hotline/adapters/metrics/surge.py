"""The surge pool: per queue whether its standby responders are called in now, how often a surge
started and ended, and audit entries of those decisions that could not be stored. SurgeMetrics is
the observer `hotline.app.surge.SurgeWatch` (and its audit trail) reports to."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge


class SurgeMetrics:
    def __init__(self, registry: CollectorRegistry, queues: Iterable[str]) -> None:
        r = registry
        self.active = Gauge(
            "hotline_surge_active",
            "1 while the queue surges: its standby responders are called in",
            ["queue"],
            registry=r,
        )
        self.activations = Counter(
            "hotline_surge_activations",
            "Surges started: the queue's load reached its surge rule",
            ["queue"],
            registry=r,
        )
        self.releases = Counter(
            "hotline_surge_releases",
            "Surges ended: the queue's load stayed below the rule's release figures",
            ["queue"],
            registry=r,
        )
        self.audit_failures = Counter(
            "hotline_surge_audit_failures",
            "Surge decisions whose audit entry could not be stored (they are in the log)",
            registry=r,
        )
        self._on: dict[str, bool] = {}
        for queue in queues:
            self.active.labels(queue).set(0)
            self.activations.labels(queue)
            self.releases.labels(queue)

    def surge_changed(self, queue: str, active: bool) -> None:
        """The queue's surge is now `active`; a change from what it was is counted."""
        if active != self._on.get(queue, False):
            (self.activations if active else self.releases).labels(queue).inc()
        self._on[queue] = active
        self.active.labels(queue).set(1 if active else 0)

    def audit_failed(self) -> None:
        self.audit_failures.inc()
