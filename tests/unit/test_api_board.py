"""The board (hotline/core/board.py) from the live model member by member, the tokens' command and
their configuration."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hotline import cli
from hotline.config import ConfigError, parse_config
from hotline.core.access import match_token, token_hash
from hotline.core.board import build_board, schedule
from hotline.core.queuestate import QueueBoard

CONFIG = """
timezone: UTC
ami: {username: hotline, secret_env: UNUSED}
queues:
  crisis: {min_responders: 2}
  spanish: {}
responders:
  r-ana: {name: Ana, interface: PJSIP/1001, queues: {crisis: 0}}
  r-ben: {name: Ben, interface: PJSIP/1002, queues: {crisis: 0, spanish: 0}}
  r-cai: {name: Cai, interface: PJSIP/1003, queues: {crisis: 0}}
shifts:
  - {name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-ana, r-ben]}
  - {name: night, days: [daily], start: "20:00", end: "08:00", responders: [r-cai]}
"""
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WALL = 1_800_000_000.0
LIMITS = {"break": 900.0, "admin": None}


def _member(interface: str, name: str, **fields: str) -> dict[str, str]:
    return (
        {"Event": "QueueMember", "Queue": "crisis", "Location": interface, "Name": name}
        | {
            "Status": "1",
            "Paused": "0",
            "InCall": "0",
            "LastCall": "0",
        }
        | fields
    )


def test_the_board_shows_members_their_pauses_limits_and_coverage_and_no_caller_data() -> None:
    config = parse_config(CONFIG, Path("board.yaml"))
    live = QueueBoard({"crisis": 0.0, "spanish": 0.0})
    live.resync(
        [
            _member("PJSIP/1001", "r-ana"),
            _member(
                "PJSIP/1002",
                "r-ben",
                Paused="1",
                PausedReason="break",
                LastPause=str(int(WALL - 1000)),
            ),
            {"Event": "QueueEntry", "Queue": "crisis", "Uniqueid": "1.1", "Wait": "30"},
        ],
        WALL - 10,
    )
    live.feed(
        "QueueCallerJoin",
        {"Queue": "crisis", "Uniqueid": "1.2", "CallerIDNum": "5550104444"},
        WALL - 4,
    )
    # r-ana rings, then answers: her state and its start follow.
    live.feed(
        "QueueMemberStatus", {"Queue": "crisis", "Interface": "PJSIP/1001", "Status": "6"}, WALL - 3
    )
    plan = schedule(config.roster, NOON, frozenset())
    board = build_board(live.detail(WALL), plan, NOON, pause_limits=LIMITS, wall=WALL)

    assert "5550104444" not in json.dumps(board)
    assert "1.2" not in json.dumps(board)
    crisis = board["queues"][0]  # type: ignore[index]
    assert crisis["callers"] == {"waiting": 2, "longest_wait_s": 40, "waits_s": [40, 4]}
    assert crisis["members"] == [
        {"responder": "r-ana", "state": "ringing", "for_s": 3, "over_limit": False},
        {
            "responder": "r-ben",
            "state": "paused",
            "for_s": 1000,
            "over_limit": True,
            "paused_reason": "break",
            "paused_for_s": 1000,
        },
    ]
    assert (crisis["present"], crisis["min_responders"], crisis["covered"]) == (1, 2, False)
    assert crisis["scheduled_now"] == {"shift": ["r-ana", "r-ben"]}
    assert crisis["next_change"] == {"at": "2026-12-02T20:00:00+00:00", "responders": ["r-cai"]}
    assert board["overrides"] == []


def test_a_schedule_holds_until_the_plans_next_change_and_for_its_roster_only() -> None:
    roster = parse_config(CONFIG, Path("board.yaml")).roster
    plan = schedule(roster, NOON, frozenset())
    assert plan.holds(roster, frozenset(), NOON + timedelta(hours=7, minutes=59))
    assert not plan.holds(roster, frozenset(), NOON + timedelta(hours=8))
    assert not plan.holds(roster, frozenset({"crisis"}), NOON)
    assert not plan.holds(parse_config(CONFIG, Path("b.yaml")).roster, frozenset(), NOON)
    assert not plan.holds(roster, frozenset(), NOON - timedelta(seconds=1))


def test_hotline_token_prints_a_token_and_the_entry_that_admits_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["token", "--name", "sam", "--role", "supervisor"]) == 0
    out = capsys.readouterr().out
    token = re.search(r"^token: (\S+)$", out, re.M)
    entry = re.search(r"^http.tokens entry: (- .+)$", out, re.M)
    assert token is not None
    assert entry is not None
    assert len(token[1]) >= 40
    assert token[1] not in entry[1]
    config = parse_config(CONFIG + "http:\n  tokens:\n    " + entry[1] + "\n", Path("t.yaml"))
    holders = [(t.sha256, t) for t in config.http.tokens]
    found = match_token(token[1], holders)
    assert found is not None
    assert (found.name, found.role) == ("sam", "supervisor")
    assert match_token(token[1] + "x", holders) is None
    assert token[1] not in repr(config)
    assert cli.main(["token", "--name", "no name", "--role", "supervisor"]) == 2


@pytest.mark.parametrize(
    ("http", "problem"),
    [
        (
            "{tokens: [{name: a, role: viewer, sha256: AB}]}",
            "http.tokens[0].sha256",
        ),
        (
            "{tokens: [{name: a, role: boss, sha256: " + "a" * 64 + "}]}",
            "http.tokens[0].role",
        ),
        (
            "{tokens: [{name: a, role: viewer, sha256: "
            + "a" * 64
            + "}, {name: a, role: admin, sha256: "
            + "b" * 64
            + "}]}",
            "http.tokens[1].name: repeats an earlier name",
        ),
        (
            '{listen: "10.0.0.5:9470", tokens: [{name: a, role: viewer, sha256: '
            + token_hash("x").hex()
            + "}]}",
            "http.tls: is required when tokens are served beyond loopback",
        ),
    ],
)
def test_bad_token_settings_are_refused_naming_the_setting(http: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(CONFIG + f"http: {http}\n", Path("t.yaml"))
    assert any(problem in line for line in refused.value.problems), refused.value.problems
