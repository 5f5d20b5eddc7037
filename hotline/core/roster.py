"""The shift roster, pure: who should be in which queue at an instant, and when that next changes.

No I/O and no clock: callers pass timezone-aware instants and get values back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Literal


@dataclass(frozen=True, slots=True)
class Responder:
    id: str
    name: str
    interface: str
    # Device whose state app_queue watches; for a phone it is the interface itself.
    state_interface: str
    queues: Mapping[str, int]  # queue -> penalty
    # Certification -> the instant it lapses (aware, exclusive): valid while `at < expiry`.
    certifications: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Shift:
    name: str
    days: frozenset[int]  # weekdays the shift starts on, Monday = 0
    start: time
    end: time  # end <= start: the shift ends on the next day
    responders: tuple[str, ...]


class ExceptionKind(enum.Enum):
    OFF = "off"
    ON = "on"


@dataclass(frozen=True, slots=True)
class RosterException:
    responder: str
    start: datetime  # aware, inclusive
    end: datetime  # aware, exclusive
    kind: ExceptionKind


@dataclass(frozen=True, slots=True)
class Override:
    """A supervisor's decision for one responder, from `start` until `end`: on or off duty in
    `queues` (None: every queue of the responder). It beats the shifts and the exceptions; of two
    overrides that cover the same instant and queue, the one that started later wins. An `on`
    override also calls a standby responder into a queue they stand by for, surge or not, when
    it names that queue (or, for one with no queue of their own, covers every queue)."""

    id: int  # the store's key; identifies the override to cancel
    responder: str
    start: datetime  # aware, inclusive
    end: datetime  # aware, exclusive
    kind: ExceptionKind
    queues: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    name: str
    min_responders: int
    # Certifications a responder must hold, unexpired, to be a member: whatever the shifts say.
    requires: frozenset[str] = frozenset()
    # Responders on call for a surge, added with `standby_penalty` while the queue surges.
    standby: tuple[str, ...] = ()
    standby_penalty: int = 0


@dataclass(frozen=True, slots=True)
class Roster:
    tz: tzinfo
    queues: Mapping[str, QueuePolicy]
    responders: Mapping[str, Responder]
    shifts: tuple[Shift, ...]
    exceptions: tuple[RosterException, ...]
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True, slots=True)
class DesiredMember:
    responder: str
    interface: str
    state_interface: str
    penalty: int


# queue -> responder id -> member; every queue of the roster is present, possibly empty.
Desired = Mapping[str, Mapping[str, DesiredMember]]

# Why a responder is, or is not, a member of a queue at an instant. In: a shift, an `on`
# exception, a supervisor's override, a surge of a queue they stand by for. Out: an `off`
# exception, an override, a certification the queue requires that they lack or that has lapsed,
# or simply no shift.
Why = Literal[
    "shift", "exception_on", "override_on", "surge",
    "exception_off", "override_off", "certification", "not_scheduled",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Standing:
    """A responder's place in one queue at an instant, and why."""

    responder: str
    member: DesiredMember | None  # None: not a member
    why: Why
    lacking: tuple[str, ...] = ()  # with why == "certification": which ones


_UTC = UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)
# The local dates, relative to that of the instant asked about, whose shift occurrences can cover
# it. A shift lasts at most 24 h of wall clock, so the day before suffices in most zones; the day
# after catches zones whose clocks fall back across midnight (the wall date then runs backwards).
_COVERING_DAYS = (-1, 0, 1)
# Shifts repeat weekly, so every shift with a start day has a boundary within this many days.
_LOOKAHEAD_DAYS = 8


def resolve_local(day: date, at: time, tz: tzinfo) -> datetime:
    """The instant of a local wall-clock time.

    A time skipped by a DST change moves forward to the first valid instant (the transition
    itself); an ambiguous one takes its first occurrence.

    The result carries the fixed UTC offset in force at that instant rather than `tz` itself:
    aware datetimes sharing a zone compare by wall clock, and an ambiguous one never equals an
    instant in another zone (PEP 495), both of which would be wrong for instants.
    """
    return _fixed_offset(_resolve_utc(day, at, tz), tz)


