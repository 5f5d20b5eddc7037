"""The daemon's own health: build, process and Python runtime, event-loop lag, the depth of the AMI
event inbox, and when Asterisk last started and last reloaded. The daemon sets these directly."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.registry import Collector

from hotline import __version__

# How a configuration reload ended.
ReloadResult = Literal["ok", "refused"]


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # The default collectors are global objects; give this registry its own references.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(_Forward(collector))
        r = registry
        Info("hotline_build", "hotline build", registry=r).info({"version": __version__})
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
        self.config_reloads = Counter(
            "hotline_config_reloads",
            "Configuration reloads (SIGHUP) by result: ok, or refused (the running one stays)",
            ["result"],
            registry=r,
        )
        for result in get_args(ReloadResult):
            self.config_reloads.labels(result)
        self.watchdog_notifications = Counter(
            "hotline_watchdog_notifications",
            "WATCHDOG=1 pings sent to systemd: only while the loop and the reconcile task are well",
            registry=r,
        )
        self.asterisk_start = Gauge(
            "hotline_asterisk_start_timestamp_seconds",
            "When Asterisk last started, from FullyBooted's Uptime (kept across reconnects)",
            registry=r,
        )
        self.asterisk_reload = Gauge(
            "hotline_asterisk_reload_timestamp_seconds",
            "When Asterisk last reloaded (its start if never), from FullyBooted's LastReload "
            "and the Reload event",
            registry=r,
        )


class _Forward(Collector):
    """Registers one of prometheus_client's global collectors in a private registry."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self):  # type: ignore[no-untyped-def]
        return self.inner.collect()
