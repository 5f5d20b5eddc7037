"""`hotline coverage`, `check-config`'s warnings and `plan`'s reasons, called in-process: the exact
gaps of --json for a roster with known gaps, which forecast was used and why, and warnings that
leave the exit status 0."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hotline.cli import main
from hotline.core import staffing

ROSTER = """\
timezone: America/New_York
ami: {username: hotline, secret_file: /run/credentials/hotline.service/ami-secret}
queues:
  crisis: {min_responders: 1, sl_seconds: 20, sl_target: 0.7, wrapup_seconds: 60}
  youth: {min_responders: 1, requires: [youth-line], sl_target: 0.7}
  spanish: {min_responders: 0}
responders:
  r-ana: {name: Ana Ruiz, interface: PJSIP/1001, queues: {crisis: 0, youth: 0, spanish: 0},
          certifications: {youth-line: 2026-11-30}}
  r-ben: {name: Ben Ode, interface: PJSIP/1002, queues: {crisis: 0, youth: 0}}
shifts:
  - {name: day, days: daily, start: "08:00", end: "20:00", responders: [r-ana]}
  - {name: night, days: daily, start: "20:00", end: "08:00", responders: [r-ben]}
exceptions:
  - {responder: r-ben, from: "2026-11-30T23:00", until: "2026-12-01T01:30", kind: off}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def roster_file(tmp_path: Path) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER, encoding="utf-8")
    return path


def test_coverage_json_gives_exactly_the_known_gaps_worst_first_and_says_the_forecast(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        capsys, "coverage", "-c", str(roster_file), "--from", "2026-11-30T00:05", "--days", "2",
        "--json",
    )  # fmt: skip
    assert (status, err) == (0, "")
    shown: dict[str, Any] = json.loads(out)
    assert shown["from"] == "2026-11-30T00:00:00-05:00"
    assert shown["to"] == "2026-12-02T00:00:00-05:00"
    assert shown["forecast"] == {"source": "floor", "why": "no database configured"}
    # The floor forecast: 0.25 calls a slot, each 900 s of talk (and 60 s of wrap-up in
    # crisis): one responder answers 70 % within 20 s, the default 90 % takes two.
    low = staffing.required(0.25 / 900, 960, 20, 0.7, floor=1).agents
    high = staffing.required(0.25 / 900, 900, 20, 0.9, floor=1).agents
    assert (low, high) == (1, 2)
    assert shown["queues"]["crisis"]["needed"] == [low] * 192
    assert shown["queues"]["spanish"]["needed"] == [high] * 192
    gaps = [
        (g["queue"], g["from"], g["to"], g["short_of"], g["shortfall"], g["missing_hours"])
        for g in shown["gaps"]
    ]
    assert gaps == [
        # Ana's certification is valid through 30 November; Ben never held it.
        ("youth", "2026-11-30T20:00:00-05:00", "2026-12-02T00:00:00-05:00", "minimum", 1, 28),
        ("youth", "2026-11-30T00:00:00-05:00", "2026-11-30T08:00:00-05:00", "minimum", 1, 8),
        # Ben's time off across the month end.
        ("crisis", "2026-11-30T23:00:00-05:00", "2026-12-01T01:30:00-05:00", "minimum", 1, 2.5),
        # Only Ana serves spanish, by day: two needed, one or none there.
        ("spanish", "2026-11-30T00:00:00-05:00", "2026-12-02T00:00:00-05:00", "need", 2, 72),
    ]
    assert shown["queues"]["crisis"]["scheduled"][:4] == [1, 1, 1, 1]


def test_coverage_without_json_lists_the_gaps_and_the_forecast_source(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "coverage", "-c", str(roster_file), "--from", "2026-11-30")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == (
        "Coverage from 2026-11-30T00:00:00-05:00 to 2026-12-07T00:00:00-05:00"
        " (America/New_York), 15-minute slots"
    )
    assert lines[1] == "Forecast: floor (no database configured)"
    assert "crisis: minimum 1, scheduled 0 to 1, forecast need up to 1" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("  QUEUE"))
    assert lines[header - 1] == "4 gaps, worst first:"
    assert lines[header + 1].split() == [
        "youth", "Mon", "2026-11-30", "20:00", "-0500", "Mon", "2026-12-07", "00:00", "-0500",
        "minimum", "1", "148",
    ]  # fmt: skip


