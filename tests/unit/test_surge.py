"""The surge rule (core.surge) and the surge watch (app.surge): when standby responders are
called in and let go, with hysteresis, and what each decision leaves behind: the keeper's
surging queues, the metrics and the audit trail."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from hotline.adapters.metrics.surge import SurgeMetrics
from hotline.app.surge import AuditTrail, SurgeWatch
from hotline.config import ConfigError, parse_config
from hotline.core.queuestate import STATES, QueueView
from hotline.core.supervision import AuditEntry, Unavailable
from hotline.core.surge import Load, SurgeRule, SurgeState, load_of, step
from tests.harness import ManualClock, wait_for

RULE = SurgeRule(
    activate={"callers_waiting": 3, "longest_wait_s": 60},
    activate_after_s=30,
    release={"callers_waiting": 1, "longest_wait_s": 15},
    release_after_s=120,
)
QUIET = Load(0, 0.0, 0.0)
BUSY = Load(4, 10.0, 2.0)


def _run(samples: Sequence[tuple[float, Load]]) -> list[tuple[float, bool]]:
    state, changes = SurgeState(), []
    for at, load in samples:
        state, change = step("crisis", RULE, state, load, at)
        if change is not None:
            changes.append((at, change.active))
    return changes


def test_a_figure_reached_for_the_whole_activation_time_starts_the_surge() -> None:
    samples = [(t, BUSY) for t in range(0, 31)]
    assert _run(samples) == [(30, True)]


def test_a_break_in_the_load_restarts_the_count() -> None:
    samples = [(t, BUSY) for t in range(0, 20)] + [(20, QUIET)]
    samples += [(t, BUSY) for t in range(21, 52)]
    assert _run(samples) == [(51, True)]


def test_any_one_activation_figure_is_enough() -> None:
    one_long_wait = Load(1, 61.0, 0.5)
    assert _run([(0, one_long_wait), (30, one_long_wait)]) == [(30, True)]
    assert _run([(0, Load(2, 59.0, 0.5)), (30, Load(2, 59.0, 0.5))]) == []


def test_release_needs_every_figure_below_for_the_release_time_hysteresis() -> None:
    on = [(0, BUSY), (30, BUSY)]
    # Two callers: below the activation figure, not below the release one: stays on.
    middling = Load(2, 10.0, 1.0)
    assert _run([*on, *((t, middling) for t in range(31, 400, 10))]) == [(30, True)]
    # Nobody waiting but the last caller waited 20 s (above 15 s): stays on.
    assert _run([*on, *((t, Load(0, 20.0, 0.0)) for t in range(31, 400, 10))]) == [(30, True)]
    # All quiet for 120 s: off, once.
    quiet = [(t, QUIET) for t in range(31, 400, 10)]
    assert _run([*on, *quiet]) == [(30, True), (151, False)]


def test_a_surge_can_start_again_after_it_ended() -> None:
    samples = [(0, BUSY), (30, BUSY), (31, QUIET), (151, QUIET), (152, BUSY), (182, BUSY)]
    assert _run(samples) == [(30, True), (151, False), (182, True)]


def test_the_change_says_which_figures_decided_and_for_how_long() -> None:
    state, _ = step("crisis", RULE, SurgeState(), Load(4, 10.0, 2.0), 0)
    _, change = step("crisis", RULE, state, Load(5, 70.0, 2.5), 31)
    assert change is not None
    assert change.active
    assert change.reason == "callers_waiting 5 >= 3 and longest_wait_s 70 >= 60 for 31 s"
    assert change.figures == {"callers_waiting": 3, "longest_wait_s": 60}


def test_calls_per_responder_counts_waiting_and_answered_calls_per_present_member() -> None:
    members = {s: 0 for s in STATES} | {"available": 1, "in_call": 2, "paused": 3}
    view = QueueView("leastrecent", 4, 12.0, members, 6)
    assert load_of(view) == Load(4, 12.0, 2.0)  # (4 waiting + 2 answered) / 3 present
    nobody = QueueView("leastrecent", 1, 3.0, {s: 0 for s in STATES} | {"paused": 2}, 2)
    assert math.isinf(load_of(nobody).calls_per_responder)
    idle = QueueView("leastrecent", 0, 0.0, {s: 0 for s in STATES}, 0)
    assert load_of(idle).calls_per_responder == 0


# -- configuration -----------------------------------------------------------------------------

BASE = """timezone: UTC
ami: {username: h, secret_env: X}
responders:
  r-a: {name: A, interface: PJSIP/a, queues: {crisis: 0}}
  r-b: {name: B, interface: PJSIP/b}
