"""The coverage look-ahead, pure: for every 15-minute slot of a window and every queue, how many
responders the roster schedules, against the queue's minimum and against what the forecast load
requires by Erlang C; the shortfalls merged into gaps, worst first. Also the roster's warnings
that look ahead: certifications about to lapse, and too little rest between a responder's shifts
(docs/staffing.md).

Slots are 15 minutes of absolute time on a grid aligned to the quarter hour (every zone's offset
is a whole number of quarter hours, so the grid is the local one too). A responder counts for a
slot only when on duty in that queue for the whole slot: one who leaves at 08:10 does not cover
08:00-08:15, so a partial slot shows as a gap rather than hiding one.

Fast by construction: each responder's time on duty over the window is computed once, as
intervals, from the shift occurrences, exceptions, overrides and certification lapses, and added
to per-queue difference arrays; responders who share their shifts and have no exception or
override of their own share that work. `desired_at` is never called per slot.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Final, Literal, TypeVar

from hotline.core import staffing
from hotline.core.forecast import SLOT, Forecast, slot_of
from hotline.core.roster import (
    ExceptionKind,
    Override,
    Roster,
    RosterException,
    resolve_local,
)

SLOT_S: Final = int(SLOT.total_seconds())
# What a queue's slot is short of: its `min_responders` ("minimum"), or what the forecast load
# requires ("need"), which a slot may be short of with its minimum met. Worst first.
ShortOf = Literal["minimum", "need"]
SHORT_OF: Final[tuple[ShortOf, ...]] = ("minimum", "need")

_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)
_EPOCH_DAY: Final = date(1970, 1, 1).toordinal()
# Intervals are whole POSIX seconds: comparisons and arithmetic on ints, not datetimes.
Interval = tuple[int, int]
SlotRange = tuple[int, int]  # slots [k0, k1) of the window
_R = TypeVar("_R", RosterException, Override)


@dataclass(frozen=True, slots=True)
class Target:
    """A queue's service level: the `sl_target` share of calls answered within `sl_seconds`."""

    sl_seconds: float
    sl_target: float


@dataclass(frozen=True, slots=True)
class QueueCoverage:
    queue: str
    minimum: int  # min_responders
    scheduled: tuple[int, ...]  # per slot: responders on duty in the queue for the whole slot
    needed: tuple[int, ...]  # per slot: what Erlang C requires for the forecast load (0: none)


@dataclass(frozen=True, slots=True)
class Gap:
    """Consecutive slots of one queue short of the same thing."""

    queue: str
    start: datetime  # aware, the first short slot's start
    end: datetime  # aware, the last short slot's end
    short_of: ShortOf  # what each of its slots is short of
    shortfall: int  # the most responders missing in one of its slots
    # Responders missing times the time they are missing for, summed over the slots: the
    # measure of how bad a gap is (two missing for an hour is as bad as one for two hours).
    missing_hours: float


