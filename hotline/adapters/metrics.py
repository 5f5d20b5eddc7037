"""All metric definitions, on an injected CollectorRegistry (names: docs metrics-kpis-ops.md §2).

Labels come only from small fixed sets (queue, state, kind, result, action, reason, trigger).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

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
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotline import __version__
from hotline.config import QueueService
from hotline.core import staffing
from hotline.core.calls import CallRecord, Outcome
from hotline.core.queuestate import STATES, QueueBoard

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

    def __init__(self, registry: CollectorRegistry, queues: Iterable[str]) -> None:
        self.registry = registry
        self.queues = tuple(queues)
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
        self._last_message = 0.0
        self.last_message.set_function(lambda: self._last_message)
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
        self.scheduled = Gauge(
            "hotline_shift_members_scheduled", "Members the roster wants now", ["queue"], registry=r
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
        # Counted on every event: the labelled children are looked up once, here.
        self._event_counters = {name: self.events.labels(name) for name in (*_EVENTS, "other")}
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
        self.event_queue_depth = Gauge(
            "hotline_event_queue_depth",
            "AMI events waiting between the AMI callback and the consumer",
            registry=r,
        )
        self.loop_lag = Histogram(
            "hotline_event_loop_lag_seconds",
            "Overshoot of a periodic 0.5 s sleep: a blocked loop risks AMI writetimeout drops",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.asterisk_start = Gauge(
            "hotline_asterisk_start_timestamp_seconds",
            "When Asterisk last started, from FullyBooted's Uptime (kept across reconnects)",
            registry=r,
        )
        self.event_lag_seconds = Histogram(
            "hotline_event_lag_seconds",
            "Receipt time minus Asterisk's event Timestamp",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        for q in self.queues:
            for gauge in (self.scheduled, self.deferred, self.foreign):
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
        # Every AMI message: a plain store, read by the gauge at scrape time.
        self._last_message = time.time()

    def malformed_message(self) -> None:
        self.malformed.inc()

    def inbox_overflow(self) -> None:
        self.inbox_overflows.inc()

    # -- recording and store observer ---------------------------------------------------------

    def event_received(self, name: str) -> None:
        counters = self._event_counters
        (counters.get(name) or counters["other"]).inc()

    def event_lag(self, seconds: float) -> None:
        self.event_lag_seconds.observe(max(0.0, seconds))

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
        self.dropped_total.labels(reason).inc(n)

    # -- membership keeper observer ----------------------------------------------------------

    def round_done(self, result: str, seconds: float, synced: bool) -> None:
        self.rounds.labels(result).inc()
        if result != "skipped":
            self.round_seconds.observe(seconds)
        self.state_synced.set(1 if synced else 0)

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
            self.deferred.labels(q).set(leaving.get(q, 0))
            self.foreign.labels(q).set(foreign.get(q, 0))


class _Forward(Collector):
    """Registers one of prometheus_client's global collectors in a private registry."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self):  # type: ignore[no-untyped-def]
        return self.inner.collect()


# Wait buckets (s) of the catalogue; every configured service-level threshold is added, so the
# SL ratios are exact at their edges (docs metrics-kpis-ops.md §1, §2.2).
WAIT_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
TALK_BUCKETS = (60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200)
EXIT_REASONS = (
    "timeout",
    "upstream_withdrawn",
    "empty",
    "refused",
    "withdraw",
    "keypress",
    "other",
)
_EXIT_OF = {
    Outcome.TIMEOUT: "timeout",
    Outcome.ROLLOVER: "upstream_withdrawn",
    Outcome.LEAVEEMPTY: "empty",
    Outcome.JOINEMPTY: "refused",
    Outcome.UNKNOWN: "other",
}
_STAFFING_WINDOW_S = 1800.0
_STAFFING_EVERY_S = 15.0
_FORGET_AFTER_S = 6 * 3600.0


@dataclass(slots=True)
class _Histogram:
    buckets: list[int]  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0
    count: int = 0

    def observe(self, edges: tuple[float, ...], value: float) -> None:
        self.buckets[bisect.bisect_left(edges, value)] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class _QueueFlow:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    ring_noanswer: int = 0
    exited: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXIT_REASONS, 0))
    wait: dict[str, _Histogram] = field(default_factory=dict)
    talk: _Histogram | None = None


