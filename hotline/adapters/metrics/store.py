"""The Postgres store: up, write latency, failed writes, rows written and replays not applied, the
backlog in memory and in the spool, records it set aside in its dead letters, and records it had
to drop. StoreMetrics is the observer
`hotline.adapters.store.writer.Store` reports to."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hotline.core.records import DeadLetterReason, Table, WriteErrorKind

_TABLES: frozenset[str] = frozenset(get_args(Table))


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry, dropped: Counter) -> None:
        r = registry
        self._dropped = dropped
        self.up = Gauge("hotline_db_up", "1 when the last write to Postgres succeeded", registry=r)
        self.write_seconds = Histogram(
            "hotline_db_write_duration_seconds",
            "Batch upsert latency",
            ["op"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.write_errors = Counter(
            "hotline_db_write_errors", "Failed writes by kind", ["kind"], registry=r
        )
        for kind in get_args(WriteErrorKind):
            self.write_errors.labels(kind)
        self.rows_written = Counter(
            "hotline_db_rows_written", "Rows upserted", ["table"], registry=r
        )
        self.duplicate_rows = Counter(
            "hotline_db_duplicates",
            "Records not applied because the stored row was as new or newer (replays)",
            ["table"],
            registry=r,
        )
        for table in get_args(Table):
            self.rows_written.labels(table)
            self.duplicate_rows.labels(table)
        self.backlog_records = Gauge(
            "hotline_db_backlog_events", "Records not yet in Postgres", ["location"], registry=r
        )
        self.backlog_age = Gauge(
            "hotline_db_backlog_age_seconds", "Age of the oldest unwritten record", registry=r
        )
        self.spool_bytes = Gauge("hotline_spool_bytes", "On-disk spool size", registry=r)
        self.dead_lettered_records = Counter(
            "hotline_records_dead_lettered",
            "Records set aside in the dead letters instead of written, by table and reason",
            ["table", "reason"],
            registry=r,
        )
        for table in (*get_args(Table), "unknown"):
            for reason in get_args(DeadLetterReason):
                self.dead_lettered_records.labels(table, reason)

    def db_up(self, up: bool) -> None:
        self.up.set(1 if up else 0)

    def write_done(self, op: str, rows: int, seconds: float) -> None:
        self.write_seconds.labels(op).observe(seconds)
        if op in _TABLES:
            self.rows_written.labels(op).inc(rows)

    def write_error(self, kind: str) -> None:
        self.write_errors.labels(kind).inc()

    def duplicates(self, table: str, n: int) -> None:
        if table in _TABLES:
            self.duplicate_rows.labels(table).inc(n)

    def backlog(self, memory: int, spool: int, oldest_age_s: float, spool_bytes: int) -> None:
        self.backlog_records.labels("memory").set(memory)
        self.backlog_records.labels("spool").set(spool)
        self.backlog_age.set(oldest_age_s)
        self.spool_bytes.set(spool_bytes)

    def dropped(self, reason: str, n: int) -> None:
        self._dropped.labels(reason).inc(n)

    def dead_lettered(self, table: str, reason: str, n: int) -> None:
        self.dead_lettered_records.labels(table, reason).inc(n)
