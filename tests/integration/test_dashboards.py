"""A real Prometheus scrapes the daemon while real calls flow through the development PBX: every
recording rule, alert and dashboard expression parses, every recording rule and panel returns
data, and the page for callers waiting with nobody available fires when that happens."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, local, wait_for
from tests.integration.conftest import Recorded
from tests.prom import PromError, Prometheus, dashboard_expressions, rule_expressions

NY = ZoneInfo("America/New_York")


ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 2, sl_seconds: 20, sl_target: 0.9, wrapup_seconds: 30}}
  spanish: {{min_responders: 0}}
responders:
  r-ana: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-ben: {{name: Ben, interface: "{local(1002)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-ana, r-ben]}}
"""


async def test_rules_alerts_and_panels_work_against_the_live_daemon(
    recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(
        ROSTER, ManualClock(datetime(2026, 12, 2, 9, 0, tzinfo=NY)), extra=recorded.config
    )
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana", "r-ben"]}, 5, "both on duty")
    try:
        prometheus = Prometheus(target=f"127.0.0.1:{hotline.config.http.port}")
        await asyncio.to_thread(prometheus.start)
    except PromError as exc:  # a failure that says why, never a skip
        pytest.fail(f"Prometheus could not start: {exc}", pytrace=False)
    try:
        await prometheus.wait_for_scrape()

        # One responder finishes a short call and wraps up for 30 s while the other talks for
        # a minute: nobody is available, and the callers who arrive meanwhile wait, time out
        # after the 8 s maximum and roll over, or give up.
        await ami.call("988", caller="+15550400001", hold_s=60, talk_s=3)
        await ami.call("988", caller="+15550400002", hold_s=90, talk_s=60)
        await wait_for(
            ami.members, lambda ms: sum(m.in_call for m in ms) == 2, 10, "both on a call"
        )
        callers = [(f"+1555041000{i}", 4 if i == 2 else 20) for i in range(7)]
        firing = asyncio.create_task(
            _alert_fires(prometheus, "HotlineCallersWaitingNobodyAvailable")
        )
        for number, hold in callers:
            await ami.call("741", caller=number, hold_s=hold)
            await asyncio.sleep(4)  # callers arrive every few seconds: a queue that never empties
        alert = await firing
        assert alert["labels"]["queue"] == "crisis"
        assert alert["labels"]["severity"] == "page"

        await wait_for(
            lambda: prometheus.values('hotline_queue_calls_answered_total{queue="crisis"}'),
            lambda found: any(v >= 1 for v in found.values()),
            20,
            "an answered call in Prometheus",
        )
        await prometheus.wait_for_rules_evaluated()
        empty = []
        for expression in [*rule_expressions(), *dashboard_expressions()]:
            result = await prometheus.query(expression.expr)  # raises if it does not parse
            # Alerts and annotations are conditions: empty while nothing is wrong.
            is_condition = ": alert " in expression.where or ": annotation " in expression.where
            if not is_condition and not result:
                empty.append(expression.where)
        assert not empty, f"no data for: {empty}"
    finally:
        await asyncio.to_thread(prometheus.stop)


async def _alert_fires(prometheus: Prometheus, name: str) -> Any:
    def firing(items: list[Any]) -> list[Any]:
        return [a for a in items if a["labels"]["alertname"] == name and a["state"] == "firing"]

    found = await wait_for(prometheus.alerts, lambda a: bool(firing(a)), 60, f"{name} firing", 0.5)
    return firing(found)[0]
