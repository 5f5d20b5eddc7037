"""The forecast and the report's periods and figures, pure: slots, means over weeks, the floor,
handle time with wrap-up; local hours, days, weeks and months across DST changes; the figures
made from counts per outcome (docs/reports.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hotline.core import kpis
from hotline.core.forecast import SLOT, SLOTS_PER_DAY, SlotHistory, build_forecast, slot_of
from hotline.core.records import Outcome, PartnerResult

NY = ZoneInfo("America/New_York")


def test_a_slot_is_the_local_weekday_and_quarter_hour() -> None:
    assert timedelta(minutes=15) == SLOT
    assert SLOTS_PER_DAY == 96
    assert slot_of(datetime(2026, 11, 30, 0, 0, tzinfo=NY)) == (0, 0)  # a Monday
    assert slot_of(datetime(2026, 11, 30, 0, 14, 59, tzinfo=NY)) == (0, 0)
    assert slot_of(datetime(2026, 11, 30, 0, 15, tzinfo=NY)) == (0, 1)
    assert slot_of(datetime(2026, 12, 6, 23, 59, tzinfo=NY)) == (6, 95)


def test_arrivals_are_the_mean_per_week_never_below_the_floor() -> None:
    history = [
        SlotHistory("crisis", 0, 40, offered=8, answered=6, talk_s=6 * 600.0),
        SlotHistory("crisis", 0, 41, offered=1, answered=0, talk_s=0.0),
        SlotHistory("youth", 4, 80, offered=4, answered=2, talk_s=2 * 300.0),
        SlotHistory("gone", 0, 40, offered=99, answered=99, talk_s=99.0),  # no longer configured
    ]
    forecast = build_forecast(
        history,
        weeks=4,
        floor=0.5,
        wrapup={"crisis": 60.0, "youth": 0.0, "quiet": 30.0},
        default_talk_s=900.0,
    )
    assert forecast.calls("crisis", 0, 40) == 2.0
    assert forecast.calls("crisis", 0, 41) == 0.5  # 0.25 a week: the floor
    assert forecast.calls("crisis", 1, 40) == 0.5  # no history
    assert forecast.calls("youth", 4, 80) == 1.0
    assert forecast.calls("quiet", 3, 3) == 0.5
    assert forecast.calls("gone", 0, 40) == 0.5
    assert forecast.handle_s == {"crisis": 660.0, "youth": 300.0, "quiet": 930.0}
    assert "gone" not in forecast.arrivals


def test_a_forecast_needs_at_least_a_week() -> None:
    with pytest.raises(ValueError, match="weeks"):
        build_forecast([], weeks=0, floor=0.0, wrapup={}, default_talk_s=1.0)


def hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def test_a_day_across_a_dst_change_is_23_or_25_hours() -> None:
    spring = kpis.periods(
        datetime(2026, 3, 7, tzinfo=NY), datetime(2026, 3, 10, tzinfo=NY), "day", NY
    )
    assert [hours(b.end - b.start) for b in spring] == [24, 23, 24]
    fall = kpis.periods(
        datetime(2026, 10, 31, tzinfo=NY), datetime(2026, 11, 3, tzinfo=NY), "day", NY
    )
    assert [hours(b.end - b.start) for b in fall] == [24, 25, 24]
    assert all(b.start.tzinfo is UTC for b in fall)


def test_a_repeated_hour_is_a_period_and_a_skipped_hour_is_none() -> None:
    fall = kpis.periods(
        datetime(2026, 11, 1, 0, 0, tzinfo=NY), datetime(2026, 11, 1, 3, 0, tzinfo=NY), "hour", NY
    )
    assert [b.start.astimezone(NY).isoformat() for b in fall] == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]
    spring = kpis.periods(
        datetime(2026, 3, 8, 0, 0, tzinfo=NY), datetime(2026, 3, 8, 4, 0, tzinfo=NY), "hour", NY
    )
    assert [b.start.astimezone(NY).hour for b in spring] == [0, 1, 3]


def test_weeks_start_on_monday_months_on_the_first_and_the_window_clips_both_ends() -> None:
    weeks = kpis.periods(
        datetime(2026, 11, 4, 12, 0, tzinfo=NY), datetime(2026, 11, 20, tzinfo=NY), "week", NY
    )
    assert [b.start.astimezone(NY).isoformat() for b in weeks] == [
        "2026-11-04T12:00:00-05:00",
        "2026-11-09T00:00:00-05:00",
        "2026-11-16T00:00:00-05:00",
    ]
    assert weeks[-1].end == datetime(2026, 11, 20, tzinfo=NY)
    months = kpis.periods(
        datetime(2026, 1, 31, tzinfo=NY), datetime(2026, 4, 1, tzinfo=NY), "month", NY
    )
    assert [b.start.astimezone(NY).date().isoformat() for b in months] == [
        "2026-01-31",
        "2026-02-01",
        "2026-03-01",
    ]
    assert kpis.periods(weeks[0].end, weeks[0].end, "day", NY) == []


def counts(outcome: Outcome | None, n: int, **more: float) -> kpis.OutcomeCounts:
    values: dict[str, float] = {
        "within_sl": 0,
        "within_short": 0,
        "wait_s": 0.0,
        "talked": 0,
        "talk_s": 0.0,
    } | more
    return kpis.OutcomeCounts(
        outcome=outcome,
        partner=None,
        calls=n,
        within_sl=int(values["within_sl"]),
        within_short=int(values["within_short"]),
        wait_s=values["wait_s"],
        talked=int(values["talked"]),
        talk_s=values["talk_s"],
    )


def test_the_figures_from_counts_per_outcome() -> None:
    rows = [
        counts(Outcome.ANSWERED, 8, within_sl=6, wait_s=80.0, talked=7, talk_s=7000.0),
        counts(Outcome.TRANSFERRED, 2, within_sl=2, wait_s=10.0, talked=1, talk_s=500.0),
        counts(Outcome.ABANDONED, 4, within_short=1, within_sl=3, wait_s=50.0),
        counts(Outcome.TIMEOUT, 1, wait_s=120.0),
        kpis.OutcomeCounts(Outcome.ROLLOVER, PartnerResult.ANSWERED, 2, 0, 0, 240.0, 0, 0.0),
        counts(Outcome.JOINEMPTY, 1),
        counts(Outcome.LEAVEEMPTY, 1),
        counts(None, 1),
    ]
    call = kpis.call_counts(rows, p90_wait_s=42.0)
    figures = kpis.figures(call, kpis.TimeCounts(3600.0, 600.0, 3000.0, 1500.0, {}), "queue")
    assert figures == {
        "offered": 20,
        "answered": 10,
        "answered_in_sl": 8,
        "service_level": 8 / 19,  # the open call has not left
        "service_level_excl_short_abandon": 8 / 18,
        "asa_seconds": 9.0,
        "p90_wait_seconds": 42.0,
        "abandoned": 4,
        "short_abandoned": 1,
        "rollover": 3,
        "joinempty": 1,
        "mean_talk_seconds": 7500.0 / 8,
        "staffed_seconds": 3600.0,
        "paused_seconds": 600.0,
        "occupancy": 0.5,
    }
    assert call.partner["answered"] == 2
    assert call.partner["busy"] == 0


def test_an_idle_period_has_no_ratios_and_a_responder_no_queue_figures() -> None:
    idle = kpis.figures(kpis.CallCounts(), kpis.TimeCounts(), None)
    assert idle["offered"] == 0
    assert idle["service_level"] is None
    assert idle["asa_seconds"] is None
    assert idle["occupancy"] is None
    per_responder = kpis.figures(kpis.CallCounts(answered=1), kpis.TimeCounts(), "responder")
    assert per_responder["answered"] == 1
    assert all(per_responder[name] is None for name in kpis.NOT_PER_RESPONDER)
    per_campaign = kpis.figures(kpis.CallCounts(), None, "campaign")
    assert all(per_campaign[name] is None for name in kpis.TIME_FIGURES)
