"""The wellbeing guardrails: the rules (core.wellbeing) on event sequences, and the keeper
(app.wellbeing) carrying a pause out and lifting it on a clock the test drives."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hotline.adapters.metrics.wellbeing import WellbeingMetrics
from hotline.app.surge import AuditTrail
from hotline.app.wellbeing import WellbeingKeeper
from hotline.config import ConfigError, parse_config
from hotline.core.ami import Event, Reply, Result
from hotline.core.supervision import AuditEntry
from hotline.core.wellbeing import Decision, Guards, HardCallFlagged, WellbeingRule
from tests.harness import ManualClock, wait_for

RULE = WellbeingRule(
    decompress_after_s=20 * 60,
    decompress_s=5 * 60,
    max_consecutive_calls=3,
    max_continuous_s=4 * 3600,
    min_break_s=5 * 60,
    enforce="alert",
    rest_s=10 * 60,
    rest_reason="break",
)
PHONE = "PJSIP/ana"


def _fields(queue: str = "crisis", **more: str) -> dict[str, str]:
    return {"Queue": queue, "Interface": PHONE, "MemberName": "r-ana", **more}


class Ana:
    """One responder's events, at times in seconds from 0."""

    def __init__(self, guards: Guards) -> None:
        self.guards = guards
        self.guards.feed("QueueMemberAdded", _fields(Paused="0"), 0)

    def call(self, at: float, talk_s: float, queue: str = "crisis") -> list[object]:
        self.guards.feed("AgentConnect", _fields(queue), at)
        return list(
            self.guards.feed("AgentComplete", _fields(queue, TalkTime=str(talk_s)), at + talk_s)
        )

    def pause(self, at: float, until: float, reason: str = "break") -> list[object]:
        out = self.guards.feed("QueueMemberPause", _fields(Paused="1", PausedReason=reason), at)
        self.guards.feed("QueueMemberPause", _fields(Paused="0"), until)
        return list(out)


def test_a_long_call_earns_a_decompression_pause_a_shorter_one_does_not() -> None:
    ana = Ana(Guards({"crisis": RULE}, "decompression"))
    assert ana.call(100, 19 * 60) == []
    assert ana.call(2000, 20 * 60) == [
        Decision(
            "crisis", "r-ana", PHONE, "long_call", "pause", "decompression", 300,
            "a call of 20.0 min in crisis (at least 20 min)",
        )
    ]  # fmt: skip


def test_a_responder_already_paused_when_the_call_ends_is_owed_nothing() -> None:
    guards = Guards({"crisis": RULE}, "decompression")
    ana = Ana(guards)
    guards.feed("AgentConnect", _fields(), 10)
    guards.feed("QueueMemberPause", _fields(Paused="1", PausedReason="admin"), 20)
    assert guards.feed("AgentComplete", _fields(TalkTime="1500"), 1510) == []
    assert ana.pause(1600, 1700) == []


def test_consecutive_calls_reach_the_cap_once_and_a_real_break_resets_it() -> None:
    guards = Guards({"crisis": RULE}, "decompression")
    ana = Ana(guards)
    assert ana.call(0, 60) == []
    assert ana.call(100, 60) == []
    [decision] = ana.call(200, 60)
    assert isinstance(decision, Decision)
    assert (decision.trigger, decision.action, decision.reason) == (
        "consecutive_calls", "alert", None
    )  # fmt: skip
    assert decision.why == "3 calls in a row without a break (cap 3)"
    assert guards.over_limit() == {("crisis", "consecutive_calls"): 1}
    assert ana.call(300, 60) == []  # reported once
    # A 1-minute pause is no break; a 5-minute one is.
    ana.pause(400, 460)
    assert guards.over_limit() == {("crisis", "consecutive_calls"): 1}
    ana.pause(500, 800)
    assert guards.over_limit() == {}
    assert ana.call(900, 60) == []
    assert ana.call(1000, 60) == []
    assert len(ana.call(1100, 60)) == 1


