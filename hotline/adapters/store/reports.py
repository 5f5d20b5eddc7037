"""The reads behind `hotline report` and the forecast: counts per period and group over the call
records, seconds per period and group over the member sessions and pauses, and arrivals and talk
per weekday slot over the trailing weeks. Every figure is defined in docs/reports.md and made
from these counts by hotline/core/kpis.py; the outcome sets come from there too, so SQL and
Python cannot disagree on what "answered" is."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from hotline.adapters.store.errors import outage_as_unavailable
from hotline.adapters.store.migrations import check_schema
from hotline.config import Config
from hotline.core import kpis
from hotline.core.forecast import Forecast, SlotHistory, build_forecast
from hotline.core.records import Outcome, PartnerResult
from hotline.core.roster import resolve_local

Connection = asyncpg.Connection | PoolConnectionProxy

# The report's reads, each on a connection of its own (see `report`).
_READS: Final = 3
# A year of rows by hour is well within this; a runaway query is not.
_STATEMENT_TIMEOUT_S: Final = 120.0
# Talk is spread over the periods it fell in; a call that entered this long before the window
# can still be talking in it (calls open longer are closed as stale long before).
_TALK_MARGIN: Final = timedelta(days=1)

# The group a call counts in, per --group; None: one row for the whole line.
# The whole line is the group '' (NULL would not join with itself).
_CALL_GROUP: Final[Mapping[kpis.Group | None, str]] = {
    None: "''",
    "queue": "c.queue",
    "campaign": "coalesce(c.campaign, '')",
    "responder": "c.answered_by",
}
# The group time in a session, a pause or a call's talk counts in (there is none per campaign).
_TIME_GROUP: Final[Mapping[kpis.Group | None, tuple[str, str]]] = {
    None: ("''", "''"),  # (sessions and pauses, calls)
    "queue": ("queue", "c.queue"),
    "responder": ("responder", "c.answered_by"),
}


def _values(outcomes: frozenset[Outcome]) -> list[str]:
    return sorted(o.value for o in outcomes)


# Counts per period, group, outcome and partner result; kpis.call_counts makes the figures.
# The calls are read once, in one hash aggregate: which outcome is what is decided in Python.
# $1 boundaries, $2 queues, $3 their sl_seconds, $4 from, $5 to, $6 short-abandon seconds.
_CALLS_SQL: Final = """
SELECT width_bucket(c.entered_at, $1::timestamptz[]) - 1 AS bucket,
       {group} AS grp,
       c.outcome,
       c.partner_result,
       count(*) AS calls,
       count(*) FILTER (
           WHERE coalesce(c.wait_s, 0) <= ($3::float8[])[array_position($2::text[], c.queue)]
       ) AS within_sl,
       count(*) FILTER (WHERE coalesce(c.wait_s, 0) <= $6) AS within_short,
       coalesce(sum(coalesce(c.wait_s, 0)), 0)::float8 AS wait_s,
       count(c.talk_s) AS talked,
       coalesce(sum(c.talk_s), 0)::float8 AS talk_s
FROM hotline.calls AS c
WHERE c.entered_at >= $4 AND c.entered_at < $5 AND c.queue = ANY($2) {where}
GROUP BY 1, 2, 3, 4
"""
# The nearest-rank 90th percentile of the waits of the calls that left, per period and group:
# one small sort per period (read along calls_entered_at) rather than one sort of the year.
# $1 boundaries, $2 queues.
_P90_SQL: Final = """
SELECT b.i - 1 AS bucket, x.grp, x.p90
FROM unnest($1::timestamptz[]) WITH ORDINALITY AS b(start, i),
     LATERAL (
         SELECT {group} AS grp,
                percentile_disc(0.9) WITHIN GROUP (ORDER BY coalesce(c.wait_s, 0)) AS p90
         FROM hotline.calls AS c
         WHERE c.entered_at >= b.start AND c.entered_at < ($1::timestamptz[])[b.i + 1]
           AND c.outcome IS NOT NULL AND c.queue = ANY($2)
         GROUP BY 1
     ) AS x