"""


def test_the_surge_rule_comes_from_the_configuration_with_defaults() -> None:
    text = BASE + "queues:\n  crisis: {surge: {standby: [r-b]}}\n  quiet: {}\n"
    config = parse_config(text, Path("x.yaml"))
    assert dict(config.surge) == {
        "crisis": SurgeRule(
            activate={"callers_waiting": 3, "longest_wait_s": 60},
            activate_after_s=30,
            release={"callers_waiting": 1, "longest_wait_s": 15},
            release_after_s=300,
        )
    }
    text = BASE + (
        "queues:\n  crisis: {surge: {standby: [r-b], activate: {calls_per_responder: 1.5,"
        " for_seconds: 5}, release: {calls_per_responder: 0.5, for_seconds: 60}}}\n"
    )
    rule = parse_config(text, Path("x.yaml")).surge["crisis"]
    assert rule == SurgeRule({"calls_per_responder": 1.5}, 5, {"calls_per_responder": 0.5}, 60)


def _problems(queues: str) -> list[str]:
    try:
        parse_config(BASE + queues, Path("x.yaml"))
    except ConfigError as exc:
        return exc.problems
    raise AssertionError("accepted")


def test_a_rule_without_figures_or_with_an_inverted_hysteresis_is_refused() -> None:
    assert _problems(
        "queues:\n  crisis: {surge: {standby: [r-b], activate: {for_seconds: 5}}}\n"
    ) == [
        "queues.crisis.surge.activate: name at least one of callers_waiting,"
        " longest_wait_seconds, calls_per_responder (line 7)"
    ]
    assert _problems(
        "queues:\n  crisis: {surge: {standby: [r-b], activate: {callers_waiting: 2},"
        " release: {callers_waiting: 3}}}\n"
    ) == ["queues.crisis.surge: release.callers_waiting must be at most activate.callers_waiting"
          " (line 7)"]  # fmt: skip


# -- the watch ---------------------------------------------------------------------------------


class Keeper:
    def __init__(self) -> None:
        self.calls: list[frozenset[str]] = []

    def set_surging(self, queues: frozenset[str]) -> None:
        self.calls.append(queues)


class Sink:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []
        self.down = False

    async def record_audit(self, entry: AuditEntry) -> None:
        if self.down:
            raise Unavailable("the database cannot be reached now; nothing was changed")
        self.entries.append(entry)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_the_watch_drives_the_keeper_and_leaves_a_metric_log_and_audit_entry() -> None:
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    clock = ManualClock(start)
    loads: dict[str, Load] | None = {"crisis": QUIET, "other": BUSY}
    registry = CollectorRegistry()
    metrics = SurgeMetrics(registry, ["crisis"])
    sink, keeper = Sink(), Keeper()
    audit = AuditTrail(sink, metrics)
    watch = SurgeWatch(
        {"crisis": RULE}, lambda: loads, keeper, clock=clock, observer=metrics, audit=audit
    )
    writer = asyncio.create_task(audit.run())

    def at(seconds: float, load: Load) -> None:
        nonlocal loads
        clock.set(start + timedelta(seconds=seconds))
        loads = {"crisis": load}
        watch.evaluate()

    try:
        at(0, BUSY)
        at(29, BUSY)
        assert keeper.calls == []
        assert _sample(registry, "hotline_surge_active", queue="crisis") == 0
        at(30, BUSY)
        assert keeper.calls == [frozenset({"crisis"})]
        assert _sample(registry, "hotline_surge_active", queue="crisis") == 1
        assert _sample(registry, "hotline_surge_activations_total", queue="crisis") == 1
        # AMI down: no sample, no decision, whatever the time.
        loads = None
        clock.set(start + timedelta(seconds=1000))
        assert watch.evaluate() == []
        at(1000, QUIET)
        at(1120, QUIET)
        assert keeper.calls == [frozenset({"crisis"}), frozenset()]
        assert _sample(registry, "hotline_surge_active", queue="crisis") == 0
        assert _sample(registry, "hotline_surge_releases_total", queue="crisis") == 1

        async def written() -> int:
            return len(sink.entries)

        await wait_for(written, lambda n: n == 2, 5, "two audit entries")
        on, off = sink.entries
        assert (on.actor, on.role, on.action, on.target) == (
            "hotline", "system", "surge_on", "queue crisis"
        )  # fmt: skip
        assert on.reason == "callers_waiting 4 >= 3 for 30 s"
        assert on.at == start + timedelta(seconds=30)
        assert on.after == {
            "surging": True, "callers_waiting": 4, "longest_wait_s": 10.0,
            "calls_per_responder": 2.0,
        }  # fmt: skip
        assert off.action == "surge_off"
        assert off.reason == "callers_waiting 0 < 1 and longest_wait_s 0 < 15 for 120 s"
        assert on.request_id is None
        assert off.before == {"surging": True}

        # Postgres away: the decision stands, the entry is counted as not stored.
        sink.down = True
        at(1200, BUSY)
        at(1230, BUSY)
        assert keeper.calls[-1] == frozenset({"crisis"})

        async def failures() -> float | None:
            return _sample(registry, "hotline_surge_audit_failures_total")

        await wait_for(failures, lambda n: n == 1, 5, "the failure counted")
    finally:
        writer.cancel()
