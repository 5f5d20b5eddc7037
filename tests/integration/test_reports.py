"""`hotline report` and the forecast against a real Postgres holding five generated weeks of a
line in America/New_York (across the fall-back change of 2026-11-01): every figure the command
prints equals the one computed here, in plain Python over the generated records, with periods
cut here from the calendar; the CSV reads back with the csv module; the JSON is the same bytes
twice; the forecast equals the generated arrivals. Definitions: docs/reports.md."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from hotline.adapters.store import load_forecast, migrate
from hotline.cli import main
from hotline.config import load_config
from hotline.core.records import CallRecord, Outcome, PartnerResult
from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, local, wait_for
from tests.history import QUEUES, WRAPUP, History, config_file, generate, load
from tests.integration.conftest import Recorded
from tests.pg import PgCluster
from tests.prom import Prometheus

NY = ZoneInfo("America/New_York")
FIRST_DAY = date(2026, 10, 12)
DAYS = 35
SHORT_ABANDON_S = 5.0
# A pause reason a spreadsheet reader must get back whole: a comma, quotes, a line break.
ODD_REASON = 'lunch, "long"\nbreak'

Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class Line:
    history: History
    config: Path
    dsn: str


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    cluster = PgCluster()
    try:
        cluster.start()
    except Exception as exc:  # a failure with the reason, never a skip
        cluster.destroy()
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    try:
        cluster.create_database("hotline")
        dsn = cluster.dsn_for("hotline")
        history = generate(FIRST_DAY, DAYS, NY, calls_per_day=120)
        odd = history.pauses[0]
        history.pauses.append(
            replace(odd, interface="PJSIP/9999", reason=ODD_REASON, paused_by="hotline")
        )
        asyncio.run(_load(dsn, history))
        directory = tmp_path_factory.mktemp("reports")
        config = config_file(directory, "America/New_York", dsn)
        yield Line(history, config, dsn)
    finally:
        cluster.destroy()


async def _load(dsn: str, history: History) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await load(conn, history)
    finally:
        await conn.close()


def report(capsys: pytest.CaptureFixture[str], line: Line, *args: str) -> tuple[int, str, str]:
    status = main(["report", "-c", str(line.config), *args])
    out = capsys.readouterr()
    return status, out.out, out.err


# -- the independent computation ------------------------------------------------------------


def local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), NY).astimezone(UTC)


def calendar_periods(start: datetime, end: datetime, by: str) -> list[Interval]:
    """The periods from the calendar, one way or another than the code's: hours of UTC (New
    York's offsets are whole hours), local midnights of days, Mondays, first days of months."""
    edges: list[datetime]
    if by == "hour":
        first = start.replace(minute=0, second=0, microsecond=0)
        edges = [
            first + timedelta(hours=n) for n in range(int((end - first) / timedelta(hours=1)) + 2)
        ]
    else:
        day = start.astimezone(NY).date()
        if by == "week":
            day -= timedelta(days=day.weekday())
        if by == "month":
            day = day.replace(day=1)
        edges = []
        while not edges or edges[-1] < end:
            edges.append(local_midnight(day))
            if by == "day":
                day += timedelta(days=1)
            elif by == "week":
                day += timedelta(days=7)
            else:
                day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    periods = [(max(a, start), min(b, end)) for a, b in itertools.pairwise(edges)]
    return [(a, b) for a, b in periods if a < b]


