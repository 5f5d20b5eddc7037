"""The wellbeing guardrails against the development PBX: after a real call longer than the
threshold, the responder is paused with the decompression reason for the configured time, then
unpaused; the pause is a row of hotline.pauses, and both steps are in the audit trail."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, Member, local, wait_for
from tests.integration.conftest import Recorded, scrape

NY = ZoneInfo("America/New_York")
ANA = local(1001)

# A call of at least 3 s earns a 6 s decompression pause.
ROSTER = f"""
timezone: America/New_York
queues:
  crisis:
    min_responders: 1
    wellbeing: {{decompress_after_minutes: 0.05, decompress_minutes: 0.1}}
responders:
  r-ana: {{name: Ana, interface: "{ANA}", queues: {{crisis: 0}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-ana]}}
"""
DAY = datetime(2026, 12, 2, 10, 0, tzinfo=NY)
PAUSE_S = 6.0
PAUSES = (
    "SELECT row_to_json(r) FROM (SELECT queue, interface, responder, reason, paused_by,"
    " extract(epoch FROM ended_at - started_at) AS seconds FROM hotline.pauses) r"
)
AUDIT = (
    "SELECT row_to_json(r) FROM (SELECT actor, role, action, target, reason, after"
    " FROM hotline.audit ORDER BY at, id) r"
)


async def test_a_long_call_is_followed_by_a_timed_decompression_pause(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(DAY), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 10, "r-ana on duty")
    loop = asyncio.get_running_loop()

    async def ana() -> Member:
        found = await ami.members("crisis")
        assert len(found) == 1, found
        return found[0]

    await ami.call("988", caller="+15550400001", hold_s=30, talk_s=5)
    await wait_for(ana, lambda m: m.in_call, 10, "r-ana on the call")
    assert not (await ana()).paused  # never paused mid-call
    member = await wait_for(ana, lambda m: m.paused, 15, "r-ana paused")
    paused_at = loop.time()
    assert member.paused_reason == "decompression"
    assert not member.in_call
    await wait_for(ana, lambda m: not m.paused, PAUSE_S + 5, "r-ana unpaused")
    assert PAUSE_S - 1 <= loop.time() - paused_at <= PAUSE_S + 2

    async def pauses() -> list[dict[str, object]]:
        return await asyncio.to_thread(recorded.select, PAUSES)

    rows = await wait_for(
        pauses, lambda rs: len(rs) == 1 and rs[0]["seconds"] is not None, 10, "the pause row"
    )
    row = rows[0]
    assert (row["queue"], row["interface"], row["responder"], row["reason"], row["paused_by"]) == (
        "crisis", ANA, "r-ana", "decompression", "hotline"
    )  # fmt: skip
    seconds = row["seconds"]
    assert isinstance(seconds, int | float)
    assert PAUSE_S - 1 <= seconds <= PAUSE_S + 1.5

    async def audit() -> list[dict[str, object]]:
        return await asyncio.to_thread(recorded.select, AUDIT)

    entries = await wait_for(audit, lambda rs: len(rs) == 2, 10, "two audit entries")
    paused, lifted = entries
    assert (paused["actor"], paused["role"], paused["action"], paused["target"]) == (
        "hotline", "system", "wellbeing_pause", "responder r-ana"
    )  # fmt: skip
    assert str(paused["reason"]).startswith("a call of 0.1 min in crisis")
    assert paused["after"] == {"paused": True, "reason": "decompression", "minutes": 0.1}
    assert (lifted["action"], lifted["target"]) == ("pause_lifted", "responder r-ana")

    samples = await scrape(hotline)
    labels = (("queue", "crisis"), ("trigger", "long_call"))
    assert samples[("hotline_wellbeing_pauses_total", labels)] == 1


async def test_with_postgres_away_the_pause_still_comes_and_goes_and_the_audit_loss_is_counted(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(DAY), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 10, "r-ana on duty")
    await asyncio.to_thread(recorded.cluster.stop, "immediate")

    async def paused() -> bool:
        return any(m.paused for m in await ami.members("crisis"))

    await ami.call("988", caller="+15550400002", hold_s=30, talk_s=5)
    await wait_for(paused, bool, 15, "r-ana paused")
    await wait_for(paused, lambda p: not p, PAUSE_S + 5, "r-ana unpaused")

    async def lost() -> float:
        samples = await scrape(hotline)
        return samples[("hotline_wellbeing_failures_total", (("action", "audit"),))]

    # The pause and its end: neither entry could be stored.
    await wait_for(lost, lambda n: n == 2, 20, "two audit entries counted as lost")
