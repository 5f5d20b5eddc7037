"""Every call recorded in Postgres, end to end: real calls through the development PBX's inbound
context, a real Postgres, the daemon in-process with a clock the test drives."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from hotline.daemon import Daemon
from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, local, wait_for
from tests.integration.conftest import Recorded, scrape

NY = ZoneInfo("America/New_York")


# 10:00 someone who answers; 10:10 someone who never answers; 10:20 nobody at all.
ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 1}}
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
NOBODY = datetime(2026, 12, 2, 10, 20, 30, tzinfo=NY)


async def test_every_call_is_recorded_with_its_outcome_responder_wait_and_talk(
    recorded: Recorded,
    ami: AmiTestClient,
    start_daemon: StartDaemon,
    capfd: pytest.CaptureFixture[str],
) -> None:
    clock = ManualClock(ANSWERING)
    hotline = await start_daemon(ROSTER, clock, extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 5, "r-ana on duty")

    # Answered: r-ana answers at once and talks 3 s.
    await ami.call("988", caller="+1 555 010 0001", hold_s=30, talk_s=3)
    await _until_closed(recorded, "+15550100001")

    # Abandoned (the caller gives up after 4 s in the queue, behind a 1 s greeting) and timed
    # out (the 8 s maximum wait, then rollover to the stand-in partner centre, which answers and
    # talks until the caller hangs up), while r-away's phone rings and rings.
    clock.set(RINGING)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-away"]}, 5, "r-away on duty")
    await ami.call("988", caller="5550100002", hold_s=5)
    await ami.call("741", caller="+15550100003", hold_s=12)
    await _until_closed(recorded, "+15550100002", within=15)
    await _until_closed(recorded, "+15550100003", within=20, partner=True)

    # Refused: nobody staffed at all; rolled over at once, to the partner centre.
    clock.set(NOBODY)
    await wait_for(ami.names, lambda n: n == {}, 5, "nobody on duty")
    await ami.call("988", caller="+15550100004", hold_s=5)
    await _until_closed(recorded, "+15550100004", partner=True)

    answered, abandoned, timeout, refused = (
        _only(recorded.by_caller(n))
        for n in ("+15550100001", "+15550100002", "+15550100003", "+15550100004")
    )
    assert answered["outcome"] == "answered"
    assert answered["answered_by"] == "r-ana"
    assert _near(answered["wait_s"], 0)
    assert _near(answered["talk_s"], 3)
    assert answered["campaign"] == "988"
    attempts = answered["attempts"]
    assert isinstance(attempts, list)
    assert [a["outcome"] for a in attempts] == ["answered"]

    assert abandoned["outcome"] == "abandoned"
    assert abandoned["answered_by"] is None
    assert _near(abandoned["wait_s"], 4)
    assert abandoned["rolled_over"] is False

    # Timed out of the queue, then taken by the partner centre: a rollover.
    assert timeout["outcome"] == "rollover"
    assert timeout["partner_result"] == "answered"
    assert _near(timeout["wait_s"], 8)
    assert timeout["rolled_over"] is True
    assert timeout["campaign"] == "741"

    assert refused["outcome"] == "rollover"
    assert refused["partner_result"] == "answered"
    assert refused["wait_s"] == 0
    assert refused["rolled_over"] is True
    assert answered["partner_result"] is None

    # The metrics agree with the rows: the same calls, the same outcomes.
    samples = await scrape(hotline)
    rows = recorded.rows()
    outcomes = [r["outcome"] for r in rows]
    crisis = {"queue": "crisis"}
    assert samples[("hotline_queue_calls_offered_total", _key(crisis))] == len(rows)
    assert samples[("hotline_queue_calls_answered_total", _key(crisis))] == outcomes.count(
        "answered"
    )
    assert samples[("hotline_queue_calls_abandoned_total", _key(crisis))] == outcomes.count(
        "abandoned"
    )
    # Exits count how the calls left the queue (a timeout, a refused join), though the partner
    # centre then took both; the partner's results are counted apart.
    for reason in ("timeout", "refused"):
        labels = _key(crisis | {"reason": reason})
        assert samples[("hotline_queue_calls_exited_total", labels)] == 1
    assert outcomes.count("rollover") == 2
    partner_answered = _key(crisis | {"result": "answered"})
    assert samples[("hotline_partner_calls_total", partner_answered)] == 2
    waits = {
        kind: samples[("hotline_queue_wait_seconds_count", _key(crisis | {"outcome": kind}))]
        for kind in ("answered", "abandoned", "exited")
    }
    assert waits == {"answered": 1, "abandoned": 1, "exited": 2}
    assert sum(waits.values()) == len(rows)
    talk_count = samples[("hotline_call_talk_seconds_count", _key(crisis))]
    assert talk_count == sum(1 for r in rows if r["talk_s"] is not None)
    # Answered within the 20 s service-level threshold: a bucket edge, so exact.
    answered_20 = _key(crisis | {"outcome": "answered", "le": "20.0"})
    assert samples[("hotline_queue_wait_seconds_bucket", answered_20)] == 1

    # The same caller keeps the same pseudonym; the raw numbers are nowhere.
    await _nothing_identifies_the_callers(hotline, recorded, capfd)


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


async def _nothing_identifies_the_callers(
    hotline: Daemon, recorded: Recorded, capfd: pytest.CaptureFixture[str]
) -> None:
    numbers = ["5550100001", "5550100002", "5550100003", "5550100004"]
    dump = await asyncio.to_thread(recorded.cluster.pg_dump, recorded.database)
    assert "INSERT" in dump or "COPY" in dump
    url = f"http://127.0.0.1:{hotline.config.http.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        metrics = await response.text()
    logs = "".join(capfd.readouterr())
    spooled = "".join(
        p.read_text(errors="replace") for p in recorded.spool.rglob("*") if p.is_file()
    )
    for where, text in (("pg_dump", dump), ("/metrics", metrics), ("logs", logs)):
        digits = re.sub(r"\D", "", text)
        for number in numbers:
            assert number not in text, f"{number} in {where}"
            assert number not in digits, f"{number} in {where} (formatted)"
    for number in numbers:
        assert number not in spooled


async def _until_closed(
    recorded: Recorded, number: str, within: float = 15, *, partner: bool = False
) -> None:
    """Until the caller's rows are closed, and if `partner`, have the partner centre's result."""

    async def rows() -> list[dict[str, object]]:
        return await asyncio.to_thread(recorded.by_caller, number)

    await wait_for(
        rows,
        lambda rs: (
            bool(rs) and all(r["outcome"] and (r["partner_result"] or not partner) for r in rs)
        ),
        within,
        f"{number} closed",
    )


def _only(rows: list[dict[str, object]]) -> dict[str, object]:
    assert len(rows) == 1, rows
    return rows[0]


def _near(value: object, expected: float) -> bool:
    return isinstance(value, int | float) and abs(value - expected) <= 1


async def test_calls_completing_while_postgres_is_down_are_all_recorded_exactly_once(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(ANSWERING), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 5, "r-ana on duty")
    store = hotline.store
    assert store is not None

    await asyncio.to_thread(recorded.cluster.stop, "immediate")
    loop = asyncio.get_running_loop()
    down_at = loop.time()
    # One call r-ana answers; two more give up waiting while she talks, then wraps up.
    await ami.call("988", caller="+15550200001", hold_s=25, talk_s=2)
    await wait_for(ami.members, lambda ms: any(m.in_call for m in ms), 10, "r-ana on the call")
    await ami.call("988", caller="+15550200002", hold_s=6)
    await ami.call("988", caller="+15550200003", hold_s=9)

    async def status() -> str:
        return store.status()

    await wait_for(status, lambda s: "spooled" in s, 20, "records spooled while Postgres is down")
    # Down for 30 s in all, while the calls completed.
    await asyncio.sleep(max(0.0, 30 - (loop.time() - down_at)))
    assert hotline.ledger is not None
    assert hotline.ledger.book.open_count == 0
    await asyncio.to_thread(recorded.cluster.start)

    async def rows() -> list[dict[str, object]]:
        return await asyncio.to_thread(recorded.rows)

    found = await wait_for(
        rows, lambda rs: len(rs) == 3 and all(r["outcome"] for r in rs), 15, "all calls in Postgres"
    )
    outcomes = {str(r["caller_key"]): r["outcome"] for r in found}
    assert outcomes == {
        recorded.keys.pseudonym("+15550200001"): "answered",
        recorded.keys.pseudonym("+15550200002"): "abandoned",
        recorded.keys.pseudonym("+15550200003"): "abandoned",
    }
    await wait_for(status, lambda s: s == "", 10, "the spool replayed and emptied")