class CallFlow:
    """Offered, answered, abandoned and exited calls, wait and talk times, and the trailing
    arrival rate and talk time that staffing is computed from. Each call counts once: offered
    when first seen, its outcome when final (a later correction of an `unknown` is not
    re-counted, so counters never disagree with themselves).

    These are most of /metrics' series and change only when calls do, so they are kept as
    plain counts and rendered here, each queue's text cached until its counts change."""

    def __init__(
        self,
        registry: CollectorRegistry,
        service: Mapping[str, QueueService],
        extra_buckets: Iterable[float] = (),
    ) -> None:
        self.service = service
        self.wait_edges = tuple(
            sorted(
                {float(b) for b in WAIT_BUCKETS}
                | {s.sl_seconds for s in service.values()}
                | {float(b) for b in extra_buckets}
            )
        )
        self.talk_edges = tuple(float(b) for b in TALK_BUCKETS)
        self._flows = {q: self._fresh() for q in service}
        self._text: dict[str, list[str]] = {}  # queue -> lines per family, while unchanged
        self._seen: dict[tuple[str, str, int], float] = {}
        self._done: set[tuple[str, str, int]] = set()
        self._arrivals: dict[str, deque[float]] = {q: deque() for q in service}
        self._talks: dict[str, deque[tuple[float, float]]] = {q: deque() for q in service}
        self._pruned = 0.0
        registry.register(_Rendered(self))

    def _fresh(self) -> _QueueFlow:
        return _QueueFlow(
            wait={
                o: _Histogram([0] * (len(self.wait_edges) + 1))
                for o in ("answered", "abandoned", "exited")
            },
            talk=_Histogram([0] * (len(self.talk_edges) + 1)),
        )

    def call(self, record: CallRecord, now: float) -> None:
        queue = record.queue
        flow = self._flows.get(queue)
        if flow is None:
            return
        key = (record.uniqueid, queue, record.visit)
        if key not in self._seen:
            self._seen[key] = now
            flow.offered += 1
            self._arrivals[queue].append(now)
            self._text.pop(queue, None)
        if record.outcome is None or key in self._done:
            return
        self._done.add(key)
        self._text.pop(queue, None)
        wait = record.wait_s or 0.0
        if record.outcome in (Outcome.ANSWERED, Outcome.TRANSFERRED):
            flow.answered += 1
            flow.wait["answered"].observe(self.wait_edges, wait)
            if record.talk_s is not None and flow.talk is not None:
                flow.talk.observe(self.talk_edges, record.talk_s)
                self._talks[queue].append((now, record.talk_s))
        elif record.outcome is Outcome.ABANDONED:
            flow.abandoned += 1
            flow.wait["abandoned"].observe(self.wait_edges, wait)
        else:
            flow.exited[_EXIT_OF[record.outcome]] += 1
            flow.wait["exited"].observe(self.wait_edges, wait)
        if now - self._pruned > 60:
            self._prune(now)

    def ring_not_answered(self, queue: str) -> None:
        if (flow := self._flows.get(queue)) is not None:
            flow.ring_noanswer += 1
            self._text.pop(queue, None)

    def load(self, queue: str, now: float) -> tuple[float, float | None]:
        """(arrivals per second, mean talk seconds or None) over the trailing window."""
        arrivals, talks = self._arrivals[queue], self._talks[queue]
        while arrivals and arrivals[0] < now - _STAFFING_WINDOW_S:
            arrivals.popleft()
        while talks and talks[0][0] < now - _STAFFING_WINDOW_S:
            talks.popleft()
        mean_talk = sum(t for _, t in talks) / len(talks) if talks else None
        return len(arrivals) / _STAFFING_WINDOW_S, mean_talk

    def render(self) -> str:
        """The call-flow families in Prometheus' text format (version 0.0.4)."""
        per_queue = [self._text.get(q) or self._render_queue(q) for q in self._flows]
        out: list[str] = []
        for index, (name, kind, doc) in enumerate(_FLOW_FAMILIES):
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            out.extend(lines[index] for lines in per_queue)
        return "".join(out)

    def _render_queue(self, queue: str) -> list[str]:
        flow = self._flows[queue]
        q = f'queue="{queue}"'

        def counter(name: str, value: int, extra: str = "") -> str:
            return f"{name}{{{extra}{q}}} {float(value)}\n"

        def histogram(name: str, h: _Histogram, edges: tuple[float, ...], extra: str) -> str:
            lines, running = [], 0
            for edge, n in zip((*edges, math.inf), h.buckets, strict=True):
                running += n
                le = _go_float(edge)
                lines.append(f'{name}_bucket{{le="{le}",{extra}{q}}} {float(running)}\n')
            lines.append(f"{name}_count{{{extra}{q}}} {float(h.count)}\n")
            lines.append(f"{name}_sum{{{extra}{q}}} {_go_float(h.total)}\n")
            return "".join(lines)

        assert flow.talk is not None
        text = [
            counter("hotline_queue_calls_offered_total", flow.offered),
            counter("hotline_queue_calls_answered_total", flow.answered),
            counter("hotline_queue_calls_abandoned_total", flow.abandoned),
            "".join(
                counter("hotline_queue_calls_exited_total", n, f'reason="{reason}",')
                for reason, n in flow.exited.items()
            ),
            counter("hotline_agent_ring_noanswer_total", flow.ring_noanswer),
            "".join(
                histogram("hotline_queue_wait_seconds", h, self.wait_edges, f'outcome="{o}",')
                for o, h in flow.wait.items()
            ),
            histogram("hotline_call_talk_seconds", flow.talk, self.talk_edges, ""),
        ]
        self._text[queue] = text
        return text

    def _prune(self, now: float) -> None:
        self._pruned = now
        for key, seen in list(self._seen.items()):
            if seen < now - _FORGET_AFTER_S:
                del self._seen[key]
                self._done.discard(key)