WHERE b.i < cardinality($1::timestamptz[])
"""

# Seconds per period and group: each responder's sessions merged (a responder in two queues is
# staffed once for the line), cut to the window; the pauses within them; the time staffed and
# not paused; the pauses per reason; and the talk of answered calls. Each range is spread over
# the periods it overlaps (width_bucket finds the first and last).
# $1 boundaries, $2 queues, $3 from, $4 to, $5 now (end of open sessions and pauses),
# $6 answered outcomes, $7 talk margin.
_TIMES_SQL: Final = """
WITH window_ AS (SELECT tstzmultirange(tstzrange($3, $4)) AS w),
sessions AS (
    SELECT responder, {group} AS grp,
           range_agg(tstzrange(joined_at, greatest(joined_at, coalesce(left_at, $5))))
               * (SELECT w FROM window_) AS staffed
    FROM hotline.member_sessions
    WHERE queue = ANY($2) AND joined_at < $4 AND (left_at IS NULL OR left_at > $3)
    GROUP BY 1, 2
),
pauses AS (
    SELECT responder, {group} AS grp, reason,
           range_agg(tstzrange(started_at, greatest(started_at, coalesce(ended_at, $5))))
               AS paused
    FROM hotline.pauses
    WHERE queue = ANY($2) AND started_at < $4 AND (ended_at IS NULL OR ended_at > $3)
    GROUP BY 1, 2, 3
),
paused AS (
    SELECT p.responder, p.grp, range_agg(r) AS paused
    FROM pauses AS p, unnest(p.paused) AS r
    GROUP BY 1, 2
),
ranges AS (
    SELECT s.grp, 'staffed' AS kind, NULL::text AS reason, r
    FROM sessions AS s, unnest(s.staffed) AS r
    UNION ALL
    SELECT s.grp, 'paused', NULL, r
    FROM sessions AS s
    JOIN paused AS p USING (responder, grp), unnest(s.staffed * p.paused) AS r
    UNION ALL
    SELECT s.grp, 'available', NULL, r
    FROM sessions AS s
    LEFT JOIN paused AS p USING (responder, grp),
         unnest(s.staffed - coalesce(p.paused, '{{}}'::tstzmultirange)) AS r
    UNION ALL
    SELECT s.grp, 'reason', p.reason, r
    FROM sessions AS s
    JOIN pauses AS p USING (responder, grp), unnest(s.staffed * p.paused) AS r
),
spread AS (
    SELECT i - 1 AS bucket, grp, kind, reason,
           extract(epoch FROM least(upper(r), ($1::timestamptz[])[i + 1])
                              - greatest(lower(r), ($1::timestamptz[])[i])) AS seconds
    FROM ranges,
         generate_series(width_bucket(lower(r), $1::timestamptz[]),
                         least(width_bucket(upper(r), $1::timestamptz[]),
                               cardinality($1::timestamptz[]) - 1)) AS i
    WHERE NOT isempty(r)
),
talks AS (
    SELECT {call_group} AS grp, c.answered_at AS a, c.talk_s,
           c.answered_at + c.talk_s * interval '1 second' AS z
    FROM hotline.calls AS c
    WHERE c.queue = ANY($2) AND c.outcome = ANY($6) AND c.talk_s IS NOT NULL
      AND c.entered_at >= $3::timestamptz - $7::interval AND c.entered_at < $4
      AND c.answered_at < $4 {call_where}
),
talk_buckets AS (
    SELECT grp, a, z, talk_s, width_bucket(a, $1::timestamptz[]) AS first,
           width_bucket(z, $1::timestamptz[]) AS last
    FROM talks
    WHERE z > $3
),
talk AS (
    -- Most talk falls in one period: counted whole, without ranges.
    SELECT first - 1 AS bucket, grp, 'talk' AS kind, NULL::text AS reason, talk_s AS seconds
    FROM talk_buckets
    WHERE first = last
    UNION ALL
    SELECT i - 1, grp, 'talk', NULL,
           extract(epoch FROM least(z, ($1::timestamptz[])[i + 1])
                              - greatest(a, ($1::timestamptz[])[i]))
    FROM talk_buckets,
         generate_series(greatest(first, 1),
                         least(last, cardinality($1::timestamptz[]) - 1)) AS i
    WHERE first <> last
)
SELECT bucket, grp, kind, reason, sum(seconds)::float8 AS seconds
FROM (SELECT * FROM spread UNION ALL SELECT * FROM talk) AS parts
GROUP BY 1, 2, 3, 4
"""


@dataclass(frozen=True, slots=True)
class Report:
    buckets: list[kpis.Bucket]
    rows: list[kpis.Row]


async def report(
    conns: Sequence[Connection],
    config: Config,
    *,
    start: datetime,
    end: datetime,
    by: kpis.By,
    group: kpis.Group | None,
    now: datetime,
) -> Report:
    """The report's rows over [start, end) for the configured queues (docs/reports.md). Its
    three reads (call counts, the p90, time in sessions and pauses) run side by side when given
    three connections, one after the other on one; in one snapshot either way."""
    buckets = kpis.periods(start, end, by, config.roster.tz)
    if not buckets:
        return Report(buckets, [])
    bounds = kpis.boundaries(buckets)
    queues = sorted(config.service)
    async with AsyncExitStack() as stack:
        snapshot = None
        for conn in conns:
            await stack.enter_async_context(
                conn.transaction(isolation="repeatable_read", readonly=True)
            )
            if snapshot is None:
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            else:  # the first's snapshot: the reads agree on what the records are
                await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            # JIT compilation costs seconds on these plans and saves nothing; the sorts of the
            # p90 fit in memory.
            await conn.execute(
                f"SET LOCAL statement_timeout = '{int(_STATEMENT_TIMEOUT_S)}s';"
                " SET LOCAL jit = off; SET LOCAL work_mem = '64MB'"
            )
        count = _counts(conns[0], config, bounds, queues, group)
        p90 = _p90(conns[1 % len(conns)], bounds, queues, group)
        spent = _times(conns[2 % len(conns)], bounds, queues, group, min(now, bounds[-1]))
        if len(conns) >= _READS:
            counts, p90s, times = await asyncio.gather(count, p90, spent)
        else:  # a connection runs one query at a time
            counts, p90s, times = await count, await p90, await spent
    calls = {key: kpis.call_counts(outcomes, p90s.get(key)) for key, outcomes in counts.items()}
    if group == "queue":
        groups = queues
    else:
        groups = sorted({key for _, key in (*calls, *times) if key is not None})
    return Report(buckets, list(kpis.rows(buckets, group, calls, times, groups)))


Key = tuple[int, str | None]  # (period index, group)


async def _counts(
    conn: Connection,
    config: Config,
    bounds: list[datetime],
    queues: list[str],
    group: kpis.Group | None,
) -> dict[Key, list[kpis.OutcomeCounts]]:
    where = "AND c.answered_by IS NOT NULL" if group == "responder" else ""
    records = await conn.fetch(
        _CALLS_SQL.format(group=_CALL_GROUP[group], where=where),
        bounds,
        queues,
        [config.service[q].sl_seconds for q in queues],
        bounds[0],
        bounds[-1],
        config.reports.short_abandon_s,
        timeout=_STATEMENT_TIMEOUT_S,
    )
    rows: dict[Key, list[kpis.OutcomeCounts]] = defaultdict(list)
    for r in records:
        rows[(r["bucket"], r["grp"] if group is not None else None)].append(
            kpis.OutcomeCounts(
                outcome=Outcome(r["outcome"]) if r["outcome"] is not None else None,
                partner=PartnerResult(r["partner_result"]) if r["partner_result"] else None,
                calls=r["calls"],
                within_sl=r["within_sl"],
                within_short=r["within_short"],
                wait_s=r["wait_s"],
                talked=r["talked"],
                talk_s=r["talk_s"],
            )
        )
    return rows


async def _p90(
    conn: Connection, bounds: list[datetime], queues: list[str], group: kpis.Group | None
) -> dict[Key, float]:
    if group == "responder":  # a wait before any responder answered is nobody's
        return {}
    records = await conn.fetch(
        _P90_SQL.format(group=_CALL_GROUP[group]), bounds, queues, timeout=_STATEMENT_TIMEOUT_S
    )
    return {(r["bucket"], r["grp"] if group is not None else None): r["p90"] for r in records}


async def _times(
    conn: Connection,
    bounds: list[datetime],
    queues: list[str],
    group: kpis.Group | None,
    now: datetime,
) -> dict[Key, kpis.TimeCounts]:
    if group == "campaign":  # responders are not staffed per campaign
        return {}
    group_column, call_group = _TIME_GROUP[group]
    sql = _TIMES_SQL.format(
        group=group_column,
        call_group=call_group,
        call_where="AND c.answered_by IS NOT NULL" if group == "responder" else "",
    )
    records = await conn.fetch(
        sql,
        bounds,
        queues,
        bounds[0],
        bounds[-1],
        now,
        _values(kpis.ANSWERED),
        _TALK_MARGIN,
        timeout=_STATEMENT_TIMEOUT_S,
    )
    sums: dict[Key, dict[str, float]] = defaultdict(dict)
    reasons: dict[Key, dict[str, float]] = defaultdict(dict)
    for r in records:
        key = (r["bucket"], r["grp"] if group is not None else None)
        if r["kind"] == "reason":
            reasons[key][r["reason"]] = r["seconds"]
        else:
            sums[key][r["kind"]] = r["seconds"]
    return {
        key: kpis.TimeCounts(
            staffed_s=sums[key].get("staffed", 0.0),
            paused_s=sums[key].get("paused", 0.0),
            available_s=sums[key].get("available", 0.0),
            talk_s=sums[key].get("talk", 0.0),
            pause_by_reason_s=dict(sorted(reasons[key].items())),
        )
        for key in sums.keys() | reasons.keys()
    }


# Arrivals and talk per queue and local weekday slot. $1 from, $2 to, $3 zone, $4 queues,
# $5 answered outcomes.
_HISTORY_SQL: Final = """
WITH c AS (
    SELECT queue, entered_at AT TIME ZONE $3 AS local, outcome, talk_s
    FROM hotline.calls
    WHERE entered_at >= $1 AND entered_at < $2 AND queue = ANY($4)
)
SELECT queue,
       extract(isodow FROM local)::int - 1 AS weekday,
       (extract(hour FROM local)::int * 60 + extract(minute FROM local)::int) / 15 AS slot,
       count(*) AS offered,
       count(talk_s) FILTER (WHERE outcome = ANY($5)) AS answered,
       coalesce(sum(talk_s) FILTER (WHERE outcome = ANY($5)), 0)::float8 AS talk_s
