"""Queue membership against the roster: reconcile rounds, what woke them and their duration,
whether Asterisk's state is in sync, and per queue the members scheduled, missing or unexpected,
leaving after their call, and not ours. MembershipMetrics is the observer
`hotline.app.membership.MembershipKeeper` reports to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hotline.core.reconcile import RoundResult, Trigger

DriftKind = Literal["missing", "unexpected"]


class MembershipMetrics:
    def __init__(self, registry: CollectorRegistry, queues: Iterable[str]) -> None:
        r = registry
        self.queues = tuple(queues)
        self.synced = Gauge(
            "hotline_state_synced",
            "1 when the last reconcile round read Asterisk's state and applied every action",
            registry=r,
        )
        self.rounds = Counter(
            "hotline_reconcile_rounds", "Reconcile rounds by result", ["result"], registry=r
        )
        for result in get_args(RoundResult):
            self.rounds.labels(result)
        self.triggers = Counter(
            "hotline_reconcile_triggers",
            "What woke reconcile rounds: a round woken by several counts once under each",
            ["trigger"],
            registry=r,
        )
        self._triggers = {t: self.triggers.labels(t) for t in get_args(Trigger)}
        self.round_seconds = Histogram(
            "hotline_reconcile_round_duration_seconds",
            "Time for one reconcile round: read state, plan, apply",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.scheduled = Gauge(
            "hotline_shift_members_scheduled", "Members the roster wants now", ["queue"], registry=r
        )
        self.drift = Gauge(
            "hotline_queue_membership_drift",
            "Desired vs actual after the last reconcile round's read, before its actions",
            ["queue", "kind"],
            registry=r,
        )
        self.leaving = Gauge(
            "hotline_queue_members_leaving",
            "Members whose shift ended but who stay until their call ends",
            ["queue"],
            registry=r,
        )
        self.foreign = Gauge(
            "hotline_queue_members_foreign",
            "Members hotline does not own (static, or added by someone else)",
            ["queue"],
            registry=r,
        )
        for q in self.queues:
            for gauge in (self.scheduled, self.leaving, self.foreign):
                gauge.labels(q)
            for kind in get_args(DriftKind):
                self.drift.labels(q, kind)

    def round_woken(self, triggers: set[Trigger]) -> None:
        for trigger in triggers:
            self._triggers[trigger].inc()

    def round_done(self, result: RoundResult, seconds: float, synced: bool) -> None:
        self.rounds.labels(result).inc()
        if result != "skipped":
            self.round_seconds.observe(seconds)
        self.synced.set(1 if synced else 0)

    def membership(
        self,
        *,
        scheduled: Mapping[str, int],
        missing: Mapping[str, int],
        unexpected: Mapping[str, int],
        leaving: Mapping[str, int],
        foreign: Mapping[str, int],
    ) -> None:
        for q in self.queues:
            self.scheduled.labels(q).set(scheduled.get(q, 0))
            self.drift.labels(q, "missing").set(missing.get(q, 0))
            self.drift.labels(q, "unexpected").set(unexpected.get(q, 0))
            self.leaving.labels(q).set(leaving.get(q, 0))
            self.foreign.labels(q).set(foreign.get(q, 0))