def on_duty(roster: Roster, at: datetime) -> frozenset[str]:
    """Responder ids on duty at `at` by the shifts and exceptions: in a shift occurrence or an
    `on` exception, and in no `off` exception (`off` wins). Overrides, which may hold for some
    queues only, are applied per queue by `desired_at` and `explain`."""
    return frozenset(_on_duty(roster, _index(roster), _utc(at))[0])


def desired_at(
    roster: Roster, at: datetime, surging: frozenset[str] = frozenset()
) -> dict[str, dict[str, DesiredMember]]:
    """Desired members per queue at `at`: who is on duty after the overrides, holds every
    certification the queue requires, and, in the `surging` queues, the standby responders."""
    index = _index(roster)
    at_utc = _utc(at)
    duty, off = _on_duty(roster, index, at_utc)
    overrides = _overrides_at(index, at_utc)
    desired: dict[str, dict[str, DesiredMember]] = {queue: {} for queue in roster.queues}
    # Walking the responders in roster order (rather than the set) keeps the result's order
    # stable from one call to the next, which keeps logs and plans diffable.
    requires = index.requires
    for rid, members in index.members.items():
        chosen = overrides.get(rid)
        scheduled = rid in duty
        if chosen is None and not scheduled:
            continue  # most of a large roster at any instant: nothing to look at
        for queue, member in members:
            on = scheduled if chosen is None else _overridden(chosen, queue, scheduled)[0]
            if on and not (queue in requires and _lacking(index, rid, queue, at_utc)):
                desired[queue][rid] = member
    for queue, standing_by in index.standby.items():
        for rid, member in standing_by:
            called = _called_in(index, rid, queue, overrides.get(rid))
            if called and rid not in desired[queue] and not _lacking(index, rid, queue, at_utc):
                desired[queue][rid] = member
    for queue in surging:
        for rid, member in index.standby.get(queue, ()):
            if rid in desired[queue] or rid in off:
                continue
            chosen = overrides.get(rid)
            if chosen is not None and _overridden(chosen, queue, True)[1] == "override_off":
                continue
            if not _lacking(index, rid, queue, at_utc):
                desired[queue][rid] = member
    return desired


def explain(
    roster: Roster,
    at: datetime,
    surging: frozenset[str] = frozenset(),
    *,
    members_only: bool = False,
) -> dict[str, list[Standing]]:
    """Per queue, every responder who serves it (and, while it surges, who stands by for it),
    with whether they are a member at `at` and why: `desired_at` with its reasons, for plans and
    the console. `members_only` leaves out most of those who are not members (the responders
    neither on duty nor overridden), which is most of a large roster."""
    index = _index(roster)
    at_utc = _utc(at)
    by_shift = _by_shift(roster, index, at_utc)
    duty, off = _on_duty(roster, index, at_utc, by_shift)
    overrides = _overrides_at(index, at_utc)
    standings: dict[str, dict[str, Standing]] = {queue: {} for queue in roster.queues}
    for rid, members in index.members.items():
        chosen = overrides.get(rid)
        scheduled = rid in duty
        if members_only and chosen is None and not scheduled:
            continue
        base: Why
        if scheduled:
            base = "shift" if rid in by_shift else "exception_on"
        else:
            base = "exception_off" if rid in off else "not_scheduled"
        for queue, member in members:
            on, decided = (
                (scheduled, None) if chosen is None else _overridden(chosen, queue, scheduled)
            )
            lacking = _lacking(index, rid, queue, at_utc) if queue in index.requires else ()
            if on and lacking:
                standings[queue][rid] = Standing(rid, None, "certification", lacking)
            else:
                standings[queue][rid] = Standing(rid, member if on else None, decided or base)
    for queue, standing_by in index.standby.items():
        for rid, member in standing_by:
            current = standings[queue].get(rid)
            if current is not None and current.member is not None:
                continue
            if _called_in(index, rid, queue, overrides.get(rid)):
                if lacking := _lacking(index, rid, queue, at_utc):
                    standings[queue][rid] = Standing(rid, None, "certification", lacking)
                else:
                    standings[queue][rid] = Standing(rid, member, "override_on")
    for queue in surging & index.standby.keys():
        for rid, member in index.standby[queue]:
            current = standings[queue].get(rid)
            if current is not None and current.member is not None:
                continue
            chosen = overrides.get(rid)
            if rid in off:
                standings[queue][rid] = Standing(rid, None, "exception_off")
            elif chosen is not None and _overridden(chosen, queue, True)[1] == "override_off":
                standings[queue][rid] = Standing(rid, None, "override_off")
            elif lacking := _lacking(index, rid, queue, at_utc):
                standings[queue][rid] = Standing(rid, None, "certification", lacking)
            else:
                standings[queue][rid] = Standing(rid, member, "surge")
    return {queue: list(by_rid.values()) for queue, by_rid in standings.items()}


