"""Supervisors act on the live queues (hotline/app/supervisor.py): overrides stored in Postgres
and honoured by every round, across a restart, ending by themselves; pauses with a reason; the
audit trail; pause limits. Real Asterisk, real Postgres, the daemon in-process with a clock the
test drives; the supervisor service is called directly (the HTTP API has its own tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hotline import cli, daemon
from hotline.config import parse_config
from hotline.core.health import NotReady
from hotline.core.supervision import Actor, Conflict, NotFound, PbxRefused, Unavailable
from tests.conftest import launch
from tests.harness import AmiTestClient, ManualClock, Pbx, free_port, local, wait_for
from tests.integration.conftest import Recorded, scrape

NY = ZoneInfo("America/New_York")
SAM = Actor("sam", "supervisor")

ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 2, surge: {{standby: [r-4], penalty: 10}}}}
  spanish: {{min_responders: 1}}
responders:
  r-1: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-2: {{name: Ben, interface: "{local(1002)}", queues: {{crisis: 0, spanish: 1}}}}
  r-3: {{name: Cai, interface: "{local(1003)}", queues: {{crisis: 0}}}}
  r-4: {{name: Dee, interface: "{local(1004)}", queues: {{}}}}  # on standby for crisis only
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-1, r-2]}}
  - {{name: night, days: [daily], start: "20:00", end: "08:00", responders: [r-3]}}
"""
DAY = {"crisis": ["r-1", "r-2"], "spanish": ["r-2"]}
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=NY)
# Pause limits short enough to pass during a test: 3 s.
PAUSES = """
pauses:
  reasons:
    break: {digit: 1, max_minutes: 0.05}
    decompression: {digit: 2, max_minutes: 0.05, lift_at_limit: true}
    admin: {digit: 3}
"""

Started = tuple[daemon.Daemon, Callable[[], Awaitable[None]]]
Runner = Callable[..., Awaitable[Started]]


