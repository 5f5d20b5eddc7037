"""All metric definitions, on an injected CollectorRegistry (names: docs metrics-kpis-ops.md §2).

Labels come only from small fixed sets (queue, state, kind, result, action, reason, trigger).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.registry import Collector

from hotline import __version__

# `_created` series double the series count for nothing Prometheus users need here.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Actions we send; anything else is reported as "other" so the label set stays bounded.
_ACTIONS = ("Ping", "QueueAdd", "QueueRemove", "QueuePenalty", "QueuePause", "QueueStatus")
_ROUND_RESULTS = ("ok", "failed", "skipped")
# Events counted by name; any other name is "other" (docs metrics-kpis-ops.md §2.4).
_EVENTS = (
    "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled",
    "AgentRingNoAnswer", "AgentConnect", "AgentComplete", "AgentDump", "DialEnd", "Hangup",
    "UserEvent", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause",
    "QueueMemberPenalty", "QueueMemberStatus", "QueueMemberRinginuse", "FullyBooted", "Reload",
    "Shutdown",
)  # fmt: skip
_TABLES = ("calls", "member_sessions", "pauses")


class Metrics:
    """The daemon's metrics. Its methods are the observers the AMI link and the keeper report to."""

    def __init__(
        self, registry: CollectorRegistry, queues: Iterable[str], process: bool = True
    ) -> None:
        self.registry = registry
        self.queues = tuple(queues)
        if process:
            # The default collectors are global objects; give this registry its own references.
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(_Forward(collector))
        r = registry
        Info("hotline_build", "hotline build", registry=r).info({"version": __version__})
        self.ami_up = Gauge(
            "hotline_ami_up", "1 when logged in to AMI and Asterisk is fully booted", registry=r
        )
        self.state_synced = Gauge(
            "hotline_state_synced",
            "1 when the last reconcile round read Asterisk's state and applied every action",
            registry=r,
        )
        self.connect_attempts = Counter(
            "hotline_ami_connect_attempts",
            "AMI connection attempts by result",
            ["result"],
            registry=r,
        )
        for result in ("success", "refused", "auth_failed", "timeout", "error"):
            self.connect_attempts.labels(result)
        self.disconnects = Counter(
            "hotline_ami_disconnects", "AMI sessions lost, by reason", ["reason"], registry=r
        )
        for reason in ("eof", "ping_timeout", "shutdown_event", "protocol_error", "local"):
            self.disconnects.labels(reason)
        self.last_message = Gauge(
            "hotline_ami_last_message_timestamp_seconds",
            "Time of the last AMI response or event received",
            registry=r,
        )
        self.malformed = Counter(
            "hotline_ami_malformed_messages",
            "AMI messages that could not be parsed or matched, dropped",
            registry=r,
        )
        self.inbox_overflows = Counter(
            "hotline_event_queue_overflows",
            "AMI events lost because the event queue was full (each forces a resync)",
            registry=r,
        )
        self.actions = Counter(
            "hotline_ami_actions",
            "AMI actions by action and result",
            ["action", "result"],
            registry=r,
        )
        self.action_seconds = Histogram(
            "hotline_ami_action_duration_seconds",
            "AMI action round-trip time",
            ["action"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.rounds = Counter(
            "hotline_reconcile_rounds", "Reconcile rounds by result", ["result"], registry=r
        )
        for result in _ROUND_RESULTS:
            self.rounds.labels(result)
        self.round_seconds = Histogram(
            "hotline_reconcile_round_duration_seconds",
            "Time for one reconcile round: read state, plan, apply",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.reconcile_actions = Counter(
            "hotline_reconcile_actions",
            "Membership actions applied by reconcile rounds, by kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.scheduled = Gauge(
            "hotline_shift_members_scheduled", "Members the roster wants now", ["queue"], registry=r
        )
        self.logged_in = Gauge(
            "hotline_queue_members_logged_in",
            "Members present in the queue (any kind, any state), as last read",
            ["queue"],
            registry=r,
        )
        self.drift = Gauge(
            "hotline_queue_membership_drift",
            "Desired vs actual after the last reconcile round's read, before its actions",
            ["queue", "kind"],
            registry=r,
        )
        self.deferred = Gauge(
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
        self.events = Counter(
            "hotline_events_received", "AMI events received, by name", ["event"], registry=r
        )
        for name in (*_EVENTS, "other"):
            self.events.labels(name)
        self.dropped_total = Counter(
            "hotline_events_dropped",
            "Events or records lost, by reason; must stay 0",
            ["reason"],
            registry=r,
        )
        for reason in ("spool_full", "invalid", "handler_error", "queue_full"):
            self.dropped_total.labels(reason)
        self.calls_open = Gauge(
            "hotline_calls_open", "Call records not yet closed (waiting or talking)", registry=r
        )
        self.db_up_gauge = Gauge(
            "hotline_db_up", "1 when the last write to Postgres succeeded", registry=r
        )
        self.db_write_seconds = Histogram(
            "hotline_db_write_duration_seconds",
            "Batch upsert latency",
            ["op"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.db_errors = Counter(
            "hotline_db_write_errors", "Failed writes by kind", ["kind"], registry=r
        )
        for kind in ("connection", "timeout", "constraint", "other"):
            self.db_errors.labels(kind)
        self.db_rows = Counter("hotline_db_rows_written", "Rows upserted", ["table"], registry=r)
        self.db_duplicates = Counter(
            "hotline_db_duplicates",
            "Records not applied because the stored row was as new or newer (replays)",
            ["table"],
            registry=r,
        )
        for table in _TABLES:
            self.db_rows.labels(table)
            self.db_duplicates.labels(table)
        self.backlog_events = Gauge(
            "hotline_db_backlog_events", "Records not yet in Postgres", ["location"], registry=r
        )
        self.backlog_age = Gauge(
            "hotline_db_backlog_age_seconds", "Age of the oldest unwritten record", registry=r
        )
        self.spool_bytes = Gauge("hotline_spool_bytes", "On-disk spool size", registry=r)
        for q in self.queues:
            for gauge in (self.scheduled, self.logged_in, self.deferred, self.foreign):
                gauge.labels(q)
            for kind in ("missing", "unexpected"):
                self.drift.labels(q, kind)

    # -- AMI link observer -------------------------------------------------------------------

    def connect_attempt(self, result: str) -> None:
        self.connect_attempts.labels(result).inc()

    def disconnected(self, reason: str) -> None:
        self.disconnects.labels(reason).inc()

    def link_up(self, up: bool) -> None:
        self.ami_up.set(1 if up else 0)
        if not up:
            self.state_synced.set(0)

    def action_done(self, action: str, result: object, seconds: float) -> None:
        name = action if action in _ACTIONS else "other"
        self.actions.labels(name, getattr(result, "value", str(result))).inc()
        self.action_seconds.labels(name).observe(seconds)

    def message_received(self) -> None:
        self.last_message.set_to_current_time()

    def malformed_message(self) -> None:
        self.malformed.inc()

    def inbox_overflow(self) -> None:
        self.inbox_overflows.inc()

    # -- recording and store observer ---------------------------------------------------------

    def event_received(self, name: str) -> None:
        self.events.labels(name if name in _EVENTS else "other").inc()

    def dropped_events(self, reason: str, n: int = 1) -> None:
        self.dropped_total.labels(reason).inc(n)

    def db_up(self, up: bool) -> None:
        self.db_up_gauge.set(1 if up else 0)

    def write_done(self, op: str, rows: int, seconds: float) -> None:
        self.db_write_seconds.labels(op).observe(seconds)
        if op in _TABLES:
            self.db_rows.labels(op).inc(rows)

    def write_error(self, kind: str) -> None:
        self.db_errors.labels(kind).inc()

    def duplicates(self, table: str, n: int) -> None:
        if table in _TABLES:
            self.db_duplicates.labels(table).inc(n)

    def backlog(self, memory: int, spool: int, oldest_age_s: float, spool_bytes: int) -> None:
        self.backlog_events.labels("memory").set(memory)
        self.backlog_events.labels("spool").set(spool)
        self.backlog_age.set(oldest_age_s)
        self.spool_bytes.set(spool_bytes)

    def dropped(self, reason: str, n: int) -> None:
        self.dropped_events(reason, n)

    # -- membership keeper observer ----------------------------------------------------------

    def round_done(self, result: str, seconds: float, synced: bool) -> None:
        self.rounds.labels(result).inc()
        if result != "skipped":
            self.round_seconds.observe(seconds)
        self.state_synced.set(1 if synced else 0)

    def action_applied(self, kind: str, ok: bool) -> None:
        self.reconcile_actions.labels(kind, "ok" if ok else "failed").inc()

    def membership(
        self,
        *,
        scheduled: Mapping[str, int],
        present: Mapping[str, int],
        missing: Mapping[str, int],
        unexpected: Mapping[str, int],
        leaving: Mapping[str, int],
        foreign: Mapping[str, int],
    ) -> None:
        for q in self.queues:
            self.scheduled.labels(q).set(scheduled.get(q, 0))
            self.logged_in.labels(q).set(present.get(q, 0))
            self.drift.labels(q, "missing").set(missing.get(q, 0))
            self.drift.labels(q, "unexpected").set(unexpected.get(q, 0))
            self.deferred.labels(q).set(leaving.get(q, 0))
            self.foreign.labels(q).set(foreign.get(q, 0))


class _Forward(Collector):
    """Registers one of prometheus_client's global collectors in a private registry."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self):  # type: ignore[no-untyped-def]
        return self.inner.collect()
