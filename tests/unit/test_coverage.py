"""The coverage look-ahead and the roster's warnings, pure: hand-made rosters with known gaps
(a DST change, a month end, an override, a lapsed certification, a partial slot, a forecast
load), and the slot counts checked against `desired_at` on random rosters."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.core import staffing
from hotline.core.coverage import (
    SLOT_S,
    Gap,
    Lapsing,
    Target,
    coverage,
    lapsing,
    short_rests,
    slot_floor,
)
from hotline.core.forecast import SLOT, Forecast
from hotline.core.roster import (
    ExceptionKind,
    Override,
    QueuePolicy,
    Responder,
    Roster,
    RosterException,
    Shift,
    desired_at,
    next_change,
)

NY = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
EVERY_DAY = frozenset(range(7))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


def responder(rid: str, queues: dict[str, int], **certifications: datetime) -> Responder:
    return Responder(
        rid, rid.upper(), f"PJSIP/{rid}", f"PJSIP/{rid}", MappingProxyType(queues), certifications
    )


def gaps(roster: Roster, start: datetime, hours: int, **kwargs: object) -> list[tuple[object, ...]]:
    found = coverage(roster, start, hours * 4, **kwargs).gaps  # type: ignore[arg-type]
    return [_row(g) for g in found]


def _row(gap: Gap) -> tuple[object, ...]:
    return (gap.queue, gap.start.isoformat(), gap.end.isoformat(), gap.short_of, gap.shortfall)


def test_a_night_shift_over_the_spring_forward_change_leaves_no_gap_that_night_only() -> None:
    # 22:00-02:30 then 03:00-22:00 leaves 02:30-03:00 uncovered, except on 8 March 2026, when
    # New York's clocks skip from 02:00 to 03:00: the night shift's end moves to 03:00 EDT.
    roster = Roster(
        NY,
        {"crisis": QueuePolicy("crisis", 1)},
        {"a": responder("a", {"crisis": 0}), "b": responder("b", {"crisis": 0})},
        (
            Shift("night", EVERY_DAY, time(22), time(2, 30), ("a",)),
            Shift("day", EVERY_DAY, time(3), time(22), ("b",)),
        ),
        (),
    )
    assert gaps(roster, at(2026, 3, 7), 72) == [
        ("crisis", "2026-03-07T02:30:00-05:00", "2026-03-07T03:00:00-05:00", "minimum", 1),
        ("crisis", "2026-03-09T02:30:00-04:00", "2026-03-09T03:00:00-04:00", "minimum", 1),
    ]
    # 72 h of absolute time: 288 slots, though the local days hold 96 + 92 + 96 slots.
    assert coverage(roster, at(2026, 3, 7), 288).end == at(2026, 3, 10, 1)


def test_the_fall_back_change_repeats_an_hour_that_a_wall_clock_shift_covers_twice() -> None:
    # 1 November 2026 has 25 hours; a 00:00-06:00 shift then lasts 7 h and nobody is short.
    roster = Roster(
        NY,
        {"crisis": QueuePolicy("crisis", 1)},
        {"a": responder("a", {"crisis": 0}), "b": responder("b", {"crisis": 0})},
        (
            Shift("night", EVERY_DAY, time(0), time(6), ("a",)),
            Shift("day", EVERY_DAY, time(6), time(0), ("b",)),
        ),
        (),
    )
    result = coverage(roster, at(2026, 10, 31, 12), 48 * 4)
    assert result.gaps == ()
    assert set(result.queues["crisis"].scheduled) == {1}


def month_end_roster(overrides: tuple[Override, ...] = ()) -> Roster:
    """crisis: a by day, b by night; youth requires youth-line, which only a holds, through
    30 November 2026 (valid until 1 December 00:00 local)."""
    return Roster(
        NY,
        {
            "crisis": QueuePolicy("crisis", 1),
            "youth": QueuePolicy("youth", 1, requires=frozenset({"youth-line"})),
        },
        {
            "a": responder("a", {"crisis": 0, "youth": 0}, **{"youth-line": at(2026, 12, 1)}),
            "b": responder("b", {"crisis": 0, "youth": 0}),
        },
        (
            Shift("day", EVERY_DAY, time(8), time(20), ("a",)),
            Shift("night", EVERY_DAY, time(20), time(8), ("b",)),
        ),
        (
            # a takes 10 minutes off: the two slots it touches are not covered whole.
            RosterException(
                "a", at(2026, 12, 1, 12, 10), at(2026, 12, 1, 12, 20), ExceptionKind.OFF
            ),
        ),
        overrides,
    )


def test_an_override_over_a_month_end_and_a_lapsed_certification_give_their_gaps_worst_first() -> (
    None
):
    off = Override(
        7,
        "b",
        at(2026, 11, 30, 23),
        at(2026, 12, 1, 1, 30),
        ExceptionKind.OFF,
        frozenset({"crisis"}),
    )
    assert gaps(month_end_roster((off,)), at(2026, 11, 30), 48) == [
        # a's certification lapses at midnight, from the end of the day shift: 28 h.
        ("youth", "2026-11-30T20:00:00-05:00", "2026-12-02T00:00:00-05:00", "minimum", 1),
        # before the day shift b, who lacks the certification, is on duty but does not count
        ("youth", "2026-11-30T00:00:00-05:00", "2026-11-30T08:00:00-05:00", "minimum", 1),
        ("crisis", "2026-11-30T23:00:00-05:00", "2026-12-01T01:30:00-05:00", "minimum", 1),
        ("crisis", "2026-12-01T12:00:00-05:00", "2026-12-01T12:30:00-05:00", "minimum", 1),
    ]
    # Without the override, only the partial slots are short in crisis.
    crisis = [g for g in gaps(month_end_roster(), at(2026, 11, 30), 48) if g[0] == "crisis"]
    assert crisis == [
        ("crisis", "2026-12-01T12:00:00-05:00", "2026-12-01T12:30:00-05:00", "minimum", 1)
    ]


def test_an_override_on_for_one_queue_only_covers_that_queue() -> None:
    on = Override(
        1, "b", at(2026, 12, 1, 11), at(2026, 12, 1, 13), ExceptionKind.ON, frozenset({"crisis"})
    )
    later_off = Override(
        2, "b", at(2026, 12, 1, 12), at(2026, 12, 1, 12, 15), ExceptionKind.OFF, None
    )
    found = gaps(month_end_roster((on, later_off)), at(2026, 12, 1, 9), 6)
    # b covers a's ten minutes off, except 12:00-12:15, where the later-started override wins.
    assert [g for g in found if g[0] == "crisis"] == [
        ("crisis", "2026-12-01T12:00:00-05:00", "2026-12-01T12:15:00-05:00", "minimum", 1)
    ]


def test_a_forecast_load_beyond_the_minimum_is_a_gap_below_the_need_with_erlang_c_staffing() -> (
    None
):
    # Tuesday 1 December 2026, 10:00-10:15 local: weekday 1, slot 40, 12 calls of 10 min + 1 min
    # wrap-up expected; a alone is on duty.
    forecast = Forecast({"crisis": {(1, 40): 12.0}}, {"crisis": 660.0, "youth": 660.0}, 0.0)
    target = Target(sl_seconds=20, sl_target=0.9)
    result = coverage(month_end_roster(), at(2026, 12, 1, 9), 8, forecast, {"crisis": target})
    need = staffing.required(12 / 900, 660, 20, 0.9, floor=1).agents
    assert need > 5
    assert result.queues["crisis"].needed == (0, 0, 0, 0, need, 0, 0, 0)
    assert [_row(g) for g in result.gaps if g.queue == "crisis"] == [
        ("crisis", "2026-12-01T10:00:00-05:00", "2026-12-01T10:15:00-05:00", "need", need - 1)
    ]
    assert result.first_short("crisis", "need", at(2026, 12, 1, 9)) == at(2026, 12, 1, 10)
    assert result.first_short("crisis", "minimum", at(2026, 12, 1, 9)) is None


def test_a_stretch_below_the_minimum_splits_one_below_the_need_and_comes_first() -> None:
    forecast = Forecast({}, {"crisis": 660.0}, 30.0)  # a heavy load in every slot
    result = coverage(
        month_end_roster(), at(2026, 12, 1, 11), 8, forecast, {"crisis": Target(20, 0.9)}
    )
    need = staffing.required(30 / 900, 660, 20, 0.9, floor=1).agents
    crisis = [
        (g.start, g.end, g.short_of, g.shortfall, g.missing_hours)
        for g in result.gaps
        if g.queue == "crisis"
    ]
    assert crisis == [
        # a's ten minutes off: nobody, against the minimum of 1 and the need
        (at(2026, 12, 1, 12), at(2026, 12, 1, 12, 30), "minimum", need, 2 * need / 4),
        (at(2026, 12, 1, 11), at(2026, 12, 1, 12), "need", need - 1, 4 * (need - 1) / 4),
        (at(2026, 12, 1, 12, 30), at(2026, 12, 1, 13), "need", need - 1, 2 * (need - 1) / 4),
    ]


def test_a_responder_counts_for_a_slot_only_when_on_duty_for_the_whole_of_it() -> None:
    roster = Roster(
        NY,
        {"crisis": QueuePolicy("crisis", 0)},
        {"a": responder("a", {"crisis": 0})},
        (Shift("odd", EVERY_DAY, time(8, 5), time(9, 20), ("a",)),),
        (),
    )
    result = coverage(roster, at(2026, 12, 1, 8), 6)
    assert result.queues["crisis"].scheduled == (0, 1, 1, 1, 1, 0)
    # The window starts at the slot holding --from.
    assert coverage(roster, at(2026, 12, 1, 8, 7), 1).start == at(2026, 12, 1, 8)


# --- the slot counts against desired_at ------------------------------------------------------

# Windows of four days around DST changes: London's (29 March, 25 October), New York's (8 March,
# 1 November), Sydney's and Adelaide's (5 April, 4 October).
STARTS = [
    datetime(2026, month, day, tzinfo=UTC)
    for month, day in ((3, 28), (3, 6), (10, 30), (4, 3), (10, 2), (10, 23))
]
HOURS = st.integers(0, 23)


@st.composite
def rosters(draw: st.DrawFn) -> tuple[Roster, datetime]:
    # Adelaide: UTC+10:30 with DST, so its changes fall on the half hour of UTC.
    zones = [NY, SYDNEY, ZoneInfo("Europe/London"), ZoneInfo("Australia/Adelaide")]
    tz = draw(st.sampled_from(zones))
    ids = ["a", "b", "c", "d"]
    queues = {
        "crisis": QueuePolicy("crisis", 1),
        "youth": QueuePolicy("youth", 1, requires=frozenset({"y"})),
    }
    quarter = st.integers(0, 95).map(
        lambda n: time(n // 4, n % 4 * 15 + draw(st.sampled_from([0, 7])))
    )
    shifts = tuple(
        Shift(
            f"s{i}",
            frozenset(draw(st.sets(st.integers(0, 6), min_size=1))),
            draw(quarter),
            draw(quarter),
            tuple(draw(st.sets(st.sampled_from(ids), min_size=1))),
        )
        for i in range(draw(st.integers(1, 3)))
    )
    start = draw(st.sampled_from(STARTS))
    minutes = st.integers(0, 4 * 24 * 60).map(lambda m: start + timedelta(minutes=m))

    def window() -> tuple[datetime, datetime]:
        begin = draw(minutes)
        return begin, begin + timedelta(minutes=draw(st.integers(1, 36 * 60)))

    exceptions = []
    for _ in range(draw(st.integers(0, 3))):
        begin, end = window()
        kind = draw(st.sampled_from(list(ExceptionKind)))
        exceptions.append(RosterException(draw(st.sampled_from(ids)), begin, end, kind))
    overrides = []
    for oid in range(draw(st.integers(0, 3))):
        begin, end = window()
        kind = draw(st.sampled_from(list(ExceptionKind)))
        scope = draw(st.sampled_from([None, frozenset({"crisis"}), frozenset({"youth"})]))
        overrides.append(Override(oid, draw(st.sampled_from(ids)), begin, end, kind, scope))
    responders = {
        rid: responder(
            rid,
            {"crisis": 0, "youth": 1} if rid != "d" else {"youth": 0},
            **({"y": draw(minutes)} if draw(st.booleans()) else {}),
        )
        for rid in ids
    }
    return Roster(tz, queues, responders, shifts, tuple(exceptions), tuple(overrides)), start


@settings(max_examples=80, deadline=None)
@given(rosters())
def test_a_slot_counts_exactly_those_desired_at_its_start_and_at_every_change_within_it(
    case: tuple[Roster, datetime],
) -> None:
    roster, start = case
    slots = 4 * 24 * 4 + 8
    result = coverage(roster, start, slots)
    for slot in range(0, slots, 3):
        begin = start + slot * SLOT
        end = begin + SLOT
        whole = {queue: set(members) for queue, members in desired_at(roster, begin).items()}
        change = next_change(roster, begin)
        while change is not None and change < end:
            for queue, members in desired_at(roster, change).items():
                whole[queue] &= set(members)
            change = next_change(roster, change)
        for queue, covered in result.queues.items():
            assert covered.scheduled[slot] == len(whole[queue]), (queue, begin)


def test_slots_are_aligned_to_the_quarter_hour_in_every_zone() -> None:
    kathmandu = ZoneInfo("Asia/Kathmandu")  # UTC+05:45
    floor = slot_floor(datetime(2026, 12, 1, 10, 50, tzinfo=kathmandu))
    assert floor.astimezone(kathmandu).minute == 45
    assert int(floor.timestamp()) % SLOT_S == 0


# --- warnings ----------------------------------------------------------------------------------


def test_lapsing_lists_certifications_lapsing_within_the_period_soonest_first() -> None:
    roster = Roster(
        NY,
        {"crisis": QueuePolicy("crisis", 1)},
        {
            "a": responder("a", {}, youth=at(2026, 12, 10), spanish=at(2027, 1, 1)),
            "b": responder("b", {}, youth=at(2026, 12, 3), old=at(2026, 11, 1)),
        },
        (),
        (),
    )
    assert lapsing(roster, at(2026, 12, 1), timedelta(days=14)) == [
        Lapsing("b", "youth", at(2026, 12, 3)),
        Lapsing("a", "youth", at(2026, 12, 10)),
    ]
    # Lapsed at the instant itself; one lapsing at the end of the period is in it.
    assert lapsing(roster, at(2026, 12, 3), timedelta(days=7)) == [
        Lapsing("a", "youth", at(2026, 12, 10))
    ]


def test_short_rests_find_the_shortest_rest_of_each_responder_in_a_week() -> None:
    roster = Roster(
        NY,
        {"crisis": QueuePolicy("crisis", 1)},
        {rid: responder(rid, {"crisis": 0}) for rid in ("a", "b", "c")},
        (
            # a: a late shift on Monday, then an early one on Tuesday: 8 h of rest.
            Shift("late", frozenset({0}), time(14), time(22), ("a",)),
            Shift("early", frozenset({1}), time(6), time(14), ("a", "c")),
            # b: back to back, which is one stretch, then 12 h off every day.
            Shift("day", EVERY_DAY, time(8), time(14), ("b",)),
            Shift("evening", EVERY_DAY, time(14), time(20), ("b",)),
        ),
        (
            # c is also called in on Tuesday evening: 10 h after the early shift ends, 2 h of
            # rest, and again a day later (an exception is not weekly).
            RosterException("c", at(2026, 12, 1, 16), at(2026, 12, 1, 20), ExceptionKind.ON),
            # b takes an hour off in a shift: a break, not rest between shifts.
            RosterException("b", at(2026, 12, 2, 10), at(2026, 12, 2, 11), ExceptionKind.OFF),
        ),
    )
    found = short_rests(roster, at(2026, 11, 30), timedelta(hours=11))
    assert [(r.responder, r.end, r.next_start, r.count) for r in found] == [
        ("a", at(2026, 11, 30, 22), at(2026, 12, 1, 6), 1),
        ("c", at(2026, 12, 1, 14), at(2026, 12, 1, 16), 1),
    ]
    assert found[0].rest == timedelta(hours=8)