def next_change(roster: Roster, after: datetime) -> datetime | None:
    """The first instant strictly after `after` at which `desired_at` may change (a shift,
    exception or override boundary, a certification lapsing), or None."""
    after_utc = _utc(after)
    tz = roster.tz
    best: datetime | None = None
    index = _index(roster)
    for edge in index.edges:
        if edge > after_utc and (best is None or edge < best):
            best = edge
    resolve = index.resolve
    first_day = after_utc.astimezone(tz).date() - _DAY
    for offset in range(_LOOKAHEAD_DAYS + 2):
        day = first_day + timedelta(days=offset)
        next_day = day + _DAY
        # Every occurrence starting on this day or later begins at or after its midnight
        # (resolution is monotonic in wall time), so once the best candidate is no later,
        # the remaining days cannot improve on it.
        if best is not None and best <= resolve(day, time(0)):
            break
        for shift in index.starting_on[day.weekday()]:
            start = resolve(day, shift.start)
            end = resolve(day if shift.end > shift.start else next_day, shift.end)
            for edge in (start, end):
                if edge > after_utc and (best is None or edge < best):
                    best = edge
    return None if best is None else _fixed_offset(best, tz)


def _on_duty(
    roster: Roster, index: _Index, at: datetime, by_shift: set[str] | None = None
) -> tuple[set[str], set[str]]:
    """Who is on duty at the UTC instant `at` by shifts and exceptions, and who is off by an
    exception, as mutable sets for the callers here (`by_shift`: the shifts' part, if known)."""
    duty = set(by_shift) if by_shift is not None else _by_shift(roster, index, at)
    off: set[str] = set()
    for exception in index.exceptions:
        if exception.start <= at < exception.end:
            if exception.kind is ExceptionKind.OFF:
                off.add(exception.responder)
            else:
                duty.add(exception.responder)
    duty -= off
    return duty, off


def _by_shift(roster: Roster, index: _Index, at: datetime) -> set[str]:
    resolve = index.resolve
    today = at.astimezone(roster.tz).date()
    duty: set[str] = set()
    for offset in _COVERING_DAYS:
        day = today + timedelta(days=offset)
        next_day = day + _DAY
        for shift in index.starting_on[day.weekday()]:
            if resolve(day, shift.start) > at:
                continue
            if at < resolve(day if shift.end > shift.start else next_day, shift.end):
                duty.update(shift.responders)
    return duty


def _overrides_at(index: _Index, at: datetime) -> dict[str, list[Override]]:
    """The overrides in force at UTC `at`, per responder, oldest start first."""
    active: dict[str, list[Override]] = {}
    for override in index.overrides:
        if override.start <= at < override.end:
            active.setdefault(override.responder, []).append(override)
    return active


