"""The daemon keeps Asterisk's queue membership equal to the roster: real Asterisk, driven clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp

from hotline.core.health import NotReady
from hotline.daemon import Daemon
from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, Pbx, free_port, local, wait_for

NY = ZoneInfo("America/New_York")


ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 2}}
  spanish: {{min_responders: 1}}
responders:
  r-1: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-2: {{name: Ben, interface: "{local(1002)}", queues: {{crisis: 0, spanish: 1}}}}
  r-3: {{name: Cai, interface: "{local(1003)}", queues: {{crisis: 0}}}}
  r-4: {{name: Dee, interface: "{local(1004)}", queues: {{crisis: 2, spanish: 0}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-1, r-2]}}
  - {{name: night, days: [daily], start: "20:00", end: "08:00", responders: [r-3, r-4]}}
"""
DAY = {"crisis": ["r-1", "r-2"], "spanish": ["r-2"]}
NIGHT = {"crisis": ["r-3", "r-4"], "spanish": ["r-4"]}
BEFORE_NIGHT = datetime(2026, 12, 2, 19, 59, 50, tzinfo=NY)
NIGHTFALL = datetime(2026, 12, 2, 20, 0, tzinfo=NY)


async def test_queues_show_exactly_the_roster_within_two_seconds_of_a_shift_boundary(
    ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    clock = ManualClock(BEFORE_NIGHT)
    await start_daemon(ROSTER, clock)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")

    clock.set(NIGHTFALL)
    await wait_for(ami.names, lambda n: n == NIGHT, 2, "the night shift within 2 s")
    penalties = {(m.queue, m.name): m.penalty for m in await ami.members()}
    assert penalties == {("crisis", "r-3"): 0, ("crisis", "r-4"): 2, ("spanish", "r-4"): 0}


async def test_membership_is_back_within_five_seconds_of_fullybooted_after_a_pbx_restart(
    pbx: Pbx, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    clock = ManualClock(BEFORE_NIGHT)
    hotline = await start_daemon(ROSTER, clock)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")

    # Down with its members lost (no astdb), back up: everything must be re-added.
    await asyncio.to_thread(pbx.stop)
    await wait_for(_is_down(hotline), bool, 10, "the daemon to see the PBX go")
    await asyncio.to_thread(pbx.wipe_astdb)
    await asyncio.to_thread(pbx.start)  # returns once Asterisk is fully booted
    async with AmiTestClient(pbx) as fresh:
        await wait_for(fresh.names, lambda n: n == DAY, 5, "the day shift after a cold start")

    # Down across a shift change, back up with astdb restoring the stale day shift.
    await asyncio.to_thread(pbx.stop)
    clock.set(NIGHTFALL)
    await asyncio.to_thread(pbx.start)
    async with AmiTestClient(pbx) as fresh:
        await wait_for(fresh.names, lambda n: n == NIGHT, 5, "the night shift after restart")


async def _rounds(hotline: Daemon, n: int) -> None:
    """Wait until the keeper has done `n` more reconcile rounds."""
    start = hotline.keeper.rounds

    async def done() -> int:
        return hotline.keeper.rounds - start

    await wait_for(done, lambda count: count >= n, 5, f"{n} resync rounds")


def _is_down(hotline: Daemon) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return not hotline.link.up

    return probe


async def test_a_desired_member_removed_by_hand_is_back_within_five_seconds(
    ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    await start_daemon(ROSTER, ManualClock(BEFORE_NIGHT))
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")

    await ami.action({"Action": "QueueRemove", "Queue": "crisis", "Interface": local(1001)})
    assert (await ami.names())["crisis"] == ["r-2"]
    await wait_for(ami.names, lambda n: n == DAY, 5, "r-1 back in crisis")


async def test_a_member_that_is_not_ours_survives_three_resync_rounds(
    ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(BEFORE_NIGHT), resync_interval=0.2)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")
    await ami.action(
        {
            "Action": "QueueAdd",
            "Queue": "crisis",
            "Interface": local(1009),
            "MemberName": "visiting-supervisor",
        }
    )
    await _rounds(hotline, 3)
    assert await ami.names() == {
        "crisis": ["r-1", "r-2", "visiting-supervisor"],
        "spanish": ["r-2"],
    }


async def test_a_responder_paused_by_someone_else_stays_paused(
    ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(BEFORE_NIGHT), resync_interval=0.2)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")
    await ami.action(
        {
            "Action": "QueuePause",
            "Queue": "crisis",
            "Interface": local(1001),
            "Paused": "true",
            "Reason": "supervision",
        }
    )
    await _rounds(hotline, 3)
    paused = {(m.queue, m.name): m.paused for m in await ami.members()}
    assert paused == {("crisis", "r-1"): True, ("crisis", "r-2"): False, ("spanish", "r-2"): False}


async def test_a_member_whose_shift_ends_during_a_call_stays_until_the_call_ends(
    ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    roster = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 1}}
  spanish: {{min_responders: 0}}
responders:
  r-1: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-3: {{name: Cai, interface: "{local(1003)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-1]}}
  - {{name: night, days: [daily], start: "20:00", end: "08:00", responders: [r-3]}}
"""
    clock = ManualClock(BEFORE_NIGHT)
    await start_daemon(roster, clock)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-1"]}, 5, "the day shift")

    await ami.call("988", caller="+15550100001", hold_s=30, talk_s=4)
    await wait_for(ami.members, lambda ms: any(m.in_call for m in ms), 10, "r-1 on the call")

    clock.set(NIGHTFALL)
    members = await wait_for(
        ami.members, lambda ms: {m.name for m in ms} == {"r-1", "r-3"}, 2, "r-3 added, r-1 kept"
    )
    assert [m.name for m in members if m.in_call] == ["r-1"]
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-3"]}, 8, "r-1 gone after the call")


async def test_readyz_says_why_while_ami_is_unreachable_at_start(
    start_daemon: StartDaemon,
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(BEFORE_NIGHT), ami_port=free_port())
    url = f"http://127.0.0.1:{hotline.config.http.port}"
    async with aiohttp.ClientSession() as http:

        async def readyz() -> tuple[int, dict[str, object]]:
            async with http.get(url + "/readyz") as response:
                return response.status, await response.json()

        status, body = await wait_for(
            readyz, lambda r: bool(r[1]["reasons"]), 5, "a reason on /readyz"
        )
        # A fixed code and sentence: the connection error itself is only in the log.
        assert status == 503
        assert body == {
            "ready": False,
            "reasons": [{"code": "ami_not_live", "text": NotReady.AMI_NOT_LIVE.text}],
        }
        async with http.get(url + "/healthz") as response:
            assert response.status == 200
        async with http.get(url + "/metrics") as response:
            text = await response.text()
    assert "hotline_ami_up 0.0" in text
    assert 'hotline_ami_connect_attempts_total{result="refused"}' in text
