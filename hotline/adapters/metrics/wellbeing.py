"""The wellbeing guardrails: pauses hotline gave and why, caps reached, responders over a cap
that only alerts, hard calls the responders flagged themselves, and what could not be done.
WellbeingMetrics is the observer `hotline.app.wellbeing.WellbeingKeeper` (and its audit trail)
reports to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from hotline.core.wellbeing import LIMITS, TRIGGERS, Limit, PauseAction, Trigger


class WellbeingMetrics:
    def __init__(self, registry: CollectorRegistry, queues: Iterable[str]) -> None:
        r = registry
        self.queues = tuple(queues)
        self.pauses = Counter(
            "hotline_wellbeing_pauses",
            "Pauses hotline gave a responder: after a long call (long_call) or at a cap",
            ["queue", "trigger"],
            registry=r,
        )
        self.limits = Counter(
            "hotline_wellbeing_limits_reached",
            "Times a responder reached a cap: calls in a row, or hours, without a break",
            ["queue", "limit"],
            registry=r,
        )
        self.over = Gauge(
            "hotline_wellbeing_over_limit",
            "Responders who reached a cap and have had no break since",
            ["queue", "limit"],
            registry=r,
        )
        self.flagged = Counter(
            "hotline_wellbeing_hard_calls_flagged",
            "Pauses responders took themselves with the hard-call reason (the phones' code)",
            ["queue"],
            registry=r,
        )
        self.failures = Counter(
            "hotline_wellbeing_failures",
            "Wellbeing pauses or unpauses Asterisk refused, and audit entries not stored",
            ["action"],
            registry=r,
        )
        for queue in self.queues:
            self.flagged.labels(queue)
            for trigger in TRIGGERS:
                self.pauses.labels(queue, trigger)
            for limit in LIMITS:
                self.limits.labels(queue, limit)
                self.over.labels(queue, limit).set(0)
        for action in ("pause", "unpause", "audit"):
            self.failures.labels(action)

    def paused(self, queue: str, trigger: Trigger) -> None:
        self.pauses.labels(queue, trigger).inc()

    def limit_reached(self, queue: str, limit: Limit) -> None:
        self.limits.labels(queue, limit).inc()

    def hard_call_flagged(self, queue: str) -> None:
        self.flagged.labels(queue).inc()

    def over_limit(self, counts: Mapping[tuple[str, Limit], int]) -> None:
        for queue in self.queues:
            for limit in LIMITS:
                self.over.labels(queue, limit).set(counts.get((queue, limit), 0))

    def action_failed(self, action: PauseAction) -> None:
        self.failures.labels(action).inc()

    def audit_failed(self) -> None:
        self.failures.labels("audit").inc()
