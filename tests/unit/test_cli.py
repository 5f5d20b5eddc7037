"""The command line, called in-process: exit codes, what goes to stdout and stderr, and the
exact JSON of `plan --json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hotline.cli import main

ROSTER = """\
timezone: America/New_York
ami: {username: hotline, secret_file: /run/credentials/hotline.service/ami-secret}
queues:
  crisis: {min_responders: 2}
  youth: {min_responders: 0}
responders:
  r-ben: {name: Ben Ode, interface: PJSIP/1002, queues: {crisis: 1, youth: 0}}
  r-ana: {name: Ana Ruiz, interface: PJSIP/1001, queues: {crisis: 0}}
shifts:
  - {name: night, days: [fri, sat], start: "22:00", end: "06:00", responders: [r-ana, r-ben]}
  - {name: day, days: daily, start: "06:00", end: "22:00", responders: [r-ben]}
exceptions:
  - {responder: r-ben, from: "2026-12-24T18:00", until: "2026-12-26T06:00", kind: off}
"""


@pytest.fixture
def roster_file(tmp_path: Path) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER, encoding="utf-8")
    return path


@pytest.fixture
def broken_file(tmp_path: Path) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER.replace('end: "06:00"', 'end: "25:00"'), encoding="utf-8")
    return path


def test_check_config_reports_ok_with_counts(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # r-ben's 06:00-22:00 days leave 8 h of rest, which is allowed here: no warning.
    roster_file.write_text(ROSTER + "roster_checks: {min_rest_hours: 8}\n", encoding="utf-8")
    assert main(["check-config", "-c", str(roster_file)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{roster_file}: OK (2 responders, 2 shifts, 2 queues)\n"
    assert err == ""


def test_check_config_prints_each_problem_under_the_file_and_exits_78(
    broken_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(broken_file)]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{broken_file}: shifts[0].end: '25:00' is not a time (line 10)\n"


def test_a_missing_configuration_file_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.yaml"
    assert main(["check-config", "-c", str(absent)]) == 78
    assert capsys.readouterr().err == f"{absent}: cannot read the file: No such file or directory\n"


def test_plan_json_lists_members_by_responder_in_config_queue_order(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Saturday 2026-12-19, 03:00: Friday's night shift is on, the day shift is not.
    assert main(["plan", "-c", str(roster_file), "--at", "2026-12-19T03:00", "--json"]) == 0
    out = capsys.readouterr().out
    # The first version's contract, in its order: fields are only ever added after it.
    assert out.startswith(
        '{"at": "2026-12-19T03:00:00-05:00", "queues": {"crisis": ['
        '{"responder": "r-ana", "interface": "PJSIP/1001", "penalty": 0, "why": "shift"}, '
        '{"responder": "r-ben", "interface": "PJSIP/1002", "penalty": 1, "why": "shift"}], '
        '"youth": [{"responder": "r-ben", "interface": "PJSIP/1002", "penalty": 0, '
        '"why": "shift"}]}'
    )


def test_plan_json_applies_exceptions_and_keeps_empty_queues(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Christmas Day is a Friday; Ben is off from Christmas Eve until Saturday morning.
    assert main(["plan", "-c", str(roster_file), "--at", "2026-12-25T23:00", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["at"] == "2026-12-25T23:00:00-05:00"
    assert plan["queues"] == {
        "crisis": [{"responder": "r-ana", "interface": "PJSIP/1001", "penalty": 0, "why": "shift"}],
        "youth": [],
    }
    off = {"responder": "r-ben", "why": "exception_off", "lacking": []}
    assert plan["excluded"] == {"crisis": [off], "youth": [off]}
    assert plan["below_minimum"] == ["crisis"]
    # No database in this configuration: no overrides, and nothing failed to be read.
    assert (plan["overrides"], plan["overrides_read"]) == ([], True)
    assert plan["next_change"] == "2026-12-26T06:00:00-05:00"


def test_plan_reads_a_naive_time_skipped_by_dst_as_the_change_instant(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "-c", str(roster_file), "--at", "2026-03-08T02:30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["at"] == "2026-03-08T03:00:00-04:00"


def test_plan_takes_a_time_with_an_offset_as_given_and_shows_it_in_the_roster_zone(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "-c", str(roster_file), "--at", "2026-12-19T08:00Z", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["at"] == "2026-12-19T03:00:00-05:00"
    assert [m["responder"] for m in plan["queues"]["crisis"]] == ["r-ana", "r-ben"]


def test_plan_shows_a_table_a_staffing_warning_and_the_next_change(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "-c", str(roster_file), "--at", "2026-12-25T23:00"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "Plan at 2026-12-25T23:00:00-05:00 (America/New_York)\n"
        "\n"
        "crisis: 1 on duty (minimum 2)\n"
        "  RESPONDER  NAME      INTERFACE   PENALTY\n"
        "  r-ana      Ana Ruiz  PJSIP/1001  0\n"
        "  warning: crisis has 1 on duty, below its minimum of 2\n"
        "\n"
        "youth: 0 on duty (minimum 0)\n"
        "  (nobody)\n"
        "\n"
        "Next change: 2026-12-26T06:00:00-05:00 (in 7 h 00 min)\n"
    )


def test_plan_without_at_plans_for_now(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "-c", str(roster_file), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["queues"]) == {"crisis", "youth"}


def test_plan_with_an_unreadable_at_exits_2_with_a_clear_message(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "-c", str(roster_file), "--at", "Christmas"]) == 2
    err = capsys.readouterr().err
    assert "argument --at: 'Christmas' is not an ISO 8601 date and time" in err


def test_plan_with_a_broken_configuration_exits_78(
    broken_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "-c", str(broken_file), "--json"]) == 78
    assert capsys.readouterr().out == ""


def test_run_with_a_broken_configuration_exits_78_before_starting_anything(
    broken_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "-c", str(broken_file)]) == 78
    assert "shifts[0].end" in capsys.readouterr().err


def test_help_exits_0_and_describes_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("check-config", "plan", "run"):
        assert command in out


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_the_configuration_defaults_to_the_system_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", "--help"]) == 0
    assert "/etc/hotline/hotline.yaml" in capsys.readouterr().out
