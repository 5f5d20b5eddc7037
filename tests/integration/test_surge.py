"""The surge pool against the development PBX: real calls waiting past the rule's threshold bring
the standby responder in; when the load has fallen and the hold time passed, they leave, but
not in the middle of the call they took. Every decision is in the audit trail (Postgres) and
the metrics."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from hotline.core.ami import Event
from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, Member, local, wait_for
from tests.integration.conftest import Recorded, scrape

NY = ZoneInfo("America/New_York")
ANA = local(1001)  # the standby responder: answers at once
AWAY = local(8001)  # the one on shift: never answers, so callers wait

# Two callers waiting for a second starts the surge; nobody waiting for 3 s ends it.
ROSTER = f"""
timezone: America/New_York
queues:
  crisis:
    min_responders: 1
    surge:
      standby: [r-ana]
      penalty: 10
      activate: {{callers_waiting: 2, for_seconds: 1}}
      release: {{callers_waiting: 1, for_seconds: 3}}
responders:
  r-away: {{name: Away, interface: "{AWAY}", queues: {{crisis: 0}}}}
  r-ana: {{name: Ana, interface: "{ANA}"}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-away]}}
"""
DAY = datetime(2026, 12, 2, 10, 0, tzinfo=NY)
# How long after the surge starts the standby responder must be a member: the keeper's round
# is woken at once and takes milliseconds; this leaves room for a loaded machine.
ONE_ROUND_S = 2.0


async def test_waiting_callers_bring_the_standby_responder_in_who_leaves_after_the_call(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(DAY), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-away"]}, 10, "r-away on duty")

    async def _crisis() -> list[Member]:
        return await ami.members("crisis")

    # Events from here on are this test's: the `ami` fixture's clean-up may have removed r-ana's
    # phone left over from an earlier test.
    since = len(ami.events)
    # Three callers nobody answers: they wait (r-away's phone only rings) until the 8 s maximum.
    for n in range(3):
        await ami.call("988", caller=f"+1555030000{n}", hold_s=60, talk_s=20)

    async def surging() -> frozenset[str]:
        return hotline.surge.surging

    await wait_for(surging, lambda s: s == {"crisis"}, 15, "the surge to start")
    members = await wait_for(_crisis, lambda ms: _ana(ms) is not None, ONE_ROUND_S, "r-ana in")
    ana = _ana(members)
    assert ana is not None
    assert ana.penalty == 10  # a backup: the rostered members are rung first

    # She answers a waiting caller and talks 20 s; the others give up at the maximum wait.
    await wait_for(_crisis, lambda ms: _in_call(_ana(ms)), 10, "r-ana answering a caller")
    await wait_for(surging, lambda s: s == frozenset(), 30, "the surge to end")
    # Released mid-call: she stays, shown as leaving, until her call ends.
    members = await _crisis()
    assert _in_call(_ana(members)), members
    await wait_for(
        lambda: scrape(hotline),
        lambda s: s.get(("hotline_queue_members_leaving", (("queue", "crisis"),))) == 1,
        5,
        "r-ana shown as leaving",
    )
    await wait_for(_crisis, lambda ms: _ana(ms) is None, 30, "r-ana gone after her call")
    assert [m.name for m in await _crisis()] == ["r-away"]
    # Asterisk's own order of events: her call completed before she was removed.
    completed = _first(ami.events[since:], "AgentComplete", ANA)
    removed = _first(ami.events[since:], "QueueMemberRemoved", ANA)
    assert completed is not None
    assert removed is not None
    assert completed < removed

    # Each decision, in the metrics and in the audit trail.
    samples = await scrape(hotline)
    crisis = (("queue", "crisis"),)
    assert samples[("hotline_surge_activations_total", crisis)] == 1
    assert samples[("hotline_surge_releases_total", crisis)] == 1
    assert samples[("hotline_surge_active", crisis)] == 0

    async def audit() -> list[dict[str, object]]:
        return await asyncio.to_thread(_audit_rows, recorded)

    rows = await wait_for(audit, lambda rs: len(rs) == 2, 10, "two audit entries")
    on, off = rows
    assert (on["actor"], on["role"], on["action"], on["target"]) == (
        "hotline", "system", "surge_on", "queue crisis"
    )  # fmt: skip
    after = on["after"]
    assert isinstance(after, dict)
    assert after["surging"] is True
    assert isinstance(after["callers_waiting"], int)
    assert after["callers_waiting"] >= 2
    assert str(on["reason"]).startswith("callers_waiting ")
    assert (off["action"], off["target"], off["reason"]) == (
        "surge_off", "queue crisis", "callers_waiting 0 < 1 for 3 s"
    )  # fmt: skip


def _ana(members: list[Member]) -> Member | None:
    return next((m for m in members if m.name == "r-ana"), None)


def _in_call(member: Member | None) -> bool:
    return member is not None and member.in_call


def _first(events: list[Event], name: str, interface: str) -> int | None:
    return next(
        (
            i
            for i, e in enumerate(events)
            if e.name == name and e.fields.get("Interface") == interface
        ),
        None,
    )


def _audit_rows(recorded: Recorded) -> list[dict[str, object]]:
    return recorded.select(
        "SELECT row_to_json(a) FROM (SELECT actor, role, action, target, reason, before, after"
        " FROM hotline.audit ORDER BY at, id) a"
    )