def test_coverage_falls_back_to_the_floor_forecast_when_the_database_does_not_answer(
    roster_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roster_file.write_text(
        ROSTER
        + 'database: {dsn: "postgresql://hotline@127.0.0.1:1/hotline", spool_dir: spool}\n'
        + "privacy: {keys_file: keys}\n",
        encoding="utf-8",
    )
    status, out, _ = run(capsys, "coverage", "-c", str(roster_file), "--days", "1", "--json")
    assert status == 0
    forecast = json.loads(out)["forecast"]
    assert forecast["source"] == "floor"
    assert forecast["why"].startswith("the database cannot be read: ")


@pytest.mark.parametrize("days", ["0", "36", "x", "1e3"])
def test_coverage_refuses_a_number_of_days_out_of_range(
    roster_file: Path, days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "coverage", "-c", str(roster_file), "--days", days)
    assert status == 2
    assert "is not 1 to 35 days" in err


def test_check_config_warns_of_lapsing_certifications_and_short_rests_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    soon = (now + timedelta(days=5)).date()
    later = (now + timedelta(days=30)).date()
    path = tmp_path / "roster.yaml"
    path.write_text(
        ROSTER.replace("youth-line: 2026-11-30", f"youth-line: {soon}, spanish: {later}").replace(
            "shifts:\n",
            'shifts:\n  - {name: early, days: daily, start: "06:00", end: "07:00",'
            " responders: [r-ana]}\n",
        )
        + "roster_checks: {certification_warn_days: 10, min_rest_hours: 12}\n",
        encoding="utf-8",
    )
    status, out, err = run(capsys, "check-config", "-c", str(path))
    assert status == 0
    assert out == f"{path}: OK (2 responders, 3 shifts, 3 queues)\n"
    warnings = err.splitlines()
    assert len(warnings) == 2, err
    lapse = warnings[0]
    assert lapse.startswith(
        f"{path}: warning: responders.r-ana.certifications.youth-line: lapses at "
    )
    assert lapse.endswith(" (roster_checks.certification_warn_days: 10)")
    # Ana works 06:00-07:00 and 08:00-20:00 every day: 1 h of rest, then 10 h.
    rest = warnings[1]
    assert rest.startswith(f"{path}: warning: responders.r-ana: 1 h 00 min of rest between ")
    # Two short rests a day: seven days of them, the last perhaps still to end.
    assert rest.endswith(
        ("(12 h); 14 times in the coming week", "(12 h); 13 times in the coming week")
    )


def test_plan_shows_who_is_not_added_for_want_of_a_certification(
    roster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "plan", "-c", str(roster_file), "--at", "2026-12-01T09:00")
    assert status == 0
    assert "  not added: r-ana lacks certification youth-line (lapsed 2026-12-01T00:00-05:00)" in (
        out.splitlines()
    )
    status, out, _ = run(capsys, "plan", "-c", str(roster_file), "--at", "2026-12-01T21:00")
    assert "  not added: r-ben lacks certification youth-line (not held)" in out.splitlines()


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("{min_rest_hours: -1}", "roster_checks.min_rest_hours: must be at least 0, got -1"),
        ("{certification_warn_days: 0}", "roster_checks.certification_warn_days: must be at"),
        ("{rest: 11}", "roster_checks.rest: unknown key"),
    ],
)
def test_check_config_refuses_bad_roster_checks_with_one_line(
    roster_file: Path, setting: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    roster_file.write_text(ROSTER + f"roster_checks: {setting}\n", encoding="utf-8")
    status, out, err = run(capsys, "check-config", "-c", str(roster_file))
    assert (status, out) == (78, "")
    (line,) = err.splitlines()
    assert line.startswith(f"{roster_file}: {problem}"), line