_FLOW_FAMILIES = (
    (
        "hotline_queue_calls_offered_total",
        "counter",
        "Calls offered: queue joins plus refused joins",
    ),
    ("hotline_queue_calls_answered_total", "counter", "Calls answered by a responder"),
    ("hotline_queue_calls_abandoned_total", "counter", "Callers who hung up while waiting"),
    (
        "hotline_queue_calls_exited_total",
        "counter",
        "Calls that left unanswered for a reason other than the caller hanging up",
    ),
    (
        "hotline_agent_ring_noanswer_total",
        "counter",
        "Rings a responder did not answer (headset, presence or device trouble)",
    ),
    (
        "hotline_queue_wait_seconds",
        "histogram",
        "Time in the queue, observed once per offered call when it leaves",
    ),
    ("hotline_call_talk_seconds", "histogram", "Talk time of answered calls"),
)


class _Rendered(Collector):
    """Holds CallFlow's place in the registry: describe() claims its names so nothing else can
    register them; the text itself comes from CallFlow.render (see render_metrics)."""

    def __init__(self, flow: CallFlow) -> None:
        self.flow = flow

    def collect(self) -> Iterator[Metric]:
        return iter(())

    def describe(self) -> Iterator[Metric]:
        for name, _kind, doc in _FLOW_FAMILIES:
            yield GaugeMetricFamily(name, doc)


def _go_float(value: float) -> str:
    # Prometheus' spelling of a float sample or bucket bound: 20.0, +Inf.
    return "+Inf" if value == math.inf else repr(float(value))


def render_metrics(registry: CollectorRegistry, flow: CallFlow) -> bytes:
    """The whole exposition in the text format: the registry's families, then the call flow."""
    return generate_latest(registry) + flow.render().encode()


class QueueCollector(Collector):
    """Queue gauges computed at scrape time from the live model: memory only, no awaits."""

    def __init__(
        self,
        board: QueueBoard,
        flow: CallFlow,
        service: Mapping[str, QueueService],
        clock: Callable[[], float],
    ) -> None:
        self.board = board
        self.flow = flow
        self.service = service
        self.clock = clock
        # Erlang C at 2,000 responders costs about a millisecond; its inputs move slowly.
        self._staffing: dict[str, tuple[float, int]] = {}

    def _required(self, queue: str, now: float) -> int:
        cached = self._staffing.get(queue)
        if cached is not None and now - cached[0] < _STAFFING_EVERY_S:
            return cached[1]
        target = self.service[queue]
        rate, talk = self.flow.load(queue, now)
        agents = (
            staffing.required(rate, talk, target.sl_seconds, target.sl_target).agents if talk else 0
        )
        self._staffing[queue] = (now, agents)
        return agents

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        views = self.board.view(now)
        callers = GaugeMetricFamily(
            "hotline_queue_callers", "Callers waiting now", labels=["queue"]
        )
        longest = GaugeMetricFamily(
            "hotline_queue_longest_wait_seconds",
            "Wait so far of the caller waiting longest; 0 when nobody waits",
            labels=["queue"],
        )
        members = GaugeMetricFamily(
            "hotline_queue_members",
            "Members by state (exclusive states)",
            labels=["queue", "state"],
        )
        logged_in = GaugeMetricFamily(
            "hotline_queue_members_logged_in",
            "Members present in the queue (any kind, any state)",
            labels=["queue"],
        )
        info = GaugeMetricFamily(
            "hotline_queue_info",
            "Queue configuration",
            labels=["queue", "strategy", "servicelevel_seconds"],
        )
        required = GaugeMetricFamily(
            "hotline_staffing_required_agents",
            "Responders Erlang C requires for the queue's service-level target, from the "
            "trailing 30 min arrival rate and mean talk time",
            labels=["queue", "target"],
        )
        for queue, view in views.items():
            callers.add_metric([queue], view.callers)
            longest.add_metric([queue], view.longest_wait_s)
            for state in STATES:
                members.add_metric([queue, state], view.members[state])
            logged_in.add_metric([queue], view.logged_in)
            target = self.service[queue]
            info.add_metric([queue, view.strategy, f"{target.sl_seconds:g}"], 1)
            label = f"{round(target.sl_target * 100)}_{target.sl_seconds:g}"
            required.add_metric([queue, label], self._required(queue, now))
        yield from (callers, longest, members, logged_in, info, required)