@dataclass(frozen=True, slots=True)
class Coverage:
    start: datetime  # aware (UTC), the first slot's start
    slots: int
    queues: Mapping[str, QueueCoverage]  # every queue of the roster, in roster order
    # Worst first: below the minimum before below the need, then most responder-hours missing,
    # then earliest, then by queue.
    gaps: tuple[Gap, ...]

    @property
    def end(self) -> datetime:
        return self.start + self.slots * SLOT

    def slot_start(self, slot: int) -> datetime:
        return self.start + slot * SLOT

    def first_short(self, queue: str, short_of: ShortOf, after: datetime) -> datetime | None:
        """The start of the first slot of `queue` that ends after `after` and is short in the
        sense of `short_of`: below the minimum, or below the forecast need (which a slot
        below the minimum may be too); None if there is none in the window."""
        covered = self.queues[queue]
        first = max(0, int((after - self.start).total_seconds()) // SLOT_S)
        for slot in range(first, self.slots):
            scheduled = covered.scheduled[slot]
            limit = covered.minimum if short_of == "minimum" else covered.needed[slot]
            if scheduled < limit:
                return self.slot_start(slot)
        return None


def slot_floor(at: datetime) -> datetime:
    """The start of the slot holding `at`, in UTC."""
    seconds = int(at.timestamp())
    return datetime.fromtimestamp(seconds - seconds % SLOT_S, UTC)


def coverage(
    roster: Roster,
    start: datetime,
    slots: int,
    forecast: Forecast | None = None,
    targets: Mapping[str, Target] | None = None,
) -> Coverage:
    """Coverage of `slots` slots from the slot holding `start` (aware). Without a forecast, or
    for a queue without a target, nothing is needed beyond the minimum."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    first = slot_floor(start)
    lo = int(first.timestamp())
    hi = lo + slots * SLOT_S
    # Difference arrays per set of queues that responders count in together (most responders
    # of a centre share a few such sets), added into each queue's at the end.
    shared: dict[tuple[str, ...], list[int]] = {}
    for ranges, together, last in _duty_ranges(roster, lo, hi, slots):
        diff = shared.get(together)
        if diff is None:
            diff = shared[together] = [0] * (slots + 1)
        if last == slots:
            for k0, k1 in ranges:
                diff[k0] += 1
                diff[k1] -= 1
            continue
        # A certification lapses within the window: only the slots that end by then count.
        for k0, k1 in ranges:
            if k0 < last:
                diff[k0] += 1
                diff[k1 if k1 < last else last] -= 1
    diffs = {queue: [0] * (slots + 1) for queue in roster.queues}
    for together, diff in shared.items():
        steps = [(slot, step) for slot, step in enumerate(diff) if step]
        for queue in together:
            into = diffs[queue]
            for slot, step in steps:
                into[slot] += step
    needs = _needs(roster, first, slots, forecast, targets or {})
    queues: dict[str, QueueCoverage] = {}
    for name, policy in roster.queues.items():
        running, scheduled = 0, []
        for step in diffs[name][:slots]:
            running += step
            scheduled.append(running)
        queues[name] = QueueCoverage(name, policy.min_responders, tuple(scheduled), needs[name])
    gaps = sorted(
        (gap for covered in queues.values() for gap in _gaps(covered, first, roster.tz)),
        key=lambda g: (SHORT_OF.index(g.short_of), -g.missing_hours, g.start, g.queue),
    )
    return Coverage(first, slots, queues, tuple(gaps))


def _gaps(covered: QueueCoverage, first: datetime, tz: tzinfo) -> Iterable[Gap]:
    """Maximal runs of consecutive slots short of the same thing: a stretch below the minimum
    inside a longer one below the need splits it in three."""
    run: list[int] = []  # shortfalls of the slots of the gap under way
    kind: ShortOf | None = None
    begun = 0
    for slot, (scheduled, needed) in enumerate(zip(covered.scheduled, covered.needed, strict=True)):
        short = max(covered.minimum, needed) - scheduled
        now: ShortOf | None = None
        if short > 0:
            now = "minimum" if scheduled < covered.minimum else "need"
        if now != kind:
            if kind is not None:
                yield _gap(covered.queue, first + begun * SLOT, run, kind, tz)
            run, kind, begun = [], now, slot
        if now is not None:
            run.append(short)
    if kind is not None:
        yield _gap(covered.queue, first + begun * SLOT, run, kind, tz)


def _gap(queue: str, start: datetime, run: list[int], kind: ShortOf, tz: tzinfo) -> Gap:
    end = start + len(run) * SLOT
    hours = sum(run) * (SLOT / _HOUR)
    return Gap(queue, _local(start, tz), _local(end, tz), kind, max(run), hours)


def _needs(
    roster: Roster,
    first: datetime,
    slots: int,
    forecast: Forecast | None,
    targets: Mapping[str, Target],
) -> dict[str, tuple[int, ...]]:
    """Per queue and slot, the responders Erlang C requires for the forecast calls of the
    slot's local weekday and time (handle time including wrap-up), at the queue's service
    level; memoised per queue and load, since most slots of a week repeat a few loads."""
    if forecast is None:
        return {queue: (0,) * slots for queue in roster.queues}
    local_slots = [slot_of((first + k * SLOT).astimezone(roster.tz)) for k in range(slots)]
    needs: dict[str, tuple[int, ...]] = {}
    for queue in roster.queues:
        target = targets.get(queue)
        handle_s = forecast.handle_s.get(queue, 0.0)
        if target is None or handle_s <= 0:
            needs[queue] = (0,) * slots
            continue
        memo: dict[float, int] = {}
        row = []
        for weekday, slot in local_slots:
            calls = forecast.calls(queue, weekday, slot)
            agents = memo.get(calls)
            if agents is None:
                agents = memo[calls] = (
                    staffing.required(
                        calls / SLOT_S, handle_s, target.sl_seconds, target.sl_target, floor=1
                    ).agents
                    if calls > 0
                    else 0
                )
            row.append(agents)
        needs[queue] = tuple(row)
    return needs


# --- time on duty ----------------------------------------------------------------------------


def _duty_ranges(
    roster: Roster, lo: int, hi: int, slots: int
) -> Iterable[tuple[list[SlotRange], tuple[str, ...], int]]:
    """(slot ranges covered whole, the queues they count in, the slot they count until: the
    window's end, or where a certification the queues require lapses), per responder; the
    queues they count in for the whole window share one."""
    shifts = _Shifts(roster, lo, hi)
    exceptions = _by_responder(roster.exceptions)
    overrides = _by_responder(sorted(roster.overrides, key=lambda o: (o.start, o.id)))
    requires = {name: q.requires for name, q in roster.queues.items() if q.requires}
    # Responders without an exception of their own share the slot ranges of their shifts.
    shared: dict[tuple[int, ...], list[SlotRange]] = {}
    for rid, responder in roster.responders.items():
        limits = {
            queue: _last_slot(responder.certifications, requires[queue], lo, slots)
            if queue in requires
            else slots
            for queue in responder.queues
            if queue in roster.queues
        }
        if not any(limits.values()):
            continue
        key = shifts.of(rid)
        own_exceptions = exceptions.get(rid)
        own_overrides = overrides.get(rid)
        if own_exceptions:
            base = _base(shifts.intervals(key), own_exceptions, lo, hi)
        else:
            base = shifts.intervals(key)
        if own_overrides:
            for queue, last in limits.items():
                if last > 0:
                    on = _overridden(base, own_overrides, queue, lo, hi)
                    yield _slot_ranges(on, lo, slots), (queue,), last
            continue
        if own_exceptions:
            ranges = _slot_ranges(base, lo, slots)
        else:
            found = shared.get(key)
            ranges = shared[key] = found if found is not None else _slot_ranges(base, lo, slots)
        whole = tuple(queue for queue, last in limits.items() if last == slots)
        if whole:
            yield ranges, whole, slots
        for queue, last in limits.items():
            if 0 < last < slots:
                yield ranges, (queue,), last


class _Shifts:
    """Every shift's occurrences that overlap the window [lo, hi), resolved once."""

    def __init__(self, roster: Roster, lo: int, hi: int) -> None:
        tz = roster.tz
        memo: dict[tuple[date, time], int] = {}
        offsets: dict[date, int | None] = {}

        def resolve(day: date, at: time) -> int:
            instant = memo.get((day, at))
            if instant is None:
                if day not in offsets:
                    offsets[day] = _steady_offset(day, tz)
                offset = offsets[day]
                if offset is None:  # a DST change that day: resolved as the roster does
                    instant = int(resolve_local(day, at, tz).timestamp())
                else:
                    wall = (day.toordinal() - _EPOCH_DAY) * 86_400
                    instant = wall + at.hour * 3600 + at.minute * 60 + at.second - offset
                memo[(day, at)] = instant
            return instant

        # A shift lasts at most a day of wall clock, so occurrences starting from the day
        # before the window's first local date can reach into it.
        first = datetime.fromtimestamp(lo, tz).date() - _DAY
        last = datetime.fromtimestamp(hi, tz).date() + _DAY
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        self._occurrences: list[list[Interval]] = []
        members: dict[str, list[int]] = {}
        for index, shift in enumerate(roster.shifts):
            found = []
            for day in days:
                if day.weekday() not in shift.days:
                    continue
                begin = resolve(day, shift.start)
                end = resolve(day if shift.end > shift.start else day + _DAY, shift.end)
                if begin < hi and end > lo and end > begin:
                    found.append((max(begin, lo), min(end, hi)))
            self._occurrences.append(found)
            for rid in dict.fromkeys(shift.responders):
                members.setdefault(rid, []).append(index)
        self._members = {rid: tuple(indexes) for rid, indexes in members.items()}
        self._memo: dict[tuple[int, ...], list[Interval]] = {}

    def of(self, responder: str) -> tuple[int, ...]:
        """The indexes of the shifts `responder` works."""
        return self._members.get(responder, ())

    def intervals(self, shifts: tuple[int, ...]) -> list[Interval]:
        """The merged occurrences of these shifts."""
        merged = self._memo.get(shifts)
        if merged is None:
            merged = self._memo[shifts] = _merge(
                interval for index in shifts for interval in self._occurrences[index]
            )
        return merged


def _steady_offset(day: date, tz: tzinfo) -> int | None:
    """The UTC offset in seconds that holds through the whole local `day`, or None when a
    change falls within it (then each time is resolved as the roster does, which is slower)."""
    midnight = resolve_local(day, time(0), tz)
    following = resolve_local(day + _DAY, time(0), tz)
    offset, after = midnight.utcoffset(), following.utcoffset()
    if offset is None or offset != after or midnight.time() != time(0):
        return None
    return int(offset.total_seconds())


def _by_responder(items: Iterable[_R]) -> dict[str, list[_R]]:
    grouped: dict[str, list[_R]] = {}
    for item in items:
        grouped.setdefault(item.responder, []).append(item)
    return grouped


def _base(
    shifts: list[Interval], exceptions: Sequence[RosterException], lo: int, hi: int
) -> list[Interval]:
    """Shifts and `on` exceptions, less the `off` exceptions (which win), within [lo, hi)."""
    on: list[Interval] = list(shifts)
    off: list[Interval] = []
    for exception in exceptions:
        interval = (_seconds(exception.start), _seconds(exception.end))
        (off if exception.kind is ExceptionKind.OFF else on).append(interval)
    return _subtract(_merge(_within(on, lo, hi)), _merge(_within(off, lo, hi)))


def _overridden(
    base: list[Interval], overrides: Sequence[Override], queue: str, lo: int, hi: int
) -> list[Interval]:
    """`base` after the overrides that cover `queue` (given oldest start first): where one or
    more are in force, the latest started decides; elsewhere `base` holds."""
    relevant = [
        (_seconds(o.start), _seconds(o.end), o.kind is ExceptionKind.ON)
        for o in overrides
        if o.queues is None or queue in o.queues
    ]
    if not relevant:
        return base
    edges = sorted(
        {lo, hi}
        | {edge for interval in base for edge in interval}
        | {min(max(edge, lo), hi) for start, end, _ in relevant for edge in (start, end)}
    )
    starts = [start for start, _ in base]
    on: list[Interval] = []
    for begin, end in itertools.pairwise(edges):
        decided: bool | None = None
        for start, stop, kind in relevant:
            if start <= begin < stop:
                decided = kind  # the later started, later in the list, wins
        if decided is None:
            at = bisect.bisect_right(starts, begin) - 1
            decided = at >= 0 and begin < base[at][1]
        if decided:
            on.append((begin, end))
    return _merge(on)


def _last_slot(held: Mapping[str, datetime], required: frozenset[str], lo: int, slots: int) -> int:
    """The slot until which (exclusive) a responder holds every certification in `required`
    for whole slots: 0 when one is missing or lapsed before the window, `slots` when none lapses
    within it."""
    if not required <= held.keys():
        return 0
    until = min(_seconds(held[name]) for name in required)
    last = (until - lo) // SLOT_S
    return 0 if last < 0 else min(last, slots)


def _slot_ranges(intervals: Iterable[Interval], lo: int, slots: int) -> list[SlotRange]:
    """The slots [k0, k1) each interval covers whole."""
    ranges = []
    for start, end in intervals:
        # Rounded up: a slot that began before `start` is not covered whole.
        k0 = -((lo - start) // SLOT_S)
        k1 = (end - lo) // SLOT_S
        k0 = max(k0, 0)
        k1 = min(k1, slots)
        if k1 > k0:
            ranges.append((k0, k1))
    return ranges


def _within(intervals: Iterable[Interval], lo: int, hi: int) -> list[Interval]:
    return [(max(s, lo), min(e, hi)) for s, e in intervals if s < hi and e > lo and e > s]


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    """`intervals` less `holes`, both merged and sorted."""
    if not holes:
        return intervals
    result: list[Interval] = []
    for begin, end in intervals:
        start = begin
        for hole_start, hole_end in holes:
            if hole_end <= start or hole_start >= end:
                continue
            if hole_start > start:
                result.append((start, hole_start))
            start = max(start, hole_end)
            if start >= end:
                break
        if start < end:
            result.append((start, end))
    return result


def _seconds(at: datetime) -> int:
    return int(at.timestamp())


def _local(instant: datetime, tz: tzinfo) -> datetime:
    """`instant` in `tz` with the offset then in force as a fixed zone: aware datetimes that
    share a zone compare by wall clock, which is wrong across a fall-back hour."""
    local = instant.astimezone(tz)
    offset = local.utcoffset()
    assert offset is not None  # astimezone always yields an offset
    return local.replace(tzinfo=timezone(offset), fold=0)


# --- warnings that look ahead ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lapsing:
    responder: str
    certification: str
    lapses: datetime  # aware: valid until then (exclusive)


def lapsing(roster: Roster, now: datetime, within: timedelta) -> list[Lapsing]:
    """The certifications that lapse after `now` and by `now + within`, soonest first."""
    found = [
        Lapsing(rid, name, expiry)
        for rid, responder in roster.responders.items()
        for name, expiry in responder.certifications.items()
        if now < expiry <= now + within
    ]
    return sorted(found, key=lambda item: (item.lapses, item.responder, item.certification))


@dataclass(frozen=True, slots=True)
class ShortRest:
    """The shortest rest between two of a responder's stretches on duty in a week, and how
    many of that week's rests are shorter than the minimum."""

    responder: str
    end: datetime  # aware, local: the stretch before the rest ends
    next_start: datetime  # aware, local: the next one begins
    count: int

    @property
    def rest(self) -> timedelta:
        return self.next_start - self.end


def short_rests(roster: Roster, start: datetime, minimum: timedelta) -> list[ShortRest]:
    """Responders whom the roster (shifts and exceptions) gives less than `minimum` of rest
    between two stretches on duty, for the stretches that end in the week from `start`; shifts
    that follow each other without a break are one stretch, and time off that an `off`
    exception cuts out of a stretch is not rest between shifts. In roster order."""
    lo = _seconds(start)
    week_end = lo + 7 * 86_400
    # Far enough past the week for the rest after its last stretch to be seen.
    hi = week_end + 86_400 + int(minimum.total_seconds())
    shifts = _Shifts(roster, lo, hi)
    exceptions = _by_responder(roster.exceptions)
    limit = int(minimum.total_seconds())
    found: list[ShortRest] = []
    for rid in roster.responders:
        own = exceptions.get(rid, [])
        time_off = [
            (_seconds(e.start), _seconds(e.end)) for e in own if e.kind is ExceptionKind.OFF
        ]
        pairs = [
            (end, following)
            for (_, end), (following, _) in itertools.pairwise(
                _base(shifts.intervals(shifts.of(rid)), own, lo, hi)
            )
            if end < week_end
            and following - end < limit
            and not any(off <= end and following <= on for off, on in time_off)
        ]
        if pairs:
            end, following = min(pairs, key=lambda pair: pair[1] - pair[0])
            found.append(
                ShortRest(
                    rid,
                    _local(datetime.fromtimestamp(end, UTC), roster.tz),
                    _local(datetime.fromtimestamp(following, UTC), roster.tz),
                    len(pairs),
                )
            )
    return found


# --- output ------------------------------------------------------------------------------------

# Where the forecast load came from: the call records of the trailing weeks, or the floor
# (`reports.forecast_floor` calls in every slot) when there are none to read.
ForecastSource = Literal["history", "floor"]


def as_json(result: Coverage, tz: tzinfo, source: ForecastSource, why: str) -> str:
    """`hotline coverage --json`: the window, the forecast's source, per queue its minimum
    and per slot (in order) the responders scheduled and needed, and the gaps, worst first."""
    return json.dumps(
        {
            "from": _local(result.start, tz).isoformat(),
            "to": _local(result.end, tz).isoformat(),
            "slot_minutes": SLOT_S // 60,
            "forecast": {"source": source, "why": why},
            "queues": {
                name: {
                    "minimum": covered.minimum,
                    "scheduled": list(covered.scheduled),
                    "needed": list(covered.needed),
                }
                for name, covered in result.queues.items()
            },
            "gaps": [
                {
                    "queue": gap.queue,
                    "from": gap.start.isoformat(),
                    "to": gap.end.isoformat(),
                    "short_of": gap.short_of,
                    "shortfall": gap.shortfall,
                    "missing_hours": gap.missing_hours,
                }
                for gap in result.gaps
            ],
        }
    )


def as_text(result: Coverage, tz: tzinfo, source: ForecastSource, why: str) -> str:
    """`hotline coverage`: the window, the forecast's source, per queue a summary line, then
    the gaps, worst first."""
    start, end = _local(result.start, tz), _local(result.end, tz)
    lines = [
        f"Coverage from {start.isoformat()} to {end.isoformat()} ({tz}), 15-minute slots",
        f"Forecast: {source} ({why})",
        "",
    ]
    for name, covered in result.queues.items():
        fewest = min(covered.scheduled)
        lines.append(
            f"{name}: minimum {covered.minimum}, scheduled {fewest} to {max(covered.scheduled)},"
            f" forecast need up to {max(covered.needed)}"
        )
    lines.append("")
    if not result.gaps:
        lines.append("No gaps.")
        return "\n".join(lines)
    lines.append(f"{len(result.gaps)} gaps, worst first:")
    rows = [("QUEUE", "FROM", "TO", "SHORT OF", "SHORTFALL", "RESPONDER-HOURS")] + [
        (
            gap.queue,
            gap.start.strftime("%a %Y-%m-%d %H:%M %z"),
            gap.end.strftime("%a %Y-%m-%d %H:%M %z"),
            gap.short_of,
            str(gap.shortfall),
            f"{gap.missing_hours:g}",
        )
        for gap in result.gaps
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines += [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