def _overridden(chosen: list[Override], queue: str, scheduled: bool) -> tuple[bool, Why | None]:
    """Whether a responder is on duty in `queue` after their overrides (latest start wins), and
    the deciding override's kind; None when no override covers the queue."""
    on: bool = scheduled
    why: Why | None = None
    for override in chosen:
        if override.queues is None or queue in override.queues:
            on = override.kind is ExceptionKind.ON
            why = "override_on" if on else "override_off"
    return on, why


def _called_in(index: _Index, rid: str, queue: str, chosen: list[Override] | None) -> bool:
    """Whether a supervisor's override puts a standby responder on duty in `queue`, one they
    stand by for, surge or not: an `on` override naming it, or covering every queue of a
    responder who has none of their own (the latest start wins, as for members)."""
    on = False
    for override in chosen or ():
        covers = queue in override.queues if override.queues is not None else not index.members[rid]
        if covers:
            on = override.kind is ExceptionKind.ON
    return on


def _lacking(index: _Index, rid: str, queue: str, at: datetime) -> tuple[str, ...]:
    """The certifications `queue` requires that `rid` lacks or has let lapse at UTC `at`."""
    required = index.requires.get(queue)
    if not required:
        return ()
    held = index.certifications.get(rid, {})
    return tuple(sorted(c for c in required if not (c in held and at < held[c])))


@dataclass(frozen=True, slots=True)
class _Index:
    """What every lookup on one roster needs, computed once per roster."""

    starting_on: tuple[tuple[Shift, ...], ...]  # by weekday; shifts with nobody left out
    exceptions: tuple[RosterException, ...]  # with UTC bounds, so comparisons stay cheap
    overrides: tuple[Override, ...]  # with UTC bounds, oldest start first
    # responder id -> its (queue, member) pairs, in roster order, for the roster's queues only
    members: dict[str, tuple[tuple[str, DesiredMember], ...]]
    # queue -> its standby responders' members, with the queue's standby penalty
    standby: dict[str, tuple[tuple[str, DesiredMember], ...]]
    requires: dict[str, frozenset[str]]  # queues that require certifications
    certifications: dict[str, dict[str, datetime]]  # responder -> certification -> UTC expiry
    # Instants at which membership may change besides the shifts' own (UTC, sorted)
    edges: tuple[datetime, ...]
    # Local times resolved to instants, kept across lookups: every round asks about the same
    # few days, and resolving is the costliest step of a lookup.
    resolve: _Resolver


# The daemon asks about the same roster every reconcile round, and building the members anew on
# each call dominated `desired_at` (tens of thousands of frozen dataclasses for a large roster).
# Roster is frozen and not weak-referenceable, so the cache is keyed by identity and holds the
# roster itself: an id cannot be reused while its entry lives. Old entries go first (a reload
# makes a new roster), so the cache stays small.
_INDEX_CACHE_SIZE = 4
_indexes: dict[int, tuple[Roster, _Index]] = {}


def _index(roster: Roster) -> _Index:
    cached = _indexes.get(id(roster))
    if cached is not None and cached[0] is roster:
        return cached[1]
    index = _build_index(roster)
    while len(_indexes) >= _INDEX_CACHE_SIZE:
        del _indexes[next(iter(_indexes))]
    _indexes[id(roster)] = (roster, index)
    return index


