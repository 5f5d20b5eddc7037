"""The link's and the membership keeper's new observations, on a registry of the test's own: the
AMI version label stays bounded and follows the Asterisk last reached, the Ping round trip is
the last answered one, and a round woken by several triggers counts under each."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from hotline.adapters.metrics import Metrics


def metrics() -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return Metrics(registry, ["crisis"]), registry


def info_series(registry: CollectorRegistry) -> dict[str, float]:
    (family,) = [m for m in registry.collect() if m.name == "hotline_asterisk_info"]
    return {s.labels["ami_version"]: s.value for s in family.samples}


def test_the_ami_version_is_one_series_for_the_asterisk_last_reached() -> None:
    m, registry = metrics()
    assert info_series(registry) == {}
    m.link.ami_version("11.0.0")
    m.link.ami_version("11.0.0")
    assert info_series(registry) == {"11.0.0": 1.0}
    m.link.ami_version("12.1.0")
    assert info_series(registry) == {"12.1.0": 1.0}


def test_a_banner_that_is_not_a_version_number_is_labelled_unknown() -> None:
    m, registry = metrics()
    m.link.ami_version("+15550999999 says hi")
    assert info_series(registry) == {"unknown": 1.0}
    m.link.ami_version("")
    assert info_series(registry) == {"unknown": 1.0}


def test_the_ping_round_trip_is_the_last_answered_one() -> None:
    m, registry = metrics()
    m.link.ping_answered(0.004)
    m.link.ping_answered(0.002)
    assert registry.get_sample_value("hotline_ami_ping_rtt_seconds") == 0.002


def test_a_round_woken_by_several_triggers_counts_once_under_each() -> None:
    m, registry = metrics()

    def woken(trigger: str) -> float | None:
        return registry.get_sample_value("hotline_reconcile_triggers_total", {"trigger": trigger})

    assert woken("verify") == 0.0  # every trigger exists from the start
    m.membership.round_woken({"drift", "periodic"})
    m.membership.round_woken({"drift"})
    assert (woken("drift"), woken("periodic"), woken("connect")) == (2.0, 1.0, 0.0)


def test_every_consumer_s_error_count_exists_from_the_start() -> None:
    m, registry = metrics()
    m.consumer.handler_failed("ledger")
    counts = {
        consumer: registry.get_sample_value(
            "hotline_event_handler_errors_total", {"consumer": consumer}
        )
        for consumer in ("queues", "membership", "ledger", "asterisk")
    }
    assert counts == {"queues": 0.0, "membership": 0.0, "ledger": 1.0, "asterisk": 0.0}