def test_a_cap_enforced_as_a_pause_gives_the_rest_reason_and_length() -> None:
    rule = replace(RULE, enforce="pause")
    ana = Ana(Guards({"crisis": rule}, "decompression"))
    ana.call(0, 60)
    ana.call(100, 60)
    assert ana.call(200, 60) == [
        Decision(
            "crisis", "r-ana", PHONE, "consecutive_calls", "pause", "break", 600,
            "3 calls in a row without a break (cap 3)",
        )
    ]  # fmt: skip


def test_hours_in_the_queue_without_a_break_are_capped_but_never_mid_call() -> None:
    guards = Guards({"crisis": replace(RULE, max_consecutive_calls=None)}, "decompression")
    ana = Ana(guards)
    hours = 3600.0
    assert guards.tick(4 * hours - 1) == []
    guards.feed("AgentConnect", _fields(), 4 * hours - 10)
    assert guards.tick(4 * hours + 1) == []  # on a call
    [decision] = guards.feed("AgentComplete", _fields(TalkTime="600"), 4 * hours + 590)
    assert isinstance(decision, Decision)
    assert decision.trigger == "continuous_hours"
    assert decision.why == "4.2 h in crisis without a break (cap 4 h)"
    assert guards.tick(5 * hours) == []  # reported once
    ana.pause(5 * hours, 5 * hours + 600)
    assert guards.tick(9 * hours) == []
    assert len(guards.tick(9 * hours + 600)) == 1


def test_a_hard_call_flagged_by_the_responder_is_counted_hotlines_own_pause_is_not() -> None:
    guards = Guards({"crisis": RULE}, "decompression")
    ana = Ana(guards)
    ana.call(0, 60)
    assert ana.pause(100, 200, "decompression") == [HardCallFlagged("crisis", "r-ana")]
    assert ana.pause(300, 400, "break") == []
    guards.expect_pause(PHONE)
    assert ana.guards.feed(
        "QueueMemberPause", _fields(Paused="1", PausedReason="decompression"), 500
    ) == []  # fmt: skip
    assert guards.paused_by_us(PHONE)
    guards.feed("QueueMemberPause", _fields(Paused="0"), 600)
    assert not guards.paused_by_us(PHONE)


def test_queues_without_a_rule_and_members_gone_are_ignored() -> None:
    guards = Guards({"crisis": RULE}, "decompression")
    guards.feed("QueueMemberAdded", _fields("spanish", Paused="0"), 0)
    assert guards.feed("AgentComplete", _fields("spanish", TalkTime="5000"), 5000) == []
    Ana(guards)
    guards.feed("QueueMemberRemoved", _fields(), 10)
    assert guards.tick(10 * 3600) == []
    # A QueueStatus read brings back who the events missed, from now.
    guards.resync([("crisis", PHONE, "r-ana", False, "", False)], 20 * 3600)
    assert guards.tick(24 * 3600 - 1) == []
    assert len(guards.tick(24 * 3600)) == 1
    guards.resync([], 25 * 3600)
    assert guards.over_limit() == {}


def test_the_guardrails_come_from_the_configuration() -> None:
    base = """timezone: UTC
ami: {username: h, secret_env: X}
responders: {r-a: {name: A, interface: PJSIP/a, queues: {crisis: 0}}}
"""
    config = parse_config(base + "queues: {crisis: {wellbeing: {}}, quiet: {}}", Path("x.yaml"))
    assert dict(config.wellbeing) == {
        "crisis": WellbeingRule(1200, 300, 6, 4 * 3600, 300, "alert", 600, "break")
    }
    text = base + (
        "queues: {crisis: {wellbeing: {decompress_after_minutes: null, max_consecutive_calls:"
        " null, max_continuous_hours: 2.5, enforce: pause, rest_minutes: 15, rest_reason: admin}}}"
    )
    rule = parse_config(text, Path("x.yaml")).wellbeing["crisis"]
    assert rule == WellbeingRule(None, 300, None, 9000, 300, "pause", 900, "admin")
    with pytest.raises(ConfigError) as refused:
        parse_config(base + "queues: {crisis: {wellbeing: {rest_reason: nap}}}", Path("x.yaml"))
    assert refused.value.problems == [
        "queues.crisis.wellbeing.rest_reason: unknown pause reason 'nap' (line 4)"
    ]


