"""The figures of `hotline report`, each defined once (docs/reports.md): the periods a window is
cut into, in the roster's zone and DST-correct; the counts the store reads for each period and
group; and the figures and ratios made from them. The store computes the counts in SQL over the
records; this module turns them into report rows and nothing else decides what a figure means.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal, get_args

from hotline.core.records import Outcome, PartnerResult
from hotline.core.roster import resolve_local

By = Literal["hour", "day", "week", "month"]
Group = Literal["queue", "campaign", "responder"]
BYS: tuple[By, ...] = get_args(By)
GROUPS: tuple[Group, ...] = get_args(Group)

# Outcomes that count as answered: a transferred call was answered first (as in the metrics).
ANSWERED: frozenset[Outcome] = frozenset({Outcome.ANSWERED, Outcome.TRANSFERRED})
# Outcomes that count as a rollover: our queue's maximum wait sent the call on (timeout), or the
# upstream network withdrew it to a backup centre (rollover).
ROLLOVER: frozenset[Outcome] = frozenset({Outcome.TIMEOUT, Outcome.ROLLOVER})


@dataclass(frozen=True, slots=True)
class Bucket:
    """One period of the report: [start, end), instants in UTC; a whole local hour, day, week
    (from Monday) or month, clipped to the window."""

    start: datetime
    end: datetime


def _local_start(at: datetime, by: By, tz: tzinfo) -> datetime:
    """The start of the local period holding the instant `at` (aware), in UTC. Instants are kept
    in UTC: aware datetimes sharing a zone compare by wall clock, wrong across a fall-back."""
    local = at.astimezone(tz)
    if by == "hour":
        # The local wall clock truncated, as SQL's date_trunc does (right for zones with
        # half-hour offsets too); `fold` keeps a repeated hour apart.
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.date()
    if by == "week":
        day -= timedelta(days=day.weekday())
    elif by == "month":
        day = day.replace(day=1)
    return resolve_local(day, time(0), tz).astimezone(UTC)


def _next_start(start: datetime, by: By, tz: tzinfo) -> datetime:
    if by == "hour":
        # An hour later in absolute time: across a fall-back change the repeated hour is a
        # period of its own, and a skipped hour is no period at all.
        return start + timedelta(hours=1)
    day = start.astimezone(tz).date()
    following: date
    if by == "day":
        following = day + timedelta(days=1)
    elif by == "week":
        following = day + timedelta(days=7)
    else:
        following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return resolve_local(following, time(0), tz).astimezone(UTC)


def periods(start: datetime, end: datetime, by: By, tz: tzinfo) -> list[Bucket]:
    """The periods of [start, end): local hours, days (23 or 25 h across a DST change), weeks
    from Monday or months, the first and last clipped to the window."""
    if end <= start:
        return []
    buckets: list[Bucket] = []
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    at = _local_start(start, by, tz)
    while at < end:
        following = _next_start(at, by, tz)
        buckets.append(Bucket(max(at, start), min(following, end)))
        at = following
    return buckets


def boundaries(buckets: list[Bucket]) -> list[datetime]:
    """The starts of the buckets, then the end of the last: what SQL's width_bucket takes."""
    return [b.start for b in buckets] + [buckets[-1].end] if buckets else []


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    """What the store counts over the calls of one period and group that share an outcome and a
    partner result: the rows every call figure is made from (`call_counts`)."""

    outcome: Outcome | None  # None: still open
    partner: PartnerResult | None
    calls: int
    within_sl: int  # with a wait <= their queue's sl_seconds
    within_short: int  # with a wait <= reports.short_abandon_seconds
    wait_s: float  # total wait (an unknown wait counts as 0 s, as in the metrics)
    talked: int  # with a known talk time
    talk_s: float  # total talk time


@dataclass(frozen=True, slots=True)
class CallCounts:
    """What the store counts over the calls that entered a queue in one period, for one group
    (docs/reports.md gives each definition)."""

    offered: int = 0
    leaves: int = 0  # offered calls that have an outcome
    answered: int = 0
    answered_in_sl: int = 0  # answered with a wait <= the queue's sl_seconds
    wait_answered_s: float = 0.0  # total wait of the answered calls
    p90_wait_s: float | None = None  # nearest-rank 90th percentile of the leaves' waits
    abandoned: int = 0
    short_abandoned: int = 0  # abandoned with a wait <= short_abandon_seconds
    rollover: int = 0
    joinempty: int = 0
    talked: int = 0  # answered calls whose talk time is known
    talk_s: float = 0.0  # their total talk time
    partner: Mapping[str, int] = field(default_factory=dict)  # rolled over: partner result -> n


@dataclass(frozen=True, slots=True)
class TimeCounts:
    """Seconds the store sums from the member sessions and pauses in one period, for one group:
    time in the queue (staffed), paused (by reason and in all), and talk during it."""

    staffed_s: float = 0.0
    paused_s: float = 0.0  # union of the pauses within the sessions, whatever the reason
    available_s: float = 0.0  # staffed and not paused
    talk_s: float = 0.0  # talk time of answered calls falling in the period
    pause_by_reason_s: Mapping[str, float] = field(default_factory=dict)


