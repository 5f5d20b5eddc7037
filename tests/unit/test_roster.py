"""Properties and worked cases of the pure roster: shift occurrences across DST changes and
month ends, exceptions, desired members and the next change instant."""

from __future__ import annotations

import calendar
import functools
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.core.roster import (
    DesiredMember,
    ExceptionKind,
    Override,
    QueuePolicy,
    Responder,
    Roster,
    RosterException,
    Shift,
    Standing,
    desired_at,
    explain,
    next_change,
    on_duty,
    resolve_local,
)

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
SYDNEY = ZoneInfo("Australia/Sydney")
ZONES = (NEW_YORK, LONDON, SYDNEY)
EVERY_DAY = frozenset(range(7))
SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)
DAY_SECONDS = 86_400


def shift(
    start: time, end: time, *responders: str, days: frozenset[int] = EVERY_DAY, name: str = "s"
) -> Shift:
    return Shift(name=name, days=days, start=start, end=end, responders=responders)


def roster_of(
    tz: tzinfo, shifts: list[Shift], exceptions: list[RosterException] | None = None
) -> Roster:
    """A one-queue roster whose responders are everyone the shifts and exceptions name."""
    exceptions = exceptions or []
    ids = sorted({r for s in shifts for r in s.responders} | {e.responder for e in exceptions})
    responders = {
        rid: Responder(rid, rid.upper(), f"PJSIP/{rid}", f"PJSIP/{rid}", {"crisis": 0})
        for rid in ids
    }
    queues = {"crisis": QueuePolicy("crisis", 1)}
    return Roster(tz, queues, responders, tuple(shifts), tuple(exceptions))


def wall(instant: datetime, tz: tzinfo) -> datetime:
    """The wall clock in `tz` at `instant`; via UTC, because `astimezone` leaves a datetime
    already in `tz` untouched even when its wall time does not exist."""
    return instant.astimezone(UTC).astimezone(tz).replace(tzinfo=None)


def occurrence(tz: tzinfo, day: date, s: Shift) -> tuple[datetime, datetime]:
    end_day = day if s.end > s.start else day + timedelta(days=1)
    return resolve_local(day, s.start, tz), resolve_local(end_day, s.end, tz)


@functools.cache
def changes(tz: ZoneInfo, year: int) -> tuple[datetime, ...]:
    """The UTC instants of `year` at which `tz` changes its offset, found by scanning days and
    bisecting to the second, so the tests assume no offsets either."""
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        if day.astimezone(tz).utcoffset() != (day + timedelta(days=1)).astimezone(tz).utcoffset():
            low, high = 0, DAY_SECONDS
            while high - low > 1:
                middle = (low + high) // 2
                moved = (day + middle * SECOND).astimezone(tz).utcoffset()
                if moved == day.astimezone(tz).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(day + high * SECOND)
        day += timedelta(days=1)
    return tuple(found)


zones = st.sampled_from(ZONES)
# Hours just after midnight are where DST changes happen, so they get extra weight.
wall_times = st.builds(
    time,
    st.one_of(st.integers(0, 3), st.integers(0, 23)),
    st.one_of(st.sampled_from([0, 30]), st.integers(0, 59)),
)
responder_ids = st.sampled_from(["r0", "r1", "r2", "r3"])
day_sets = st.frozensets(st.integers(0, 6), min_size=1)


@st.composite
def near_a_change(draw: st.DrawFn, tz: ZoneInfo, within_days: int = 3) -> datetime:
    """A UTC instant at most `within_days` from one of the zone's DST changes."""
    change = draw(st.sampled_from(changes(tz, draw(st.integers(2024, 2030)))))
    seconds = within_days * DAY_SECONDS
    return change + draw(st.integers(-seconds, seconds)) * SECOND