def merged(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    return out


def overlap(intervals: list[Interval], other: list[Interval]) -> list[Interval]:
    out = []
    for a, b in intervals:
        for c, d in other:
            lo, hi = max(a, c), min(b, d)
            if lo < hi:
                out.append((lo, hi))
    return merged(out)


def seconds(intervals: list[Interval], period: Interval) -> float:
    return sum((b - a).total_seconds() for a, b in overlap(intervals, [period]))


def answered(call: CallRecord) -> bool:
    return call.outcome in (Outcome.ANSWERED, Outcome.TRANSFERRED)


def expected_rows(
    line: Line, start: datetime, end: datetime, by: str, group: str | None
) -> list[dict[str, object]]:
    history = line.history
    key: Callable[[CallRecord], str | None] = {
        None: lambda c: None,
        "queue": lambda c: c.queue,
        "campaign": lambda c: c.campaign or "",
        "responder": lambda c: c.answered_by,
    }[group]
    calls = [c for c in history.calls if c.entered_at is not None]
    if group == "responder":
        calls = [c for c in calls if c.answered_by is not None]
    keys: list[str | None]
    if group is None:
        keys = [None]
    elif group == "queue":
        keys = list(QUEUES)
    else:
        seen = {key(c) for c in calls if start <= c.entered_at < end}  # type: ignore[operator]
        if group == "responder":
            seen |= responders_at_work(history, start, end)
        keys = list(sorted(k for k in seen if k is not None))
    rows = []
    for period in calendar_periods(start, end, by):
        for k in keys:
            inside = [
                c
                for c in calls
                if period[0] <= c.entered_at < period[1] and key(c) == k  # type: ignore[operator]
            ]
            rows.append(
                {
                    "period_start": period[0].astimezone(NY).isoformat(),
                    "period_end": period[1].astimezone(NY).isoformat(),
                    **({group: k} if group else {}),
                    **call_figures(inside, group),
                    **time_figures(line, period, group, k),
                }
            )
    return rows


def responders_at_work(history: History, start: datetime, end: datetime) -> set[str | None]:
    """Responders in a queue, or talking, at some time in [start, end)."""
    return {
        s.responder
        for s in history.sessions
        if s.joined_at < end and s.left_at is not None and s.left_at > start
    } | {
        c.answered_by
        for c in history.calls
        if answered(c)
        and c.answered_at is not None
        and c.talk_s is not None
        and c.answered_at < end
        and c.answered_at + timedelta(seconds=c.talk_s) > start
    }


def call_figures(calls: list[CallRecord], group: str | None) -> dict[str, object]:
    left = [c for c in calls if c.outcome is not None]
    took = [c for c in calls if answered(c)]
    in_sl = [c for c in took if (c.wait_s or 0) <= QUEUES[c.queue]]
    abandoned = [c for c in calls if c.outcome is Outcome.ABANDONED]
    short = [c for c in abandoned if (c.wait_s or 0) <= SHORT_ABANDON_S]
    waits = sorted(c.wait_s or 0 for c in left)
    talks = [c.talk_s for c in took if c.talk_s is not None]
    figures: dict[str, object] = {
        "offered": len(calls),
        "answered": len(took),
        "answered_in_sl": len(in_sl),
        "service_level": len(in_sl) / len(left) if left else None,
        "service_level_excl_short_abandon": (
            len(in_sl) / (len(left) - len(short)) if len(left) > len(short) else None
        ),
        "asa_seconds": sum(c.wait_s or 0 for c in took) / len(took) if took else None,
        "p90_wait_seconds": waits[math.ceil(0.9 * len(waits)) - 1] if waits else None,
        "abandoned": len(abandoned),
        "short_abandoned": len(short),
        "rollover": sum(c.outcome in (Outcome.TIMEOUT, Outcome.ROLLOVER) for c in calls),
        "joinempty": sum(c.outcome is Outcome.JOINEMPTY for c in calls),
        "mean_talk_seconds": sum(talks) / len(talks) if talks else None,
        "partner": {r.value: sum(c.partner_result is r for c in calls) for r in PartnerResult},
    }
    if group == "responder":
        for name in (
            "offered",
            "service_level",
            "service_level_excl_short_abandon",
            "p90_wait_seconds",
            "abandoned",
            "short_abandoned",
            "rollover",
            "joinempty",
        ):
            figures[name] = None
        figures["partner"] = None
    return figures


def time_figures(
    line: Line, period: Interval, group: str | None, k: str | None
) -> dict[str, object]:
    if group == "campaign":
        return {
            "staffed_seconds": None,
            "paused_seconds": None,
            "occupancy": None,
            "pause_seconds_by_reason": None,
        }
    history = line.history

    def mine(queue: str, responder: str) -> bool:
        return group is None or (queue if group == "queue" else responder) == k

    staffed = paused = available = 0.0
    by_reason: dict[str, float] = defaultdict(float)
    for responder in {s.responder for s in history.sessions}:
        sessions = merged(
            [
                (s.joined_at, s.left_at)  # type: ignore[misc]
                for s in history.sessions
                if s.responder == responder and mine(s.queue, responder)
            ]
        )
        pauses = [
            p for p in history.pauses if p.responder == responder and mine(p.queue, responder)
        ]
        all_paused = overlap(merged([(p.started_at, p.ended_at) for p in pauses]), sessions)  # type: ignore[misc]
        staffed += seconds(sessions, period)
        paused += seconds(all_paused, period)
        available += seconds(sessions, period) - seconds(all_paused, period)
        for reason in {p.reason for p in pauses}:
            spans = merged([(p.started_at, p.ended_at) for p in pauses if p.reason == reason])  # type: ignore[misc]
            by_reason[reason] += seconds(overlap(spans, sessions), period)
    talk = sum(
        seconds([(c.answered_at, c.answered_at + timedelta(seconds=c.talk_s))], period)
        for c in history.calls
        if answered(c)
        and c.answered_at is not None
        and c.talk_s is not None
        and (group is None or (c.queue if group == "queue" else c.answered_by) == k)
    )
    return {
        "staffed_seconds": staffed,
        "paused_seconds": paused,
        "occupancy": talk / available if available > 0 else None,
        "pause_seconds_by_reason": {r: s for r, s in sorted(by_reason.items()) if s > 0},
    }


def assert_same(got: dict[str, object], want: dict[str, object], where: str) -> None:
    assert got.keys() == want.keys(), where
    for name, value in want.items():
        if name == "pause_seconds_by_reason" and value is not None:
            reported = got[name]
            assert isinstance(reported, dict), f"{where} {name}"
            shown = {r: s for r, s in reported.items() if s > 0}
            assert shown == pytest.approx(value, abs=2e-3), f"{where} {name}"
        elif isinstance(value, float) and not isinstance(value, bool):
            ratio = name in ("service_level", "service_level_excl_short_abandon", "occupancy")
            assert got[name] == pytest.approx(value, abs=2e-6 if ratio else 2e-3), f"{where} {name}"
        else:
            assert got[name] == value, f"{where} {name}"


# -- the tests ------------------------------------------------------------------------------

CASES = [
    # whole days across the fall-back change (2026-11-01 has 25 hours)
    ("2026-10-26", "2026-11-09", "day", None),
    ("2026-10-12", "2026-11-16", "day", "queue"),
    # a window that cuts its first and last period
    ("2026-10-14T10:30", "2026-11-11T17:00", "week", "campaign"),
    # hours around the change: the repeated 01:00 is a period of its own
    ("2026-10-31T18:00", "2026-11-01T06:00", "hour", "responder"),
    ("2026-10-31T18:00", "2026-11-01T06:00", "hour", None),
    ("2026-10-01", "2026-12-01", "month", "queue"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(map(str, case)))
def test_every_figure_equals_an_independent_computation(
    line: Line, capsys: pytest.CaptureFixture[str], case: tuple[str, str, str, str | None]
) -> None:
    start, end, by, group = case
    args = ["--from", start, "--to", end, "--by", by, "--format", "json"]
    status, out, err = report(capsys, line, *args, *(["--group", group] if group else []))
    assert (status, err) == (0, "")
    document = json.loads(out)
    window = [datetime.fromisoformat(t).replace(tzinfo=NY).astimezone(UTC) for t in (start, end)]
    want = expected_rows(line, window[0], window[1], by, group)
    assert document["timezone"] == "America/New_York"
    assert [(r["period_start"], r.get(group or "", None)) for r in document["rows"]] == [
        (r["period_start"], r.get(group or "", None)) for r in want
    ]
    assert sum(r["offered"] or r["answered"] for r in document["rows"]) > 0
    for got, expected in zip(document["rows"], want, strict=True):
        assert_same(got, expected, f"{got['period_start']} {group}={got.get(group or '')}")


def test_a_day_across_a_dst_change_is_25_hours_and_the_repeated_hour_is_a_period(
    line: Line, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = report(
        capsys, line, "--from", "2026-11-01", "--to", "2026-11-02", "--format", "json"
    )
    (day,) = json.loads(out)["rows"]
    assert (day["period_start"], day["period_end"]) == (
        "2026-11-01T00:00:00-04:00",
        "2026-11-02T00:00:00-05:00",
    )
    _, out, _ = report(
        capsys,
        line,
        "--from",
        "2026-11-01T00:00",
        "--to",
        "2026-11-01T03:00",
        "--by",
        "hour",
        "--format",
        "json",
    )
    starts = [r["period_start"] for r in json.loads(out)["rows"]]
    assert starts == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_csv_reads_back_with_the_csv_module_as_the_json_figures(
    line: Line, capsys: pytest.CaptureFixture[str]
) -> None:
    window = ["--from", "2026-10-12", "--to", "2026-11-16", "--by", "week", "--group", "queue"]
    _, out, err = report(capsys, line, *window, "--format", "csv")
    assert err == ""
    assert out.endswith("\r\n")  # RFC 4180 line ends
    quoted = ODD_REASON.replace('"', '""')  # RFC 4180: a quote doubled, in quotes
    assert f'"pause_seconds:{quoted}"' in out.partition("\r\n")[0]
    assert "\n" not in out.replace("\r\n", "").replace(quoted, "")
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    _, as_json, _ = report(capsys, line, *window, "--format", "json")
    document = json.loads(as_json)["rows"]
    assert len(rows) == len(document) == 5 * 2
    reason_column = f"pause_seconds:{ODD_REASON}"
    assert reason_column in rows[0]  # quoted in the header, read back whole
    for got, want in zip(rows, document, strict=True):
        for name, value in want.items():
            if name == "partner":
                for result, n in value.items():
                    assert int(got[f"partner_{result}"]) == n
            elif name == "pause_seconds_by_reason":
                for reason, s in value.items():
                    assert float(got[f"pause_seconds:{reason}"]) == s
            elif value is None:
                assert got[name] == ""
            elif isinstance(value, str):
                assert got[name] == value
            else:
                assert float(got[name]) == value  # a bare number: no unit in the cell


def test_json_is_the_same_bytes_every_time(line: Line, capsys: pytest.CaptureFixture[str]) -> None:
    args = (
        "--from",
        "2026-10-12",
        "--to",
        "2026-11-16",
        "--group",
        "responder",
        "--format",
        "json",
    )
    first = report(capsys, line, *args)
    assert first == report(capsys, line, *args)
    assert list(json.loads(first[1])) == ["from", "to", "by", "group", "timezone", "rows"]


def test_the_table_prints_only_the_report_and_errors_are_one_line(
    line: Line, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = report(capsys, line, "--from", "2026-10-12", "--to", "2026-10-14")
    assert (status, err) == (0, "")
    assert out.splitlines()[0].split()[:3] == ["period_start", "period_end", "offered"]
    assert len(out.splitlines()) == 3

    status, out, err = report(capsys, line, "--from", "2026-10-14", "--to", "2026-10-12")
    assert (status, out) == (2, "")
    assert err == "hotline report: --to must be after --from\n"

    status, out, err = report(capsys, line, "--from", "2026-10-14", "--to", "yesterday")
    assert (status, out) == (2, "")
    assert "is not an ISO 8601 date and time" in err

    unreachable = tmp_path / "away.yaml"
    unreachable.write_text(
        line.config.read_text().replace(line.dsn, "postgresql://hotline@127.0.0.1:9/hotline")
    )
    status = main(["report", "-c", str(unreachable), "--from", "2026-10-12", "--to", "2026-10-13"])
    out_err = capsys.readouterr()
    assert (status, out_err.out) == (1, "")
    assert out_err.err.startswith("hotline report: cannot reach the database")
    assert out_err.err.count("\n") == 1


def test_the_forecast_is_the_mean_of_the_trailing_weeks_per_slot(line: Line) -> None:
    config = load_config(line.config)
    now = local_midnight(FIRST_DAY + timedelta(days=DAYS)) + timedelta(hours=12)
    forecast = asyncio.run(load_forecast(line.dsn, config, now, weeks=4))
    since = local_midnight(FIRST_DAY + timedelta(days=DAYS - 28))
    counts: dict[tuple[str, int, int], int] = defaultdict(int)
    talks: dict[str, list[float]] = defaultdict(list)
    for call in line.history.calls:
        assert call.entered_at is not None
        if not since <= call.entered_at < local_midnight(FIRST_DAY + timedelta(days=DAYS)):
            continue
        local = call.entered_at.astimezone(NY)
        counts[(call.queue, local.weekday(), (local.hour * 60 + local.minute) // 15)] += 1
        if answered(call) and call.talk_s is not None:
            talks[call.queue].append(call.talk_s)
    for queue in QUEUES:
        assert forecast.handle_s[queue] == pytest.approx(
            sum(talks[queue]) / len(talks[queue]) + WRAPUP[queue]
        )
        for weekday in range(7):
            for slot in range(96):
                expected = counts.get((queue, weekday, slot), 0) / 4
                assert forecast.calls(queue, weekday, slot) == pytest.approx(
                    max(expected, config.reports.forecast_floor)
                ), (queue, weekday, slot)
    assert forecast.floor == config.reports.forecast_floor


# -- the same window from Prometheus ----------------------------------------------------------

# r-ana answers; r-away's phone rings and is never answered. crisis's service level is at 3 s,
# so that a caller who waits behind another call is answered outside it.
LIVE_ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 1, sl_seconds: 3}}
  spanish: {{min_responders: 0}}
responders:
  r-ana: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-away: {{name: Away, interface: "{local(8001)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: answering, days: [daily], start: "10:00", end: "10:10", responders: [r-ana]}}
  - {{name: ringing, days: [daily], start: "10:10", end: "10:20", responders: [r-away]}}
"""
ANSWERING = datetime(2026, 12, 2, 10, 0, 30, tzinfo=NY)
RINGING = datetime(2026, 12, 2, 10, 10, 30, tzinfo=NY)
# Bucket edges of the wait histogram, for the p90 (hotline/adapters/metrics/flow.py, and the
# queue's sl_seconds).
WAIT_EDGES = (3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, math.inf)


def since(series: str, start: float) -> str:
    """How much a counter grew from the instant `start` (Unix time) to the evaluation time:
    exact, where increase() extrapolates to its window's edges."""
    return f"({series} - {series} @ {start:.3f})"


def over_window(expr: str, start: float, recorded: dict[str, str]) -> str:
    """A recording rule's expression over exactly the window from `start`: the recorded series
    it uses inlined, and each rate() turned into the counter's growth since `start` (ratios are
    unchanged: both sides lose the same division by time)."""
    for name, body in recorded.items():
        expr = re.sub(rf"(?<![\w:]){re.escape(name)}(?![\w:])", f"({body})", expr)
    return re.sub(r"rate\(([^\[\]()]+)\[\d+m\]\)", lambda m: since(m[1], start), expr)


def settled(recorded: Recorded) -> Callable[[], Awaitable[list[dict[str, object]]]]:
    """A probe: the rows of calls that are over, all of them or none: closed, and if rolled
    over to the partner centre, with its result (which comes when the partner's call ends)."""

    async def probe() -> list[dict[str, object]]:
        rows = await asyncio.to_thread(recorded.rows)
        over = [
            r
            for r in rows
            if r["outcome"] and (r["partner_result"] or r["outcome"] not in ("timeout", "rollover"))
        ]
        return over if len(over) == len(rows) else []

    return probe


async def test_the_same_window_gives_the_same_figures_from_postgres_and_from_prometheus(
    recorded: Recorded,
    ami: AmiTestClient,
    start_daemon: StartDaemon,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    clock = ManualClock(ANSWERING)
    hotline = await start_daemon(LIVE_ROSTER, clock, extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 5, "r-ana on duty")
    async with Prometheus(target=f"127.0.0.1:{hotline.config.http.port}") as prom:
        await prom.wait_for_scrape()
        await prom.wait_for_data('hotline_queue_info{queue="crisis"}')
        await asyncio.sleep(1.5)  # one more scrape, at the counters' start
        started = datetime.now(UTC).timestamp()

        # Answered at once; a second caller behind the first, answered or rolled over once the
        # queue's 8 s are up; a short and a long abandon while r-away's phone rings; a caller
        # who outwaits the queue and whom the partner centre answers.
        await ami.call("988", caller="+15550300001", hold_s=30, talk_s=4)
        await asyncio.sleep(0.5)
        await ami.call("741", caller="+15550300002", hold_s=12, talk_s=2)
        await wait_for(settled(recorded), lambda rows: len(rows) == 2, 40, "two calls over")
        clock.set(RINGING)
        await wait_for(ami.names, lambda n: n == {"crisis": ["r-away"]}, 5, "r-away on duty")
        await ami.call("988", caller="+15550300003", hold_s=4)
        await ami.call("988", caller="+15550300004", hold_s=7)
        await ami.call("741", caller="+15550300005", hold_s=12)
        rows = await wait_for(settled(recorded), lambda rows: len(rows) == 5, 40, "all over")
        outcomes = {str(r["outcome"]) for r in rows}
        assert {"answered", "abandoned", "rollover"} <= outcomes, rows

        # Until Prometheus has scraped every call's outcome and partner result.
        partnered = sum(1 for r in rows if r["partner_result"])
        await wait_for(
            lambda: prom.values(
                'sum(hotline_queue_wait_seconds_count{queue="crisis"})'
                ' + 100 * sum(hotline_partner_calls_total{queue="crisis"})'
            ),
            lambda v: list(v.values()) == [len(rows) + 100 * partnered],
            15,
            "every leave scraped",
        )
        ended = datetime.now(UTC).timestamp()
        rules = {r["name"]: r["query"] for r in await prom.rules("record")}
        kpi = {
            name: over_window(
                expr,
                started,
                {"hotline:queue_leaves:rate30m": rules["hotline:queue_leaves:rate30m"]},
            )
            for name, expr in rules.items()
            if name.startswith(("hotline:queue_", "hotline:call_"))
            and name.endswith(("30m", "60m"))
        }

        async def value(expr: str) -> float:
            samples = await prom.query(expr, at=ended)
            crisis = [s for s in samples if s["metric"].get("queue") == "crisis"]
            assert len(crisis) == 1, (expr, samples)
            (sample,) = crisis
            return float(sample["value"][1])

        def increase(series: str) -> str:
            return f"sum by (queue) {since(series, started)}"

        prometheus = {name: await value(expr) for name, expr in kpi.items()}
        offered = await value(increase("hotline_queue_calls_offered_total"))
        partner = {
            result.value: await value(
                increase(f'hotline_partner_calls_total{{result="{result.value}"}}')
            )
            for result in PartnerResult
        }
        refused = await value(increase('hotline_queue_calls_exited_total{reason="refused"}'))

    config = tmp_path / "report.yaml"
    config.write_text(
        "ami: {username: hotline, secret_env: UNUSED}\n" + recorded.config + LIVE_ROSTER
    )
    args = ["report", "-c", str(config), "--by", "month", "--group", "queue", "--format", "json"]
    window_args = [
        "--from",
        datetime.fromtimestamp(started, UTC).isoformat(),
        "--to",
        datetime.fromtimestamp(ended, UTC).isoformat(),
    ]
    # As an operator runs it, in a process of its own: stdout is the report and nothing else.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotline",
        *args,
        *window_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert (process.returncode, err) == (0, b"")
    (row,) = [r for r in json.loads(out)["rows"] if r["queue"] == "crisis"]

    leaves = prometheus["hotline:queue_leaves:rate30m"]
    assert row["offered"] == offered == leaves == len(rows)
    assert row["answered"] == pytest.approx(
        prometheus["hotline:queue_answer_rate:ratio30m"] * leaves
    )
    assert row["abandoned"] == pytest.approx(
        prometheus["hotline:queue_abandon_rate:ratio30m"] * leaves
    )
    assert row["rollover"] == pytest.approx(
        prometheus["hotline:queue_rollover_rate:ratio30m"] * leaves
    )
    assert row["joinempty"] == refused == 0
    assert row["partner"] == {k: int(v) for k, v in partner.items()}
    assert row["service_level"] == pytest.approx(
        prometheus["hotline:queue_service_level:ratio30m"], abs=1e-6
    )
    assert row["service_level_excl_short_abandon"] == pytest.approx(
        prometheus["hotline:queue_service_level_excl_short_abandon:ratio30m"], abs=1e-6
    )
    assert row["asa_seconds"] == pytest.approx(
        prometheus["hotline:queue_asa_seconds:mean30m"], abs=1e-3
    )
    assert row["mean_talk_seconds"] == pytest.approx(
        prometheus["hotline:call_talk_seconds:mean60m"], abs=1e-3
    )
    # The p90: exact in the report, interpolated by Prometheus within the bucket that holds it.
    p90 = row["p90_wait_seconds"]
    upper = next(edge for edge in WAIT_EDGES if p90 <= edge)
    lower = max([0, *(edge for edge in WAIT_EDGES if edge < p90)])
    assert lower <= prometheus["hotline:queue_wait_seconds:p90_30m"] <= upper