@pytest.fixture
async def run_daemon(pbx: Pbx, tmp_path: Path) -> AsyncIterator[Runner]:
    """Like `start_daemon`, but each daemon comes with its own stop, so that a test can restart
    the daemon on the same PBX and database."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(clock: ManualClock, extra: str, resync_interval: float = 60) -> Started:
        secret_file = tmp_path / "ami-secret"
        secret_file.write_text(pbx.secret)
        secret_file.chmod(0o600)
        text = (
            f"ami: {{host: 127.0.0.1, port: {pbx.ami_port}, username: hotline,"
            f" secret_file: {secret_file}, ping_interval: 1, ping_timeout: 1}}\n"
            f'http: {{listen: "127.0.0.1:{free_port()}"}}\n'
            f"reconcile: {{resync_interval: {resync_interval}}}\n" + extra + ROSTER
        )
        config = parse_config(text, tmp_path / "hotline.yaml")
        hotline, stop, task = await launch(config, clock)
        running.append((stop, task))

        async def halt() -> None:
            stop.set()
            await task

        return hotline, halt

    yield start
    for stop, task in running:
        stop.set()
        with contextlib.suppress(Exception):
            await task


async def _rounds(hotline: daemon.Daemon, n: int) -> None:
    start = hotline.keeper.rounds

    async def done() -> int:
        return hotline.keeper.rounds - start

    await wait_for(done, lambda count: count >= n, 5, f"{n} resync rounds")


def _audit(recorded: Recorded) -> list[dict[str, object]]:
    return recorded.select(
        "SELECT row_to_json(a) FROM (SELECT actor, role, action, target, reason, before, after,"
        " request_id FROM hotline.audit ORDER BY id) a"
    )


async def test_an_override_off_holds_across_resyncs_and_a_restart_and_ends_by_itself(
    recorded: Recorded, ami: AmiTestClient, run_daemon: Runner, tmp_path: Path
) -> None:
    clock = ManualClock(NOON)
    hotline, halt = await run_daemon(clock, recorded.config, resync_interval=0.2)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")

    until = NOON + timedelta(hours=2)
    override = await hotline.supervisor.add_override(
        SAM, "r-1", False, None, until, "unwell", "req-off"
    )
    without_ana = {"crisis": ["r-2"], "spanish": ["r-2"]}
    await wait_for(ami.names, lambda n: n == without_ana, 2, "r-1 off within 2 s")
    await _rounds(hotline, 3)
    assert await ami.names() == without_ana
    assert hotline.supervisor.overrides() == [override]

    # A restart: the override comes back from Postgres before the first round, so r-1 is
    # never added again.
    await halt()
    ami.events.clear()
    hotline, halt = await run_daemon(clock, recorded.config, resync_interval=0.2)
    await _rounds(hotline, 3)
    assert await ami.names() == without_ana
    added = [e for e in ami.events if e.name == "QueueMemberAdded"]
    assert [e.fields.get("MemberName") for e in added] == []
    assert hotline.supervisor.overrides() == [override]
    assert NotReady.OVERRIDES_NOT_LOADED not in hotline.supervisor.readiness()

    # `hotline plan` reads it from Postgres and applies it.
    plan = await _plan(tmp_path, recorded, NOON + timedelta(minutes=30))
    assert plan["overrides_read"] is True
    assert [m["responder"] for m in plan["queues"]["crisis"]] == ["r-2"]
    assert plan["excluded"]["crisis"][0] == {
        "responder": "r-1",
        "why": "override_off",
        "lacking": [],
    }
    assert [o["id"] for o in plan["overrides"]] == [override.id]

    # It ends by itself at its end time.
    clock.set(until)
    await wait_for(ami.names, lambda n: n == DAY, 2, "r-1 back at the override's end")
    assert hotline.supervisor.overrides() == []

    rows = _audit(recorded)
    assert [(r["actor"], r["role"], r["action"], r["request_id"]) for r in rows] == [
        ("sam", "supervisor", "override_add", "req-off")
    ]
    assert rows[0]["reason"] == "unwell"
    assert rows[0]["target"] == f"override {override.id} for responder r-1"
    assert rows[0]["before"] == {
        "crisis": {"member": True, "why": "shift"},
    }
    after = rows[0]["after"]
    assert isinstance(after, dict)
    assert (after["kind"], after["queues"]) == ("off", None)


async def test_an_override_on_adds_a_responder_off_shift_and_cancelling_it_removes_them(
    recorded: Recorded, ami: AmiTestClient, run_daemon: Runner
) -> None:
    clock = ManualClock(NOON)
    hotline, _ = await run_daemon(clock, recorded.config)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")
    supervisor = hotline.supervisor

    override = await supervisor.add_override(
        SAM, "r-3", True, ["crisis"], NOON + timedelta(hours=2), None, "req-on"
    )
    with_cai = {"crisis": ["r-1", "r-2", "r-3"], "spanish": ["r-2"]}
    await wait_for(ami.names, lambda n: n == with_cai, 2, "r-3 on cover within 2 s")

    await supervisor.cancel_override(SAM, override.id, "Cai went home", "req-cancel")
    await wait_for(ami.names, lambda n: n == DAY, 2, "r-3 gone once cancelled")
    assert supervisor.overrides() == []

    # A standby responder, with no queue of their own, called in without a surge: added to the
    # queue they stand by for, with the standby penalty; gone again when the override ends.
    standby = await supervisor.add_override(
        SAM, "r-4", True, None, NOON + timedelta(hours=2), "cover", "req-standby"
    )
    with_dee = {"crisis": ["r-1", "r-2", "r-4"], "spanish": ["r-2"]}
    await wait_for(ami.names, lambda n: n == with_dee, 2, "r-4 on cover within 2 s")
    assert {m.name: m.penalty for m in await ami.members("crisis")}["r-4"] == 10
    clock.set(standby.end)
    await wait_for(ami.names, lambda n: n == DAY, 2, "r-4 gone at the override's end")

    # What cannot be done is refused with the errors the API maps, and changes nothing.
    with pytest.raises(NotFound) as unknown:
        await supervisor.cancel_override(SAM, 999_999, None, "req-x")
    assert unknown.value.kind == "override"
    with pytest.raises(Conflict):
        await supervisor.cancel_override(SAM, override.id, None, "req-x")
    with pytest.raises(Conflict):
        await supervisor.add_override(SAM, "r-3", True, None, NOON, None, "req-x")
    with pytest.raises(NotFound):
        await supervisor.add_override(SAM, "r-9", True, None, NOON + timedelta(hours=1), None, "x")
    with pytest.raises(Conflict):  # r-1 does not serve spanish
        await supervisor.add_override(
            SAM, "r-1", True, ["spanish"], NOON + timedelta(hours=1), None, "x"
        )
    assert [(r["action"], r["request_id"]) for r in _audit(recorded)] == [
        ("override_add", "req-on"),
        ("override_cancel", "req-cancel"),
        ("override_add", "req-standby"),
    ]
    # The audit trail in full for admins; without the states before and after for the others.
    full, reduced = await supervisor.audit(10, True), await supervisor.audit(10, False)
    assert [e.action for e in full] == ["override_add", "override_cancel", "override_add"]
    assert full[1].reason == "Cai went home"
    assert full[1].before is not None
    assert [(e.actor, e.action, e.reason, e.before, e.after) for e in reduced] == [
        ("sam", "override_add", "cover", None, None),
        ("sam", "override_cancel", "Cai went home", None, None),
        ("sam", "override_add", None, None, None),
    ]


async def test_a_pause_with_a_reason_reaches_asterisk_the_pauses_table_and_the_audit_trail(
    recorded: Recorded, ami: AmiTestClient, run_daemon: Runner
) -> None:
    hotline, _ = await run_daemon(ManualClock(NOON), recorded.config)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")
    supervisor = hotline.supervisor

    result = await supervisor.pause(SAM, "r-1", "crisis", "break", "req-pause")
    assert result["audited"] is True

    async def crisis_members() -> dict[str, tuple[bool, str]]:
        return {m.name: (m.paused, m.paused_reason) for m in await ami.members("crisis")}

    members = await wait_for(crisis_members, lambda m: m["r-1"][0], 2, "r-1 paused")
    assert members == {"r-1": (True, "break"), "r-2": (False, "")}

    def pauses() -> list[dict[str, object]]:
        return recorded.select(
            "SELECT row_to_json(p) FROM (SELECT queue, responder, reason, paused_by, ended_at"
            " FROM hotline.pauses) p"
        )

    rows = await wait_for(lambda: asyncio.to_thread(pauses), bool, 5, "the pause in hotline.pauses")
    assert rows == [
        {
            "queue": "crisis",
            "responder": "r-1",
            "reason": "break",
            "paused_by": "hotline",
            "ended_at": None,
        }
    ]
    audit = _audit(recorded)
    assert [(a["actor"], a["role"], a["action"], a["reason"]) for a in audit] == [
        ("sam", "supervisor", "pause", "break")
    ]
    assert audit[0]["target"] == "responder r-1 in crisis"
    assert audit[0]["before"] == {"crisis": {"paused": False, "reason": None}}
    assert audit[0]["after"] == {"crisis": {"paused": True, "reason": "break"}}
    assert audit[0]["request_id"] == "req-pause"

    # Unpaused in every queue at once.
    await supervisor.unpause(SAM, "r-1", None, "req-unpause")
    await wait_for(crisis_members, lambda m: not m["r-1"][0], 2, "r-1 unpaused")
    assert _audit(recorded)[-1]["action"] == "unpause"

    # Refusals: an unconfigured reason, an unknown responder or queue, a responder who is not
    # a member (Asterisk's own words).
    with pytest.raises(NotFound) as reason:
        await supervisor.pause(SAM, "r-1", "crisis", "nap", "x")
    assert reason.value.kind == "reason"
    with pytest.raises(NotFound):
        await supervisor.pause(SAM, "r-9", None, "break", "x")
    with pytest.raises(NotFound):
        await supervisor.pause(SAM, "r-1", "nowhere", "break", "x")
    with pytest.raises(PbxRefused):
        await supervisor.pause(SAM, "r-3", "crisis", "break", "x")
    assert len(_audit(recorded)) == 2


async def test_a_pause_past_its_limit_is_counted_and_lifted_only_where_configured(
    recorded: Recorded, ami: AmiTestClient, run_daemon: Runner
) -> None:
    hotline, _ = await run_daemon(ManualClock(NOON), recorded.config + PAUSES)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")
    supervisor = hotline.supervisor

    await supervisor.pause(SAM, "r-1", "crisis", "decompression", "req-1")
    await supervisor.pause(SAM, "r-2", "crisis", "break", "req-2")

    async def paused() -> dict[str, bool]:
        return {m.name: m.paused for m in await ami.members("crisis")}

    await wait_for(paused, lambda p: p == {"r-1": True, "r-2": True}, 2, "both paused")
    # The 3 s limit: the decompression pause is lifted, the break only reported.
    await wait_for(paused, lambda p: p == {"r-1": False, "r-2": True}, 8, "r-1 lifted")
    over = supervisor.over_limit_pauses()
    assert [(o.responder, o.queue, o.reason, o.limit_s, o.lift) for o in over] == [
        ("r-2", "crisis", "break", 3.0, False)
    ]
    samples = await scrape(hotline)
    assert samples[("hotline_pauses_over_limit", (("queue", "crisis"), ("reason", "break")))] == 1
    decompression = (("queue", "crisis"), ("reason", "decompression"))
    assert samples[("hotline_pauses_over_limit", decompression)] == 0
    lifted = ("hotline_pauses_lifted_total", (("reason", "decompression"),))
    assert samples[lifted] == 1

    rows = await wait_for(
        lambda: asyncio.to_thread(_audit, recorded), lambda r: len(r) == 3, 5, "the lift audited"
    )
    assert [(r["actor"], r["role"], r["action"], r["target"]) for r in rows[2:]] == [
        ("hotline", "system", "pause_lifted", "responder r-1 in crisis")
    ]
    # Still paused a while later: a break is never lifted by hotline.
    await asyncio.sleep(1)
    assert (await paused())["r-2"] is True


async def test_overrides_need_postgres_and_are_loaded_once_it_is_back(
    recorded: Recorded, ami: AmiTestClient, run_daemon: Runner
) -> None:
    clock = ManualClock(NOON)
    first, halt = await run_daemon(clock, recorded.config)
    await wait_for(ami.names, lambda n: n == DAY, 5, "the day shift")
    await first.supervisor.add_override(
        SAM, "r-2", False, ["spanish"], NOON + timedelta(hours=1), None, "req-1"
    )
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-1", "r-2"]}, 2, "r-2 off spanish")
    await halt()

    # Postgres down at start: the daemon runs, says so on /readyz, refuses new overrides.
    await asyncio.to_thread(recorded.cluster.stop, "immediate")
    hotline, _ = await run_daemon(clock, recorded.config)
    assert NotReady.OVERRIDES_NOT_LOADED in hotline.supervisor.readiness()
    with pytest.raises(Unavailable):
        await hotline.supervisor.add_override(
            SAM, "r-1", False, None, NOON + timedelta(hours=1), None, "req-2"
        )
    with pytest.raises(Unavailable):
        await hotline.supervisor.audit(10, True)

    # Back: loaded within the retry interval, and honoured.
    await asyncio.to_thread(recorded.cluster.start)

    async def loaded() -> bool:
        return hotline.supervisor.loaded

    await wait_for(loaded, bool, 15, "the overrides loaded once Postgres is back")
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-1", "r-2"]}, 2, "r-2 off spanish")
    assert [(r["action"], r["request_id"]) for r in _audit(recorded)] == [("override_add", "req-1")]


async def _plan(tmp_path: Path, recorded: Recorded, at: datetime) -> dict[str, Any]:
    """`hotline plan --json` with the test's database, in a thread (it runs its own loop)."""
    config = tmp_path / "plan.yaml"
    config.write_text(
        "ami: {host: 127.0.0.1, port: 5038, username: hotline, secret_env: UNUSED}\n"
        + recorded.config
        + ROSTER
    )
    out = tmp_path / "plan.json"

    def run() -> int:
        with out.open("w") as sink, contextlib.redirect_stdout(sink):
            return cli.main(["plan", "-c", str(config), "--at", at.isoformat(), "--json"])

    assert await asyncio.to_thread(run) == 0
    plan: dict[str, Any] = json.loads(out.read_text())
    return plan
