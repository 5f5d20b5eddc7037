"""A generated history of a crisis line, for the report's tests and benchmark: call records,
member sessions and pauses made from a seed, and loaded into Postgres with COPY in the columns
the store derives from the records (codec.py), as if the daemon had written them.

What it exercises: two queues with different service-level thresholds and wrap-up, two
campaigns and calls without one, every outcome (transfers, short and long abandons, waits of
exactly the thresholds, timeouts and rollovers with every partner result, refused joins, calls
still open), day and night shifts crossing midnight in both queues at once, and pauses per queue
and in both queues together, with several reasons.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from hotline.adapters.store import codec
from hotline.adapters.store.tables import CALLS, PAUSES, SESSIONS, Table
from hotline.core.records import (
    CallRecord,
    MemberSession,
    Outcome,
    PartnerResult,
    PauseInterval,
    Record,
)

QUEUES = {"crisis": 20.0, "youth": 30.0}  # queue -> sl_seconds
WRAPUP = {"crisis": 60.0, "youth": 0.0}
CAMPAIGNS = ("988", "local", None)
RESPONDERS = tuple(f"r-{n}" for n in range(1, 7))
REASONS = ("break", "decompression", "Auto-Pause")
_OUTCOMES = (
    (Outcome.ANSWERED, 62),
    (Outcome.TRANSFERRED, 4),
    (Outcome.ABANDONED, 14),
    (Outcome.TIMEOUT, 5),
    (Outcome.ROLLOVER, 5),
    (Outcome.JOINEMPTY, 4),
    (Outcome.LEAVEEMPTY, 3),
    (Outcome.UNKNOWN, 2),
    (None, 1),  # still open
)


@dataclass(frozen=True)
class History:
    calls: list[CallRecord]
    sessions: list[MemberSession]
    pauses: list[PauseInterval]


def config_file(directory: Path, tz: str, dsn: str, extra: str = "") -> Path:
    """A configuration for the generated line, with its pseudonym key, in `directory` (no
    shifts: only the records matter here)."""
    keys = directory / "caller-keys"
    keys.write_text(f"1:{secrets.token_hex(32)}\n")
    keys.chmod(0o600)
    queues = ", ".join(
        f"{q}: {{sl_seconds: {sl}, wrapup_seconds: {WRAPUP[q]}}}" for q, sl in QUEUES.items()
    )
    responders = "\n".join(
        f'  {r}: {{name: {r}, interface: "PJSIP/{1000 + n}", queues: {{crisis: 0, youth: 0}}}}'
        for n, r in enumerate(RESPONDERS)
    )
    path = directory / "hotline.yaml"
    path.write_text(
        f"timezone: {tz}\nami: {{username: hotline, secret_env: UNUSED}}\n"
        f'database: {{dsn: "{dsn}", spool_dir: spool}}\nprivacy: {{keys_file: {keys}}}\n'
        f"queues: {{{queues}}}\nresponders:\n{responders}\n{extra}"
    )
    return path


def _wait(rng: random.Random, sl: float) -> float:
    pick = rng.random()
    if pick < 0.05:  # exactly at a threshold: counts as within it
        return rng.choice((sl, 5.0))
    return round(rng.expovariate(1 / 25), 3)


def generate(start: date, days: int, tz: ZoneInfo, calls_per_day: int, seed: int = 12) -> History:
    """`days` local days from `start`; about `calls_per_day` calls a day, fewer at night."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible history, not a secret
    calls: list[CallRecord] = []
    sessions: list[MemberSession] = []
    pauses: list[PauseInterval] = []
    outcomes = [o for o, _ in _OUTCOMES]
    weights = [w for _, w in _OUTCOMES]
    for offset in range(days):
        day = start + timedelta(days=offset)
        midnight = datetime.combine(day, time(0), tz).astimezone(UTC)
        following = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
        seconds = (following - midnight).total_seconds()
        for n in range(rng.randint(calls_per_day * 8 // 10, calls_per_day * 12 // 10)):
            entered = midnight + timedelta(seconds=rng.uniform(0, seconds))
            if entered.astimezone(tz).hour < 6 and rng.random() < 0.5:
                continue  # quieter at night
            queue = rng.choice(tuple(QUEUES))
            calls.append(
                _call(
                    rng,
                    uniqueid=f"{day.isoformat()}.{n}",
                    queue=queue,
                    entered=entered,
                    responders=_on_shift(entered, tz),
                    outcomes=outcomes,
                    weights=weights,
                )
            )
        _shifts(rng, day, tz, sessions, pauses)
    return History(calls, sessions, pauses)


def _call(
    rng: random.Random,
    *,
    uniqueid: str,
    queue: str,
    entered: datetime,
    responders: tuple[str, ...],
    outcomes: list[Outcome | None],
    weights: list[int],
) -> CallRecord:
    outcome = rng.choices(outcomes, weights)[0]
    wait = _wait(rng, QUEUES[queue])
    record = CallRecord(
        uniqueid=uniqueid,
        queue=queue,
        visit=1,
        entered_at=entered,
        position=1,
        campaign=rng.choice(CAMPAIGNS),
        caller_withheld=True,
        outcome=outcome,
        rank=4 if outcome is not None else 1,
        revision=1,
    )
    if outcome in (Outcome.ANSWERED, Outcome.TRANSFERRED):
        talk = round(rng.uniform(30, 3600), 3) if rng.random() > 0.02 else None
        answered = entered + timedelta(seconds=wait)
        return replace(
            record,
            answered_at=answered,
            answered_by=rng.choice(responders),
            wait_s=wait,
            talk_s=talk,
            ended_at=answered + timedelta(seconds=talk or 0),
        )
    if outcome is Outcome.JOINEMPTY:
        return replace(record, wait_s=0.0, ended_at=entered)
    if outcome is None:
        return record
    if outcome is Outcome.ABANDONED and rng.random() < 0.3:
        wait = round(rng.uniform(0, 6), 3)  # short abandons, some at exactly 5 s
    partner = None
    if outcome in (Outcome.TIMEOUT, Outcome.ROLLOVER) and rng.random() < 0.8:
        partner = rng.choice(list(PartnerResult))
    return replace(
        record,
        wait_s=wait,
        ended_at=entered + timedelta(seconds=wait),
        rolled_over=partner is not None,
        partner_result=partner,
    )


def _on_shift(at: datetime, tz: ZoneInfo) -> tuple[str, ...]:
    """Who answers at `at`: the day shift's responders by day, the night shift's by night
    (see _shifts), anyone in between."""
    hour = at.astimezone(tz).hour
    if 8 <= hour < 16:  # the day shift
        return RESPONDERS[0::2]
    if hour >= 20 or hour < 4:  # the night shift
        return RESPONDERS[1::2]
    return RESPONDERS


def _shifts(
    rng: random.Random,
    day: date,
    tz: ZoneInfo,
    sessions: list[MemberSession],
    pauses: list[PauseInterval],
) -> None:
    """Each responder: a day shift (08:00-16:00) or a night shift (20:00-04:00 the next day),
    in both queues with slightly different joins, and a few pauses."""
    for n, responder in enumerate(RESPONDERS):
        if rng.random() < 0.2:
            continue  # a day off
        night = n % 2 == 1
        begin = datetime.combine(day, time(20 if night else 8), tz).astimezone(UTC)
        begin += timedelta(minutes=rng.randint(-10, 10))
        end = begin + timedelta(hours=8, minutes=rng.randint(-10, 10))
        interface = f"PJSIP/{1000 + n}"
        for queue in QUEUES:
            joined = begin + timedelta(seconds=rng.randint(0, 120))
            left = end - timedelta(seconds=rng.randint(0, 120))
            sessions.append(
                MemberSession(
                    queue=queue,
                    responder=responder,
                    interface=interface,
                    joined_at=joined,
                    left_at=left,
                    join_reason="shift",
                    leave_reason="shift",
                    revision=1,
                )
            )
        for _ in range(rng.randint(0, 3)):
            started = begin + timedelta(seconds=rng.uniform(0, 7 * 3600))
            ended = started + timedelta(seconds=rng.uniform(60, 1800))
            reason = rng.choice(REASONS)
            both = rng.random() < 0.6  # a pause in every queue, as a responder's own is
            for queue in QUEUES if both else (rng.choice(tuple(QUEUES)),):
                pauses.append(
                    PauseInterval(
                        queue=queue,
                        responder=responder,
                        interface=interface,
                        started_at=started,
                        ended_at=ended,
                        reason=reason,
                        paused_by="external",
                        revision=1,
                    )
                )


async def load(conn: asyncpg.Connection, history: History) -> None:
    """COPY the records into their tables."""
    tables: tuple[tuple[Table, Sequence[Record]], ...] = (
        (CALLS, history.calls),
        (SESSIONS, history.sessions),
        (PAUSES, history.pauses),
    )
    for table, records in tables:
        await conn.copy_records_to_table(
            table.name,
            schema_name="hotline",
            columns=[name for name, _ in table.columns],
            records=(codec.to_row(record) for record in records),
        )
