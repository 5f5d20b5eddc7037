"""Who is paused and which pauses are past their limit (hotline/core/pauses.py), and the plan
with overrides (hotline/core/plan.py, `hotline plan`)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hotline.adapters.store.supervision import UNAVAILABLE
from hotline.cli import main
from hotline.core.pauses import Limit, OverLimit, Pause, PauseBook, next_limit, over_limit
from hotline.core.plan import plan_json
from hotline.core.roster import (
    ExceptionKind,
    Override,
    QueuePolicy,
    Responder,
    Roster,
    Shift,
)
from tests.harness import free_port

LIMITS = {"break": Limit(900, lift=False), "decompression": Limit(600, lift=True)}


def pause_event(interface: str, paused: bool, reason: str = "", last: float = 0) -> dict[str, str]:
    return {
        "Queue": "crisis",
        "Interface": interface,
        "MemberName": "r-" + interface[-1],
        "Paused": "1" if paused else "0",
        "PausedReason": reason,
        "LastPause": str(int(last)),
    }


def test_a_pause_starts_at_asterisk_s_lastpause_and_ends_with_an_unpause_or_a_removal() -> None:
    book = PauseBook(["crisis"])
    book.feed("QueueMemberPause", pause_event("PJSIP/1", True, "break", last=990), 1000)
    book.feed("QueueMemberPause", pause_event("PJSIP/2", True, "admin"), 1000)
    assert book.pauses() == [
        Pause("crisis", "PJSIP/1", "r-1", "break", 990),
        Pause("crisis", "PJSIP/2", "r-2", "admin", 1000),  # no LastPause: first seen
    ]
    # A repeated event for the same pause does not restart its clock; a new reason does.
    book.feed("QueueMemberPause", pause_event("PJSIP/1", True, "break"), 1100)
    book.feed("QueueMemberPause", pause_event("PJSIP/2", True, "training"), 1200)
    assert [(p.reason, p.since) for p in book.pauses()] == [("break", 990), ("training", 1200)]
    book.feed("QueueMemberPause", pause_event("PJSIP/1", False), 1300)
    book.feed("QueueMemberRemoved", {"Queue": "crisis", "Interface": "PJSIP/2"}, 1300)
    assert book.pauses() == []


def test_other_queues_and_a_lastpause_in_the_future_are_not_trusted() -> None:
    book = PauseBook(["crisis"])
    book.feed("QueueMemberPause", pause_event("PJSIP/1", True, "break") | {"Queue": "x"}, 10)
    book.feed("QueueMemberPause", pause_event("PJSIP/2", True, "break", last=5000), 1000)
    assert book.pauses() == [Pause("crisis", "PJSIP/2", "r-2", "break", 1000)]


def test_a_resync_rebuilds_the_pauses_keeping_the_start_of_those_that_go_on() -> None:
    book = PauseBook(["crisis"])
    book.feed("QueueMemberPause", pause_event("PJSIP/1", True, "break"), 1000)
    book.feed("QueueMemberPause", pause_event("PJSIP/2", True, "break"), 1000)
    items = [
        {"Event": "QueueParams", "Queue": "crisis"},
        {"Event": "QueueMember", "Queue": "crisis", "Location": "PJSIP/1", "Name": "r-1",
         "Paused": "1", "PausedReason": "break", "LastPause": "0"},
        {"Event": "QueueMember", "Queue": "crisis", "Location": "PJSIP/2", "Name": "r-2",
         "Paused": "0", "PausedReason": ""},
        {"Event": "QueueMember", "Queue": "crisis", "Location": "PJSIP/3", "Name": "r-3",
         "Paused": "1", "PausedReason": "admin", "LastPause": "1500"},
    ]  # fmt: skip
    book.resync(items, 2000)
    assert book.pauses() == [
        Pause("crisis", "PJSIP/1", "r-1", "break", 1000),
        Pause("crisis", "PJSIP/3", "r-3", "admin", 1500),
    ]


def test_a_pause_is_over_its_limit_from_the_limit_on_and_reasons_without_one_never_are() -> None:
    pauses = [
        Pause("crisis", "PJSIP/1", "r-1", "break", 0),
        Pause("crisis", "PJSIP/2", "r-2", "decompression", 100),
        Pause("crisis", "PJSIP/3", "r-3", "admin", 0),
        Pause("crisis", "PJSIP/4", "r-4", "typed by hand", 0),
    ]
    assert over_limit(pauses, LIMITS, 699) == []
    assert over_limit(pauses, LIMITS, 700) == [
        OverLimit("crisis", "PJSIP/2", "r-2", "decompression", 100, 600, lift=True)
    ]
    assert [o.responder for o in over_limit(pauses, LIMITS, 10_000)] == ["r-1", "r-2"]
    assert next_limit(pauses, LIMITS, 0) == 700
    assert next_limit(pauses, LIMITS, 700) == 900
    assert next_limit(pauses, LIMITS, 900) is None


NY = ZoneInfo("America/New_York")


def test_the_plan_applies_overrides_and_says_why_each_responder_is_in_or_out() -> None:
    at = datetime(2026, 12, 2, 12, 0, tzinfo=NY)
    roster = Roster(
        tz=NY,
        queues={"crisis": QueuePolicy("crisis", min_responders=2)},
        responders={
            rid: Responder(rid, rid, f"PJSIP/{n}", f"PJSIP/{n}", {"crisis": 0})
            for n, rid in enumerate(("r-1", "r-2", "r-3"), start=1)
        },
        shifts=(Shift("day", frozenset(range(7)), time(8), time(20), ("r-1", "r-2")),),
        exceptions=(),
        overrides=(
            Override(7, "r-2", at, at + timedelta(hours=2), ExceptionKind.OFF, None),
            Override(
                8, "r-3", at, at + timedelta(hours=1), ExceptionKind.ON, frozenset({"crisis"})
            ),
        ),
    )
    plan = plan_json(roster, at)
    assert plan["queues"] == {
        "crisis": [
            {"responder": "r-1", "interface": "PJSIP/1", "penalty": 0, "why": "shift"},
            {"responder": "r-3", "interface": "PJSIP/3", "penalty": 0, "why": "override_on"},
        ]
    }
    assert plan["excluded"] == {
        "crisis": [{"responder": "r-2", "why": "override_off", "lacking": []}]
    }
    assert _ids(plan["overrides"]) == [7, 8]
    assert plan["next_change"] == "2026-12-02T13:00:00-05:00"  # r-3's override ends
    assert plan["below_minimum"] == []
    # After the first override ends, it is no longer shown.
    later = plan_json(roster, at + timedelta(hours=1, minutes=30))
    assert _ids(later["overrides"]) == [7]


def _ids(overrides: object) -> list[object]:
    assert isinstance(overrides, list)
    return [o["id"] for o in overrides]


def test_the_plan_is_printed_and_says_so_when_the_stored_overrides_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = free_port()  # nothing listens there: Postgres is "down"
    config = tmp_path / "hotline.yaml"
    config.write_text(
        "timezone: America/New_York\n"
        "ami: {username: hotline, secret_env: UNUSED}\n"
        f"database: {{dsn: 'postgresql://hotline@127.0.0.1:{closed}/hotline'}}\n"
        f"privacy: {{keys_file: {tmp_path}/keys}}\n"
        "queues: {crisis: {min_responders: 1}}\n"
        "responders: {r-1: {name: Ana, interface: PJSIP/1001, queues: {crisis: 0}}}\n"
        'shifts: [{name: day, days: daily, start: "08:00", end: "20:00", responders: [r-1]}]\n'
    )
    assert main(["plan", "-c", str(config), "--at", "2026-12-02T12:00", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["overrides_read"] is False
    assert plan["overrides_problem"] == UNAVAILABLE
    assert [m["responder"] for m in plan["queues"]["crisis"]] == ["r-1"]

    assert main(["plan", "-c", str(config), "--at", "2026-12-02T12:00"]) == 0
    out = capsys.readouterr().out
    assert "r-1" in out
    assert out.endswith(
        f"\nOverrides:\n  could not be read: {UNAVAILABLE}; this plan follows the roster alone\n"
    )


def test_an_on_override_calls_a_standby_responder_in_without_a_surge() -> None:
    at = datetime(2026, 12, 2, 12, 0, tzinfo=NY)
    until = at + timedelta(hours=2)
    roster = Roster(
        tz=NY,
        queues={
            "crisis": QueuePolicy("crisis", 1, standby=("r-sb",), standby_penalty=10),
            "youth": QueuePolicy("youth", 0),
        },
        responders={
            "r-1": Responder("r-1", "Ana", "PJSIP/1", "PJSIP/1", {"crisis": 0, "youth": 0}),
            "r-sb": Responder("r-sb", "Bo", "PJSIP/9", "PJSIP/9", {}),
        },
        shifts=(),
        exceptions=(),
    )
    called = replace(roster, overrides=(Override(1, "r-sb", at, until, ExceptionKind.ON, None),))
    assert plan_json(roster, at)["queues"] == {"crisis": [], "youth": []}
    assert plan_json(called, at)["queues"] == {
        "crisis": [
            {"responder": "r-sb", "interface": "PJSIP/9", "penalty": 10, "why": "override_on"}
        ],
        "youth": [],
    }
    # A later `off` override for that queue wins; an `on` override for all queues of someone
    # with queues of their own does not reach the queues they merely stand by for.
    off = Override(2, "r-sb", at, until, ExceptionKind.OFF, frozenset({"crisis"}))
    assert plan_json(replace(called, overrides=(*called.overrides, off)), at)["queues"] == {
        "crisis": [],
        "youth": [],
    }
    both = replace(
        called,
        queues={**called.queues, "night": QueuePolicy("night", 0, standby=("r-1",))},
        overrides=(Override(3, "r-1", at, until, ExceptionKind.ON, None),),
    )
    members = plan_json(both, at)["queues"]
    assert isinstance(members, dict)
    assert {queue: [m["responder"] for m in found] for queue, found in members.items()} == {
        "crisis": ["r-1"],
        "youth": ["r-1"],
        "night": [],
    }
