"""Records and events lost on their way to Postgres, whether the call ledger or the store lost
them: one counter, which must stay 0 (any increase pages)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter

from hotline.core.records import DropReason


def dropped_counter(registry: CollectorRegistry) -> Counter:
    counter = Counter(
        "hotline_events_dropped",
        "Events or records lost, by reason; must stay 0",
        ["reason"],
        registry=registry,
    )
    for reason in get_args(DropReason):
        counter.labels(reason)
    return counter