FROM c
GROUP BY 1, 2, 3
"""


async def forecast_history(
    conn: Connection, config: Config, now: datetime, weeks: int
) -> tuple[list[SlotHistory], int]:
    """The history the forecast is built from: the `weeks` whole local weeks (of days) before
    today, and how many weeks of it the records actually cover (at least 1), so a line recorded
    for two weeks is not forecast at a quarter of its load."""
    tz = config.roster.tz
    today = now.astimezone(tz).date()
    end = resolve_local(today, time(0), tz).astimezone(UTC)
    start = resolve_local(today - timedelta(weeks=weeks), time(0), tz).astimezone(UTC)
    queues = sorted(config.service)
    first = await conn.fetchval(
        "SELECT min(entered_at) FROM hotline.calls"
        " WHERE entered_at >= $1 AND entered_at < $2 AND queue = ANY($3)",
        start,
        end,
        queues,
    )
    records = await conn.fetch(
        _HISTORY_SQL, start, end, str(tz), queues, _values(kpis.ANSWERED), timeout=60
    )
    covered = weeks
    if first is not None:
        days = (end - first).total_seconds() / 86_400
        covered = max(1, min(weeks, round(days / 7)))  # a DST hour is no extra week
    history = [
        SlotHistory(
            queue=r["queue"],
            weekday=r["weekday"],
            slot=r["slot"],
            offered=r["offered"],
            answered=r["answered"],
            talk_s=r["talk_s"],
        )
        for r in records
    ]
    return history, covered


async def load_forecast(
    dsn: str, config: Config, now: datetime, weeks: int | None = None
) -> Forecast:
    """The forecast from the records of the trailing weeks (default: reports.forecast_weeks).
    Raises StoreUnavailable when Postgres cannot be reached, SchemaError for an unknown schema."""
    weeks = weeks or config.reports.forecast_weeks
    with outage_as_unavailable():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await check_schema(conn)
            history, covered = await forecast_history(conn, config, now, weeks)
        finally:
            await conn.close()
    return build_forecast(
        history,
        weeks=covered,
        floor=config.reports.forecast_floor,
        wrapup={queue: service.wrapup_s for queue, service in config.service.items()},
        default_talk_s=config.reports.forecast_talk_s,
    )


async def read_report(
    dsn: str,
    config: Config,
    *,
    start: datetime,
    end: datetime,
    by: kpis.By,
    group: kpis.Group | None,
    now: datetime,
) -> Report:
    """`hotline report`: connect, check the schema, read. Raises StoreUnavailable when Postgres
    cannot be reached, SchemaError for an unknown schema."""
    with outage_as_unavailable():
        conns: list[asyncpg.Connection] = []
        try:
            for _ in range(_READS):
                conns.append(await asyncpg.connect(dsn, timeout=10))
            await check_schema(conns[0])
            return await report(conns, config, start=start, end=end, by=by, group=group, now=now)
        finally:
            for conn in conns:
                await conn.close()