def _build_index(roster: Roster) -> _Index:
    starting_on = tuple(
        tuple(shift for shift in roster.shifts if weekday in shift.days and shift.responders)
        for weekday in range(7)
    )
    exceptions = tuple(
        RosterException(e.responder, _utc(e.start), _utc(e.end), e.kind) for e in roster.exceptions
    )
    overrides = tuple(
        sorted(
            (
                Override(o.id, o.responder, _utc(o.start), _utc(o.end), o.kind, o.queues)
                for o in roster.overrides
            ),
            key=lambda o: (o.start, o.id),
        )
    )
    members = {
        rid: tuple(
            (queue, DesiredMember(rid, r.interface, r.state_interface, penalty))
            for queue, penalty in r.queues.items()
            if queue in roster.queues
        )
        for rid, r in roster.responders.items()
    }
    standby = {
        name: tuple(
            (rid, DesiredMember(rid, r.interface, r.state_interface, policy.standby_penalty))
            for rid in policy.standby
            if (r := roster.responders.get(rid)) is not None
        )
        for name, policy in roster.queues.items()
        if policy.standby
    }
    certifications = {
        rid: {name: _utc(expiry) for name, expiry in r.certifications.items()}
        for rid, r in roster.responders.items()
        if r.certifications
    }
    edges = {e.start for e in exceptions} | {e.end for e in exceptions}
    edges |= {o.start for o in overrides} | {o.end for o in overrides}
    edges.update(expiry for held in certifications.values() for expiry in held.values())
    return _Index(
        starting_on,
        exceptions,
        overrides,
        members,
        standby,
        {name: policy.requires for name, policy in roster.queues.items() if policy.requires},
        certifications,
        tuple(sorted(edges)),
        _Resolver(roster.tz),
    )


class _Resolver:
    """`_resolve_utc` for one zone, memoised: many shifts share start and end times. The memo
    is bounded: a daemon running for months asks about ever new days."""

    __slots__ = ("_memo", "_tz")

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        self._memo: dict[tuple[date, time], datetime] = {}

    def __call__(self, day: date, at: time) -> datetime:
        key = (day, at)
        instant = self._memo.get(key)
        if instant is None:
            if len(self._memo) >= _RESOLVED_KEPT:
                self._memo.clear()
            instant = self._memo[key] = _resolve_utc(day, at, self._tz)
        return instant


# Resolved local times kept per roster: ten days of a roster with 200 distinct shift times.
_RESOLVED_KEPT = 2_000


def _resolve_utc(day: date, at: time, tz: tzinfo) -> datetime:
    """`resolve_local` as a UTC datetime, the form every comparison here uses."""
    if at.tzinfo is not None:
        raise ValueError(f"wall-clock time {at} must not carry a zone")
    wall = datetime.combine(day, at)  # naive on purpose: a wall-clock reading, resolved below
    offset_first = wall.replace(tzinfo=tz).utcoffset()
    offset_second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if offset_first is None or offset_second is None:
        raise ValueError(f"time zone {tz!r} gives no UTC offset for {wall}")
    first = (wall - offset_first).replace(tzinfo=_UTC)
    if offset_first == offset_second:
        return first
    second = (wall - offset_second).replace(tzinfo=_UTC)
    existing = [instant for instant in (first, second) if _wall(instant, tz) == wall]
    if existing:
        return min(existing)
    # Skipped by a change: the two readings straddle the transition, whose instant is the first
    # whose wall clock reads `wall` or later. tzdata transitions fall on whole seconds.
    low = (min(first, second) - _EPOCH) // _SECOND
    high = -((_EPOCH - max(first, second)) // _SECOND)
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(_EPOCH + middle * _SECOND, tz) >= wall:
            high = middle
        else:
            low = middle
    return _EPOCH + high * _SECOND


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    """The naive wall-clock reading of `instant` in `tz`."""
    return instant.astimezone(tz).replace(tzinfo=None)


def _fixed_offset(instant: datetime, tz: tzinfo) -> datetime:
    """`instant` in `tz`, carrying the offset then in force as a fixed zone."""
    local = instant.astimezone(tz)
    offset = local.utcoffset()
    assert offset is not None  # astimezone always yields an offset
    return local.replace(tzinfo=timezone(offset), fold=0)


def _utc(at: datetime) -> datetime:
    if at.utcoffset() is None:
        raise ValueError(f"instant {at} must be timezone-aware")
    return at.astimezone(_UTC)