@st.composite
def rosters_and_instants(draw: st.DrawFn) -> tuple[Roster, datetime]:
    """A small random roster and an instant near one of its zone's DST changes."""
    tz = draw(zones)
    at = draw(near_a_change(tz))
    shifts = draw(
        st.lists(
            st.builds(
                shift,
                wall_times,
                wall_times,
                responder_ids,
                responder_ids,
                days=day_sets,
            ),
            min_size=1,
            max_size=4,
        )
    )
    exceptions = []
    for _ in range(draw(st.integers(0, 3))):
        start = at + draw(st.integers(-2 * DAY_SECONDS, 2 * DAY_SECONDS)) * SECOND
        length = draw(st.integers(1, 2 * DAY_SECONDS)) * SECOND
        kind = draw(st.sampled_from(ExceptionKind))
        exceptions.append(RosterException(draw(responder_ids), start, start + length, kind))
    return roster_of(tz, shifts, exceptions), at


# --- resolve_local ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "at", "expected_utc"),
    [
        # New York springs forward at 02:00 EST: 02:30 does not exist and moves to 03:00 EDT.
        (NEW_YORK, date(2026, 3, 8), time(2, 30), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        (NEW_YORK, date(2026, 3, 8), time(2, 0), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        (NEW_YORK, date(2026, 3, 8), time(3, 0), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        (NEW_YORK, date(2026, 3, 8), time(1, 59), datetime(2026, 3, 8, 6, 59, tzinfo=UTC)),
        # New York falls back at 02:00 EDT: 01:30 happens twice and takes the EDT one.
        (NEW_YORK, date(2026, 11, 1), time(1, 30), datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
        (NEW_YORK, date(2026, 11, 1), time(2, 0), datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),
        (NEW_YORK, date(2026, 7, 1), time(12, 0), datetime(2026, 7, 1, 16, 0, tzinfo=UTC)),
        (LONDON, date(2026, 3, 29), time(1, 30), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        (LONDON, date(2026, 10, 25), time(1, 30), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # Sydney's DST runs across the new year: it starts in October and ends in April.
        (SYDNEY, date(2026, 10, 4), time(2, 30), datetime(2026, 10, 3, 16, 0, tzinfo=UTC)),
        (SYDNEY, date(2026, 4, 5), time(2, 30), datetime(2026, 4, 4, 15, 30, tzinfo=UTC)),
    ],
)
def test_local_time_resolves_to_the_documented_instant(
    tz: ZoneInfo, day: date, at: time, expected_utc: datetime
) -> None:
    assert resolve_local(day, at, tz) == expected_utc


def test_resolved_instant_shows_the_local_wall_clock_and_its_offset() -> None:
    assert resolve_local(date(2026, 3, 8), time(2, 30), NEW_YORK).isoformat() == (
        "2026-03-08T03:00:00-04:00"
    )
    assert resolve_local(date(2026, 11, 1), time(1, 30), NEW_YORK).isoformat() == (
        "2026-11-01T01:30:00-04:00"
    )


def test_samoa_skipping_a_whole_day_resolves_to_the_next_midnight() -> None:
    apia = ZoneInfo("Pacific/Apia")
    assert resolve_local(date(2011, 12, 30), time(12), apia) == datetime(
        2011, 12, 30, 10, 0, tzinfo=UTC
    )


@given(data=st.data(), tz=zones, at=wall_times)
def test_resolved_instant_is_the_first_whose_wall_clock_reaches_the_time(
    data: st.DataObject, tz: ZoneInfo, at: time
) -> None:
    day = wall(data.draw(near_a_change(tz, within_days=1)), tz).date()
    requested = datetime.combine(day, at)
    resolved = resolve_local(day, at, tz)
    assert wall(resolved, tz) >= requested
    assert wall(resolved - SECOND, tz) < requested
    assert resolved.utcoffset() == resolved.astimezone(tz).utcoffset()
    for fold in (0, 1):
        reading = requested.replace(tzinfo=tz, fold=fold)
        if wall(reading, tz) == requested:  # the wall time exists: it resolves to itself, first
            assert wall(resolved, tz) == requested
            assert resolved <= reading


# --- shift occurrences -----------------------------------------------------------------------


@given(
    data=st.data(), tz=zones, boundaries=st.lists(wall_times, min_size=2, max_size=4, unique=True)
)
def test_shifts_that_touch_in_local_time_leave_no_gap_and_no_overlap(
    data: st.DataObject, tz: ZoneInfo, boundaries: list[time]
) -> None:
    boundaries.sort()
    # Consecutive daily shifts covering the clock: whoever is on duty, exactly one of them is.
    shifts = [
        shift(start, boundaries[(i + 1) % len(boundaries)], f"r{i}", name=f"s{i}")
        for i, start in enumerate(boundaries)
    ]
    roster = roster_of(tz, shifts)
    change = data.draw(near_a_change(tz, within_days=0))
    probes = [data.draw(near_a_change(tz)) for _ in range(3)]
    for offset in (-1, 0, 1):
        day = wall(change, tz).date() + timedelta(days=offset)
        for boundary in boundaries:
            edge = resolve_local(day, boundary, tz)
            probes += [edge - SECOND, edge - MICROSECOND, edge, edge + SECOND]
    for probe in probes:
        assert len(on_duty(roster, probe)) == 1, probe


def test_night_shift_handing_over_to_the_morning_at_a_skipped_time_leaves_no_gap() -> None:
    # Friday night ends at 02:30 on Saturday; the Saturday shift starts at 02:30. On the night
    # New York springs forward (Sat 2027-03-13 -> Sun 03-14) 02:30 does not exist.
    night = shift(time(22), time(2, 30), "night", days=frozenset({calendar.SATURDAY}))
    morning = shift(time(2, 30), time(10), "morning", days=frozenset({calendar.SUNDAY}))
    roster = roster_of(NEW_YORK, [night, morning])
    handover = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert resolve_local(date(2027, 3, 14), time(2, 30), NEW_YORK) == handover
    assert on_duty(roster, handover - SECOND) == {"night"}
    assert on_duty(roster, handover) == {"morning"}
    assert next_change(roster, handover - SECOND) == handover


@pytest.mark.parametrize(
    ("night", "hours"),
    [(date(2026, 10, 31), 9), (date(2026, 3, 7), 7), (date(2026, 6, 6), 8)],
)
def test_overnight_shift_lasts_longer_or_shorter_across_a_dst_change(
    night: date, hours: int
) -> None:
    s = shift(time(22), time(6), "r0")
    start, end = occurrence(NEW_YORK, night, s)
    assert end - start == timedelta(hours=hours)
    roster = roster_of(NEW_YORK, [s])
    assert on_duty(roster, end - SECOND) == {"r0"}
    assert on_duty(roster, end) == frozenset()


def test_second_pass_through_the_repeated_hour_is_outside_a_shift_resolved_to_the_first() -> None:
    roster = roster_of(NEW_YORK, [shift(time(1), time(1, 30), "r0")])
    first_pass = datetime(2026, 11, 1, 1, 15, tzinfo=NEW_YORK)
    second_pass = datetime(2026, 11, 1, 1, 15, fold=1, tzinfo=NEW_YORK)
    assert on_duty(roster, first_pass) == {"r0"}
    assert on_duty(roster, second_pass) == frozenset()


def test_overnight_shift_keeps_responder_after_midnight_on_new_years_eve() -> None:
    s = shift(time(20), time(8), "r0", days=frozenset({calendar.THURSDAY}))
    roster = roster_of(LONDON, [s])  # 2026-12-31 is a Thursday
    assert on_duty(roster, datetime(2026, 12, 31, 19, 59, tzinfo=LONDON)) == frozenset()
    assert on_duty(roster, datetime(2027, 1, 1, 0, 0, tzinfo=LONDON)) == {"r0"}
    assert on_duty(roster, datetime(2027, 1, 1, 7, 59, tzinfo=LONDON)) == {"r0"}
    assert on_duty(roster, datetime(2027, 1, 1, 8, 0, tzinfo=LONDON)) == frozenset()


@given(
    tz=zones,
    year=st.integers(2024, 2030),
    month=st.integers(1, 12),
    start=st.builds(time, st.integers(12, 23), st.integers(0, 59)),
    end=st.builds(time, st.integers(0, 11), st.integers(0, 59)),
)
def test_overnight_shift_keeps_responder_after_midnight_across_month_and_year_ends(
    tz: ZoneInfo, year: int, month: int, start: time, end: time
) -> None:
    last = date(year, month, calendar.monthrange(year, month)[1])
    s = shift(start, end, "r0", days=frozenset({last.weekday()}))
    roster = roster_of(tz, [s])
    begin, finish = occurrence(tz, last, s)
    midnight = resolve_local(last + timedelta(days=1), time(0), tz)
    assert begin < midnight <= finish
    for inside in (begin, min(midnight, finish - SECOND), finish - SECOND):
        assert on_duty(roster, inside) == {"r0"}
    for outside in (begin - SECOND, finish):
        assert on_duty(roster, outside) == frozenset()


@given(data=st.data(), tz=zones, start=wall_times, end=wall_times, fraction=st.floats(0, 1))
def test_responder_is_on_duty_throughout_an_occurrence_and_not_at_its_end(
    data: st.DataObject, tz: ZoneInfo, start: time, end: time, fraction: float
) -> None:
    day = wall(data.draw(near_a_change(tz, within_days=1)), tz).date()
    s = shift(start, end, "r0", days=frozenset({day.weekday()}))
    roster = roster_of(tz, [s])
    begin, finish = occurrence(tz, day, s)
    assert begin <= finish
    if begin == finish:  # both ends fell in the same skipped hour: an empty occurrence
        assert on_duty(roster, begin) == frozenset()
        return
    inside = min(begin + (finish - begin) * fraction, finish - MICROSECOND)
    for probe in (begin, inside, finish - MICROSECOND):
        assert on_duty(roster, probe) == {"r0"}
    for probe in (begin - MICROSECOND, finish):
        assert on_duty(roster, probe) == frozenset()


def test_twenty_four_hour_shift_ends_when_the_next_one_starts() -> None:
    roster = roster_of(SYDNEY, [shift(time(8), time(8), "r0", days=frozenset({calendar.MONDAY}))])
    monday = datetime(2026, 6, 1, 8, tzinfo=SYDNEY)
    assert on_duty(roster, monday) == {"r0"}
    assert on_duty(roster, monday + timedelta(hours=23, minutes=59)) == {"r0"}
    assert on_duty(roster, monday + timedelta(hours=24)) == frozenset()


def test_an_instant_without_a_zone_is_refused() -> None:
    roster = roster_of(LONDON, [shift(time(8), time(16), "r0")])
    with pytest.raises(ValueError, match="timezone-aware"):
        on_duty(roster, datetime(2026, 6, 1, 12))  # noqa: DTZ001 - the point of the test


# --- exceptions ------------------------------------------------------------------------------


@given(data=st.data(), case=rosters_and_instants(), fraction=st.floats(0, 1))
def test_off_exception_wins_over_shifts_and_on_exceptions(
    data: st.DataObject, case: tuple[Roster, datetime], fraction: float
) -> None:
    roster, at = case
    rid = data.draw(responder_ids)
    length = data.draw(st.integers(1, DAY_SECONDS)) * SECOND
    on = RosterException(rid, at - length, at + length, ExceptionKind.ON)
    off = RosterException(rid, at, at + length, ExceptionKind.OFF)
    with_off = roster_of(roster.tz, list(roster.shifts), [*roster.exceptions, on, off])
    probe = min(at + length * fraction, at + length - MICROSECOND)
    assert rid not in on_duty(with_off, probe)
    assert rid not in desired_at(with_off, probe)["crisis"]


@given(data=st.data(), case=rosters_and_instants())
def test_on_exception_puts_responder_on_duty_whatever_the_shifts_say(
    data: st.DataObject, case: tuple[Roster, datetime]
) -> None:
    roster, at = case
    rid = data.draw(responder_ids)
    if any(e.kind is ExceptionKind.OFF and e.responder == rid for e in roster.exceptions):
        return  # an off exception may cover `at`; that case is the test above
    on = RosterException(rid, at, at + SECOND, ExceptionKind.ON)
    assert rid in on_duty(roster_of(roster.tz, list(roster.shifts), [*roster.exceptions, on]), at)


def test_on_exception_adds_responder_to_all_its_queues() -> None:
    start = datetime(2026, 12, 24, 18, tzinfo=NEW_YORK)
    ana = Responder("r-ana", "Ana", "PJSIP/1001", "PJSIP/1001", {"crisis": 0, "youth": 2})
    roster = Roster(
        NEW_YORK,
        {"crisis": QueuePolicy("crisis", 1), "youth": QueuePolicy("youth", 1)},
        {"r-ana": ana},
        (),
        (RosterException("r-ana", start, start + timedelta(hours=1), ExceptionKind.ON),),
    )
    desired = desired_at(roster, start)
    assert desired["crisis"]["r-ana"].penalty == 0
    assert desired["youth"]["r-ana"].penalty == 2
    assert desired_at(roster, start + timedelta(hours=1)) == {"crisis": {}, "youth": {}}


# --- desired members -------------------------------------------------------------------------


def test_desired_members_carry_interface_state_interface_and_penalty_per_queue() -> None:
    responders = {
        "r-ana": Responder("r-ana", "Ana", "PJSIP/1001", "PJSIP/1001", {"crisis": 0, "youth": 3}),
        "r-ben": Responder(
            "r-ben", "Ben", "Local/1002@responders/n", "PJSIP/1002", {"crisis": 1, "gone": 0}
        ),
        "r-cy": Responder("r-cy", "Cy", "PJSIP/1003", "PJSIP/1003", {"crisis": 0}),
    }
    queues = {
        "crisis": QueuePolicy("crisis", 2),
        "youth": QueuePolicy("youth", 1),
        "text": QueuePolicy("text", 1),
    }
    day = shift(time(8), time(16), "r-ana", "r-ben")
    roster = Roster(LONDON, queues, responders, (day,), ())
    desired = desired_at(roster, datetime(2026, 5, 4, 9, tzinfo=LONDON))
    assert desired == {
        "crisis": {
            "r-ana": DesiredMember("r-ana", "PJSIP/1001", "PJSIP/1001", 0),
            "r-ben": DesiredMember("r-ben", "Local/1002@responders/n", "PJSIP/1002", 1),
        },
        "youth": {"r-ana": DesiredMember("r-ana", "PJSIP/1001", "PJSIP/1001", 3)},
        "text": {},
    }


# --- next change -----------------------------------------------------------------------------


@given(case=rosters_and_instants(), fractions=st.lists(st.floats(0, 1), max_size=5))
def test_next_change_is_strictly_after_and_nothing_changes_before_it(
    case: tuple[Roster, datetime], fractions: list[float]
) -> None:
    roster, at = case
    change = next_change(roster, at)
    assert change is not None  # every generated shift has days and responders
    assert change > at
    duty = on_duty(roster, at)
    for fraction in [*fractions, 1.0]:
        probe = min(at + (change - at) * fraction, change - MICROSECOND)
        assert on_duty(roster, probe) == duty


@given(case=rosters_and_instants())
def test_next_change_lands_on_an_occurrence_or_exception_boundary(
    case: tuple[Roster, datetime],
) -> None:
    roster, at = case
    change = next_change(roster, at)
    assert change is not None
    edges = {e.start for e in roster.exceptions} | {e.end for e in roster.exceptions}
    first_day = wall(at, roster.tz).date() - timedelta(days=1)
    for offset in range(10):
        day = first_day + timedelta(days=offset)
        for s in roster.shifts:
            if day.weekday() in s.days:
                edges.update(occurrence(roster.tz, day, s))
    assert change == min(edge for edge in edges if edge > at)


def test_next_change_after_a_shift_start_is_its_end() -> None:
    roster = roster_of(NEW_YORK, [shift(time(22), time(6), "r0", days=frozenset({4}))])
    start = datetime(2026, 10, 30, 22, tzinfo=NEW_YORK)  # a Friday
    assert next_change(roster, start - SECOND) == start
    assert next_change(roster, start) == datetime(2026, 10, 31, 6, tzinfo=NEW_YORK)
    assert next_change(roster, datetime(2026, 10, 31, 6, tzinfo=NEW_YORK)) == start + timedelta(
        days=7
    )


def test_next_change_is_none_when_nothing_lies_ahead() -> None:
    past = datetime(2020, 1, 1, tzinfo=UTC)
    exception = RosterException("r0", past, past + SECOND, ExceptionKind.OFF)
    assert next_change(roster_of(LONDON, [], [exception]), datetime(2026, 1, 1, tzinfo=UTC)) is None
    assert next_change(roster_of(LONDON, []), datetime(2026, 1, 1, tzinfo=UTC)) is None


# --- overrides, certifications, surges ---------------------------------------------------------

NOON = datetime(2026, 12, 1, 12, tzinfo=LONDON)
HOUR = timedelta(hours=1)


def staffed(
    *,
    overrides: tuple[Override, ...] = (),
    certifications: dict[str, datetime] | None = None,
    requires: frozenset[str] = frozenset(),
    standby: tuple[str, ...] = (),
) -> Roster:
    """Ana on a day shift in crisis and youth; Ben (crisis, youth) on no shift; Cy on call."""
    responders = {
        "r-ana": Responder(
            "r-ana", "Ana", "PJSIP/1001", "PJSIP/1001", {"crisis": 0, "youth": 2},
            certifications or {},
        ),
        "r-ben": Responder("r-ben", "Ben", "PJSIP/1002", "PJSIP/1002", {"crisis": 1, "youth": 1}),
        "r-cy": Responder("r-cy", "Cy", "PJSIP/1003", "PJSIP/1003", {}),
    }  # fmt: skip
    queues = {
        "crisis": QueuePolicy("crisis", 1, standby=standby, standby_penalty=7),
        "youth": QueuePolicy("youth", 1, requires=requires),
    }
    day = shift(time(8), time(16), "r-ana")
    return Roster(LONDON, queues, responders, (day,), (), overrides)


def override(
    rid: str, kind: ExceptionKind, start: datetime, end: datetime, *queues: str, oid: int = 1
) -> Override:
    return Override(oid, rid, start, end, kind, frozenset(queues) if queues else None)


def members(
    roster: Roster, at: datetime, surging: frozenset[str] = frozenset()
) -> dict[str, set[str]]:
    return {q: set(m) for q, m in desired_at(roster, at, surging).items()}


def test_an_off_override_takes_a_scheduled_responder_out_of_the_queues_it_names_until_its_end() -> (
    None
):
    off = override("r-ana", ExceptionKind.OFF, NOON, NOON + HOUR, "crisis")
    roster = staffed(overrides=(off,))
    assert members(roster, NOON - SECOND) == {"crisis": {"r-ana"}, "youth": {"r-ana"}}
    assert members(roster, NOON) == {"crisis": set(), "youth": {"r-ana"}}
    assert members(roster, NOON + HOUR) == {"crisis": {"r-ana"}, "youth": {"r-ana"}}
    assert next_change(roster, NOON) == NOON + HOUR


def test_an_on_override_puts_an_unscheduled_responder_on_duty_in_every_queue_of_theirs() -> None:
    on = override("r-ben", ExceptionKind.ON, NOON, NOON + HOUR)
    roster = staffed(overrides=(on,))
    assert members(roster, NOON)["crisis"] == {"r-ana", "r-ben"}
    assert members(roster, NOON)["youth"] == {"r-ana", "r-ben"}
    assert desired_at(roster, NOON)["crisis"]["r-ben"].penalty == 1
    assert members(roster, NOON + HOUR)["crisis"] == {"r-ana"}


def test_of_two_overrides_the_later_started_one_wins_and_beats_the_exceptions() -> None:
    off = override("r-ana", ExceptionKind.OFF, NOON - HOUR, NOON + HOUR, oid=1)
    on = override("r-ana", ExceptionKind.ON, NOON, NOON + HOUR, "youth", oid=2)
    roster = staffed(overrides=(on, off))
    assert members(roster, NOON - SECOND) == {"crisis": set(), "youth": set()}
    assert members(roster, NOON) == {"crisis": set(), "youth": {"r-ana"}}
    standings = explain(roster, NOON)
    assert {s.responder: s.why for s in standings["crisis"]}["r-ana"] == "override_off"
    assert {s.responder: s.why for s in standings["youth"]}["r-ana"] == "override_on"
    exception = RosterException("r-ana", NOON - HOUR, NOON + HOUR, ExceptionKind.OFF)
    with_exception = Roster(
        roster.tz, roster.queues, roster.responders, roster.shifts, (exception,), (on,)
    )
    assert members(with_exception, NOON)["youth"] == {"r-ana"}


def test_a_queue_that_requires_a_certification_takes_only_holders_until_it_lapses() -> None:
    lapse = NOON + HOUR
    roster = staffed(requires=frozenset({"youth-line"}), certifications={"youth-line": lapse})
    assert members(roster, lapse - SECOND)["youth"] == {"r-ana"}
    assert members(roster, lapse)["youth"] == set()
    assert members(roster, lapse)["crisis"] == {"r-ana"}  # crisis requires nothing
    assert next_change(roster, NOON) == lapse
    youth = {s.responder: s for s in explain(roster, lapse)["youth"]}
    assert youth["r-ana"] == Standing("r-ana", None, "certification", ("youth-line",))
    # Ben lacks it too, but is not on duty: that is why he is out.
    assert youth["r-ben"].why == "not_scheduled"
    # An override cannot put anyone into a queue whose certification they lack.
    on = override("r-ben", ExceptionKind.ON, NOON, NOON + HOUR)
    gated = staffed(overrides=(on,), requires=frozenset({"youth-line"}))
    assert members(gated, NOON)["youth"] == set()


def test_standby_responders_join_a_surging_queue_with_the_standby_penalty_unless_off() -> None:
    roster = staffed(standby=("r-cy", "r-ana"))
    assert members(roster, NOON)["crisis"] == {"r-ana"}
    surging = desired_at(roster, NOON, frozenset({"crisis"}))["crisis"]
    assert set(surging) == {"r-ana", "r-cy"}
    assert surging["r-cy"] == DesiredMember("r-cy", "PJSIP/1003", "PJSIP/1003", 7)
    assert surging["r-ana"].penalty == 0  # already rostered: keeps her own penalty
    assert {s.responder: s.why for s in explain(roster, NOON, frozenset({"crisis"}))["crisis"]} == {
        "r-ana": "shift", "r-ben": "not_scheduled", "r-cy": "surge",
    }  # fmt: skip
    off = override("r-cy", ExceptionKind.OFF, NOON, NOON + HOUR)
    assert members(staffed(standby=("r-cy",), overrides=(off,)), NOON, frozenset({"crisis"})) == {
        "crisis": {"r-ana"}, "youth": {"r-ana"},
    }  # fmt: skip