def call_counts(rows: Iterable[OutcomeCounts], p90_wait_s: float | None) -> CallCounts:
    """The counts of one period and group from its rows per outcome: which outcomes are
    answered, abandoned or a rollover is decided here and nowhere else (docs/reports.md)."""
    counts: dict[str, int] = defaultdict(int)
    partner: dict[str, int] = dict.fromkeys((r.value for r in PartnerResult), 0)
    wait_answered = talk = 0.0
    for row in rows:
        counts["offered"] += row.calls
        if row.partner is not None:
            partner[row.partner.value] += row.calls
        if row.outcome is None:
            continue
        counts["leaves"] += row.calls
        if row.outcome in ANSWERED:
            counts["answered"] += row.calls
            counts["answered_in_sl"] += row.within_sl
            counts["talked"] += row.talked
            wait_answered += row.wait_s
            talk += row.talk_s
        elif row.outcome is Outcome.ABANDONED:
            counts["abandoned"] += row.calls
            counts["short_abandoned"] += row.within_short
        elif row.outcome in ROLLOVER:
            counts["rollover"] += row.calls
        elif row.outcome is Outcome.JOINEMPTY:
            counts["joinempty"] += row.calls
    return CallCounts(
        **counts, wait_answered_s=wait_answered, talk_s=talk, p90_wait_s=p90_wait_s, partner=partner
    )


# The figures of a report row, in column order; units are in the names, never in the values.
CALL_FIGURES = (
    "offered",
    "answered",
    "answered_in_sl",
    "service_level",
    "service_level_excl_short_abandon",
    "asa_seconds",
    "p90_wait_seconds",
    "abandoned",
    "short_abandoned",
    "rollover",
    "joinempty",
    "mean_talk_seconds",
)
TIME_FIGURES = ("staffed_seconds", "paused_seconds", "occupancy")
# Figures that mean nothing per responder: a call that was not answered has no responder.
NOT_PER_RESPONDER = frozenset(
    {
        "offered",
        "service_level",
        "service_level_excl_short_abandon",
        "p90_wait_seconds",
        "abandoned",
        "short_abandoned",
        "rollover",
        "joinempty",
    }
)

Value = int | float | None


@dataclass(frozen=True, slots=True)
class Row:
    start: datetime
    end: datetime
    group: str | None  # the queue, campaign or responder; None when not grouped
    figures: Mapping[str, Value]
    partner: Mapping[str, int]  # rolled-over calls by partner result
    pause_by_reason_s: Mapping[str, float]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def figures(calls: CallCounts, times: TimeCounts | None, group: Group | None) -> dict[str, Value]:
    """A report row's figures from its counts (docs/reports.md). Ratios and means of nothing
    are None (empty in CSV, null in JSON), never 0: an idle hour has no service level."""
    values: dict[str, Value] = {
        "offered": calls.offered,
        "answered": calls.answered,
        "answered_in_sl": calls.answered_in_sl,
        "service_level": _ratio(calls.answered_in_sl, calls.leaves),
        "service_level_excl_short_abandon": _ratio(
            calls.answered_in_sl, calls.leaves - calls.short_abandoned
        ),
        "asa_seconds": _ratio(calls.wait_answered_s, calls.answered),
        "p90_wait_seconds": calls.p90_wait_s,
        "abandoned": calls.abandoned,
        "short_abandoned": calls.short_abandoned,
        "rollover": calls.rollover,
        "joinempty": calls.joinempty,
        "mean_talk_seconds": _ratio(calls.talk_s, calls.talked),
    }
    if group == "responder":
        values.update(dict.fromkeys(NOT_PER_RESPONDER))
    if times is None:  # per campaign: sessions and pauses belong to no campaign
        values.update(dict.fromkeys(TIME_FIGURES))
    else:
        values["staffed_seconds"] = times.staffed_s
        values["paused_seconds"] = times.paused_s
        values["occupancy"] = _ratio(times.talk_s, times.available_s)
    return values


def rows(
    buckets: list[Bucket],
    group: Group | None,
    calls: Mapping[tuple[int, str | None], CallCounts],
    times: Mapping[tuple[int, str | None], TimeCounts],
    groups: list[str],
) -> Iterator[Row]:
    """Every period in order, and within it every group in `groups` (or the one ungrouped row),
    with zeros where no record fell: an idle hour is a row too. Keys are (bucket index from 0,
    group)."""
    keys: list[str | None] = list(groups) if group is not None else [None]
    for index, bucket in enumerate(buckets):
        for key in keys:
            counts = calls.get((index, key), CallCounts())
            spent = None if group == "campaign" else times.get((index, key), TimeCounts())
            yield Row(
                start=bucket.start,
                end=bucket.end,
                group=key,
                figures=figures(counts, spent, group),
                partner=counts.partner,
                pause_by_reason_s=spent.pause_by_reason_s if spent is not None else {},
            )
