"""The rollover to the partner centre never drops a caller, end to end: real calls through the
development PBX's inbound and rollover contexts to its stand-in partner centre (answering, busy, or
down: asterisk-config/dev/extensions.conf), a real Postgres, the daemon in-process with a clock the
test drives. Each call picks its stand-in by setting CRISIS_ROLLOVER on itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, local, wait_for
from tests.integration.conftest import Recorded, Samples, scrape

NY = ZoneInfo("America/New_York")

# 10:00 someone who never answers; 10:10 nobody at all; 10:20 someone who answers.
ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 1}}
responders:
  r-away: {{name: Away, interface: "{local(8001)}", queues: {{crisis: 0}}}}
  r-ana: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: ringing, days: [daily], start: "10:00", end: "10:10", responders: [r-away]}}
  - {{name: answering, days: [daily], start: "10:20", end: "10:30", responders: [r-ana]}}
"""
RINGING = datetime(2026, 12, 2, 10, 0, 30, tzinfo=NY)
NOBODY = datetime(2026, 12, 2, 10, 10, 30, tzinfo=NY)
ANSWERING = datetime(2026, 12, 2, 10, 20, 30, tzinfo=NY)

Rows = list[dict[str, object]]


async def test_a_partner_that_answers_takes_the_call_as_a_rollover(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(RINGING), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-away"]}, 5, "r-away on duty")

    # r-away's phone rings through the 8 s maximum wait; the stand-in partner answers and the
    # caller talks to it until hanging up at 14 s.
    await _call(ami, "+15550300001", partner="answer", hold_s=14)
    rows = await _until(recorded, "+15550300001", lambda rs: _closed(rs) and _reported(rs), 30)

    assert len(rows) == 1, rows
    row = rows[0]
    assert row["outcome"] == "rollover"
    assert row["partner_result"] == "answered"
    assert row["rolled_over"] is True
    assert row["answered_by"] is None
    assert _near(row["wait_s"], 8)
    attempts = row["attempts"]
    assert isinstance(attempts, list)
    assert {a["responder"] for a in attempts} == {"r-away"}
    assert "answered" not in {a["outcome"] for a in attempts}

    samples = await scrape(hotline)
    assert _partner_calls(samples) == {"answered": 1}
    # How it left the queue is still counted as a timeout.
    assert samples[("hotline_queue_calls_exited_total", _key(reason="timeout"))] == 1


async def test_a_caller_the_partner_cannot_take_goes_back_to_the_queue_and_is_answered(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    clock = ManualClock(NOBODY)
    hotline = await start_daemon(ROSTER, clock, extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {}, 5, "nobody on duty")

    # Nobody here, so the queue refuses the caller and the call rolls over at once; the partner
    # centre is down, so the caller hears the message and holds for another try, and keeps
    # coming back until somebody is on duty.
    await _call(ami, "+15550300002", partner="down", hold_s=60, talk_s=3)
    await _until(recorded, "+15550300002", lambda rs: _closed(rs) and _reported(rs[:1]), 15)
    clock.set(ANSWERING)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 5, "r-ana on duty")
    rows = await _until(
        recorded, "+15550300002", lambda rs: _closed(rs) and rs[-1]["outcome"] == "answered", 30
    )

    # The failed partner attempt and who answered, visit by visit, under one caller channel.
    first, *retries, answered = rows
    assert len({r["uniqueid"] for r in rows}) == 1
    assert [r["visit"] for r in rows] == list(range(1, len(rows) + 1))
    assert (first["outcome"], first["partner_result"]) == ("joinempty", "unavailable")
    assert first["rolled_over"] is True
    for retry in retries:  # the caller tried again before r-ana came on duty
        assert (retry["outcome"], retry["partner_result"]) == ("joinempty", "unavailable")
    assert answered["answered_by"] == "r-ana"
    assert answered["partner_result"] is None
    assert answered["rolled_over"] is False
    assert _near(answered["talk_s"], 3)
    # Each time, the message, then (the queue had refused the caller) a hold before trying again.
    heard = _heard(ami, first["uniqueid"])
    assert heard[:2] == [("Playback", "one-moment-please"), ("MusicOnHold", "default,3")]
    assert len(heard) == 2 * (len(rows) - 1)

    samples = await scrape(hotline)
    assert _partner_calls(samples) == {"unavailable": len(rows) - 1}


async def test_a_busy_partner_after_a_timeout_sends_the_caller_back_to_wait_again(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(RINGING), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-away"]}, 5, "r-away on duty")

    # Timed out after 8 s, the partner is busy: back in the queue, where the caller hangs up.
    await _call(ami, "+15550300003", partner="busy", hold_s=13)
    rows = await _until(recorded, "+15550300003", lambda rs: len(rs) == 2 and _closed(rs), 25)

    timed_out, again = rows
    assert (timed_out["outcome"], timed_out["partner_result"]) == ("timeout", "busy")
    assert _near(timed_out["wait_s"], 8)
    assert again["visit"] == 2
    assert (again["outcome"], again["partner_result"]) == ("abandoned", None)
    # The message, then straight back into the queue: it had not refused the caller.
    assert _heard(ami, timed_out["uniqueid"]) == [("Playback", "one-moment-please")]

    samples = await scrape(hotline)
    assert _partner_calls(samples) == {"busy": 1}


async def _call(
    ami: AmiTestClient, caller: str, partner: str, hold_s: int, talk_s: int = 30
) -> None:
    """A call into the crisis line whose rollover reaches the stand-in partner `partner`."""
    await ami.action(
        {
            "Action": "Originate",
            "Channel": "Local/988@hotline-inbound/n",
            "Application": "Wait",
            "Data": str(hold_s),
            "CallerID": f'"Test Caller" <{caller}>',
            "Variable": (
                f"__HOTLINE_TEST_TALK={talk_s},CRISIS_ROLLOVER=Local/{partner}@hotline-dev-partner"
            ),
            "Async": "true",
        }
    )


def _heard(ami: AmiTestClient, uniqueid: object) -> list[tuple[str, str]]:
    """What the caller's channel was played after the greeting, as Asterisk reports its
    dialplan steps (the test account reads every event)."""
    return [
        (e.fields["Application"], e.fields.get("AppData", ""))
        for e in ami.events
        if e.name == "Newexten"
        and e.fields.get("Uniqueid") == uniqueid
        and e.fields.get("Application") in ("Playback", "MusicOnHold")
        and e.fields.get("AppData") != "custom/hotline-greeting"
    ]


def _closed(rows: Rows) -> bool:
    return bool(rows) and all(r["outcome"] for r in rows)


def _reported(rows: Rows) -> bool:
    return bool(rows) and all(r["partner_result"] for r in rows)


async def _until(
    recorded: Recorded, number: str, done: Callable[[Rows], bool], within: float
) -> Rows:
    """The caller's rows, in visit order, once `done` holds for them."""
    key = recorded.keys.pseudonym(number)

    async def rows() -> Rows:
        out = await asyncio.to_thread(
            recorded.cluster.psql,
            "SELECT row_to_json(c) FROM (SELECT uniqueid, visit, caller_key, outcome,"
            " partner_result, rolled_over, answered_by, wait_s, talk_s, attempts"
            " FROM hotline.calls ORDER BY visit) c",
            recorded.database,
        )
        found = [_json(line) for line in out.splitlines() if line.strip()]
        return [r for r in found if r["caller_key"] == key]

    return await wait_for(rows, done, within, f"the rows of {number}")


def _json(line: str) -> dict[str, object]:
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def _near(value: object, expected: float) -> bool:
    return isinstance(value, int | float) and abs(value - expected) <= 1


def _key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((labels | {"queue": "crisis"}).items()))


def _partner_calls(samples: Samples) -> dict[str, float]:
    """hotline_partner_calls_total of the crisis queue by result, the results seen only."""
    return {
        dict(labels)["result"]: value
        for (name, labels), value in samples.items()
        if name == "hotline_partner_calls_total" and value and dict(labels)["queue"] == "crisis"
    }
