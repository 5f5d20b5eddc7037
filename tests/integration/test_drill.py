"""A short capacity drill (bench/drill): SIPp places 30 calls at once for a minute over SIP into
the crisis line of a PBX instance of the drill's own, SIPp phones answer as responders, and a
real `hotline run` process with Postgres records them. Every call must have exactly one record
that agrees with SIPp's own timings: outcome, responder, answer and end instants, wait and talk
within a second."""

from __future__ import annotations

import shutil

import pytest

from bench.drill.run import Plan, drill

CONCURRENCY = 30
HOLD_S = 60


async def test_thirty_calls_at_once_for_a_minute_each_get_exactly_one_correct_record() -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (deploy/setup-host.sh installs sip-tester)")
    plan = Plan(talk_s=10.5)
    async with drill(plan, CONCURRENCY) as rig:
        step = await rig.step(CONCURRENCY, HOLD_S)
        problems = rig.hotline.problems() if rig.hotline else ["no daemon"]
    verdict = step.verdict
    assert verdict is not None
    # The load was what was asked for: the carrier held 30 calls up and a phone answered each.
    assert step.carrier_exit == 0, f"SIPp's carrier reported failed calls ({step.carrier_errors})"
    assert step.peak_concurrency == CONCURRENCY
    assert verdict.calls >= plan.rate(CONCURRENCY) * HOLD_S * 0.95
    assert verdict.answered_by_phone == verdict.calls
    # Every call: exactly one record, and that record agrees with SIPp.
    assert verdict.problems == []
    assert verdict.rows == verdict.calls
    assert verdict.correct == verdict.calls
    assert set(verdict.worst) == {"wait_s", "talk_s", "answered_at", "ended_at"}
    # The daemon saw the events and wrote them, logged no trouble and dropped nothing. (Under
    # load Asterisk now and then publishes an AgentComplete without either channel's fields,
    # about one call in 150 here: no record needs it, so it is counted apart, never dropped.)
    assert step.lag_events > 0
    assert step.writes > 0
    assert problems == []
    assert step.dropped == {}
