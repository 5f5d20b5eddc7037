"""The HTTP listener: connections served now and the limit, connections shed (closed at the limit,
for a late request head or a stalled response) and accepts that failed. HttpMetrics is the
observer `hotline.adapters.http.Listener` reports to (docs/http.md)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from hotline.core.health import AcceptFailure, ShedReason


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.open = Gauge(
            "hotline_http_connections", "HTTP connections being served now", registry=r
        )
        self.max = Gauge(
            "hotline_http_connections_max",
            "HTTP connections served at once (http.max_connections); more are closed at once",
            registry=r,
        )
        self.shed_total = Counter(
            "hotline_http_connections_shed",
            "HTTP connections closed early, by reason: limit (closed as soon as accepted), "
            "header_timeout (no complete request head in time), write_stalled (response not read)",
            ["reason"],
            registry=r,
        )
        for reason in get_args(ShedReason):
            self.shed_total.labels(reason)
        self.accept_errors = Counter(
            "hotline_http_accept_errors",
            "Failed accepts on the HTTP port, by kind: descriptors, memory, aborted",
            ["kind"],
            registry=r,
        )
        for kind in get_args(AcceptFailure):
            self.accept_errors.labels(kind)

    def connections(self, open_now: int, limit: int) -> None:
        self.open.set(open_now)
        self.max.set(limit)

    def shed(self, reason: ShedReason) -> None:
        self.shed_total.labels(reason).inc()

    def accept_failed(self, kind: AcceptFailure) -> None:
        self.accept_errors.labels(kind).inc()
