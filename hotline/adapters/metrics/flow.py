"""The call flow per queue: calls offered, answered, abandoned and exited, unanswered rings, calls
to the partner centre by result, and wait and talk histograms, rendered straight to Prometheus'
text format; plus the trailing arrival rate and talk time that staffing is computed from.
CallFlow is the `hotline.app.ledger.Flow` the ledger reports each call record to."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotline.config import QueueService
from hotline.core.records import CallRecord, Outcome, PartnerResult

# Wait buckets (s) of the catalogue; every configured service-level threshold is added, so the
# SL ratios are exact at their edges (docs/metrics.md, "Bucket edges at each queue's threshold").
WAIT_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
TALK_BUCKETS = (60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200)
# Why a call left unanswered other than by the caller hanging up, from its final outcome.
ExitReason = Literal["timeout", "upstream_withdrawn", "empty", "refused", "other"]
_EXIT_OF: dict[Outcome, ExitReason] = {
    Outcome.TIMEOUT: "timeout",
    Outcome.ROLLOVER: "upstream_withdrawn",
    Outcome.LEAVEEMPTY: "empty",
    Outcome.JOINEMPTY: "refused",
    Outcome.UNKNOWN: "other",
}
# The wait histogram's `outcome` label.
WaitOutcome = Literal["answered", "abandoned", "exited"]
STAFFING_WINDOW_S = 1800.0
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
    wait: dict[WaitOutcome, _Histogram]
    talk: _Histogram
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    ring_noanswer: int = 0
    exited: dict[ExitReason, int] = field(
        default_factory=lambda: dict.fromkeys(get_args(ExitReason), 0)
    )
    partner: dict[PartnerResult, int] = field(
        default_factory=lambda: dict.fromkeys(PartnerResult, 0)
    )


class CallFlow:
    """Offered, answered, abandoned and exited calls, wait and talk times, and the trailing
    arrival rate and talk time that staffing is computed from. Each call counts once: offered
    when first seen, its outcome when final (a later correction of an `unknown` is not
    re-counted, so counters never disagree with themselves). The exit counters say how a call
    left the queue; a partner centre taking it afterwards is counted by its partner result.

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
        self._partnered: set[tuple[str, str, int]] = set()  # partner result counted
        self._arrivals: dict[str, deque[float]] = {q: deque() for q in service}
        self._talks: dict[str, deque[tuple[float, float]]] = {q: deque() for q in service}
        self._pruned = 0.0
        registry.register(_Rendered())

    def _fresh(self) -> _QueueFlow:
        return _QueueFlow(
            wait={o: _Histogram([0] * (len(self.wait_edges) + 1)) for o in get_args(WaitOutcome)},
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
        if record.partner_result is not None and key not in self._partnered:
            # Reported after the visit closed, so counted apart from its outcome.
            self._partnered.add(key)
            flow.partner[record.partner_result] += 1
            self._text.pop(queue, None)
        if record.outcome is None or key in self._done:
            return
        self._done.add(key)
        self._text.pop(queue, None)
        wait = record.wait_s or 0.0
        if record.outcome in (Outcome.ANSWERED, Outcome.TRANSFERRED):
            flow.answered += 1
            flow.wait["answered"].observe(self.wait_edges, wait)
            if record.talk_s is not None:
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
        while arrivals and arrivals[0] < now - STAFFING_WINDOW_S:
            arrivals.popleft()
        while talks and talks[0][0] < now - STAFFING_WINDOW_S:
            talks.popleft()
        mean_talk = sum(t for _, t in talks) / len(talks) if talks else None
        return len(arrivals) / STAFFING_WINDOW_S, mean_talk

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
                counter("hotline_partner_calls_total", n, f'result="{result.value}",')
                for result, n in flow.partner.items()
            ),
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
                self._partnered.discard(key)


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
        "hotline_partner_calls_total",
        "counter",
        "Calls rolled over to the partner centre, by how the partner's line answered",
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

    def collect(self) -> Iterator[Metric]:
        return iter(())

    def describe(self) -> Iterator[Metric]:
        for name, _kind, doc in _FLOW_FAMILIES:
            yield GaugeMetricFamily(name, doc)


def _go_float(value: float) -> str:
    # Prometheus' spelling of a float sample or bucket bound: 20.0, +Inf.
    return "+Inf" if value == math.inf else repr(float(value))