# -- the keeper ---------------------------------------------------------------------------------


class Phone:
    """What the keeper sends to Asterisk; `refuse` makes Asterisk answer with an error."""

    def __init__(self) -> None:
        self.sent: list[Mapping[str, str]] = []
        self.refuse = False

    async def send(self, action: Mapping[str, str]) -> Reply:
        self.sent.append(dict(action))
        if self.refuse:
            return Reply(Result.ERROR, "Interface not found")
        return Reply(Result.SUCCESS)


class Sink:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    async def record_audit(self, entry: AuditEntry) -> None:
        self.entries.append(entry)


async def test_the_keeper_pauses_then_lifts_the_pause_on_time_and_audits_both() -> None:
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    clock = ManualClock(start)
    registry = CollectorRegistry()
    metrics = WellbeingMetrics(registry, ["crisis"])
    phone, sink = Phone(), Sink()
    audit = AuditTrail(sink, metrics)
    keeper = WellbeingKeeper(
        Guards({"crisis": RULE}, "decompression"), phone, clock, metrics, audit
    )
    tasks = [asyncio.create_task(keeper.run()), asyncio.create_task(audit.run())]

    def event(name: str, seconds: float, **fields: str) -> None:
        clock.set(start + timedelta(seconds=seconds))
        keeper.on_event(Event(name, _fields(**fields), seconds))

    async def sent() -> int:
        return len(phone.sent)

    try:
        event("QueueMemberAdded", 0, Paused="0")
        event("AgentConnect", 10)
        event("AgentComplete", 1800, TalkTime="1790")
        await wait_for(sent, lambda n: n == 1, 5, "the pause sent")
        assert phone.sent[0] == {
            "Action": "QueuePause", "Interface": PHONE, "Paused": "true",
            "Reason": "decompression",
        }  # fmt: skip
        event("QueueMemberPause", 1801, Paused="1", PausedReason="decompression")
        labels = {"queue": "crisis", "trigger": "long_call"}
        assert registry.get_sample_value("hotline_wellbeing_pauses_total", labels) == 1
        # Not before its time; at its time, lifted.
        clock.set(start + timedelta(seconds=1800 + 299))
        await asyncio.sleep(0.05)
        assert len(phone.sent) == 1
        clock.set(start + timedelta(seconds=1800 + 300))
        await wait_for(sent, lambda n: n == 2, 5, "the unpause sent")
        assert phone.sent[1] == {"Action": "QueuePause", "Interface": PHONE, "Paused": "false"}
        event("QueueMemberPause", 2101, Paused="0")

        async def entries() -> list[str]:
            return [e.action for e in sink.entries]

        await wait_for(entries, lambda a: a == ["wellbeing_pause", "pause_lifted"], 5, "audit")
        assert sink.entries[0].at == start + timedelta(seconds=1800)
        assert sink.entries[0].after == {"paused": True, "reason": "decompression", "minutes": 5}

        # A responder who ends the pause early, or swaps it for one of their own, keeps theirs.
        event("AgentConnect", 3000)
        event("AgentComplete", 4300, TalkTime="1300")
        await wait_for(sent, lambda n: n == 3, 5, "the second pause sent")
        event("QueueMemberPause", 4301, Paused="1", PausedReason="decompression")
        event("QueueMemberPause", 4400, Paused="0")
        event("QueueMemberPause", 4410, Paused="1", PausedReason="admin")
        clock.set(start + timedelta(seconds=4300 + 400))
        await asyncio.sleep(0.05)
        assert len(phone.sent) == 3

        # Asterisk refusing the pause is counted; nothing else happens.
        phone.refuse = True
        event("QueueMemberPause", 5000, Paused="0")
        event("AgentConnect", 5000)
        event("AgentComplete", 6300, TalkTime="1300")
        await wait_for(sent, lambda n: n == 4, 5, "the refused pause")
        failures = registry.get_sample_value(
            "hotline_wellbeing_failures_total", {"action": "pause"}
        )
        assert failures == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
