"""The wellbeing guardrails at work: member and call events go to `core.wellbeing.Guards`, and
what it decides is carried out. A pause is sent to Asterisk (QueuePause on the responder's
interface, in every queue, with the decision's reason), written to the audit trail, and lifted
when its time is up, unless the responder has meanwhile ended it or taken a pause of their own.
A cap that only alerts is logged and shown in the metrics.

Its timers run on the injected clock; the daemon gives it the wall clock, as the call times
come from Asterisk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Protocol

import structlog

from hotline.app.surge import AuditTrail
from hotline.core.ami import Event, EventName, Reply, field_flag, field_text
from hotline.core.clock import Clock
from hotline.core.wellbeing import (
    Decision,
    Guards,
    HardCallFlagged,
    Limit,
    Outcome,
    PauseAction,
    Trigger,
)

log = structlog.get_logger("hotline.wellbeing")

# How often the time-in-queue cap is looked at (it is also looked at after every call).
TICK_S = 5.0


class Pauser(Protocol):
    """The AMI link, as the guardrails use it."""

    async def send(self, action: Mapping[str, str]) -> Reply: ...


class WellbeingObserver(Protocol):
    def paused(self, queue: str, trigger: Trigger) -> None: ...
    def limit_reached(self, queue: str, limit: Limit) -> None: ...
    def hard_call_flagged(self, queue: str) -> None: ...
    def over_limit(self, counts: Mapping[tuple[str, Limit], int]) -> None: ...
    def action_failed(self, action: PauseAction) -> None: ...


class WellbeingKeeper:
    # The events `on_event` reads; the daemon routes only these here.
    EVENTS: frozenset[EventName] = Guards.EVENTS

    def __init__(
        self,
        guards: Guards,
        pauser: Pauser,
        clock: Clock,
        observer: WellbeingObserver,
        audit: AuditTrail,
    ) -> None:
        self.guards = guards
        self.pauser = pauser
        self.clock = clock
        self.observer = observer
        self.audit = audit
        self._due: asyncio.Queue[Decision] = asyncio.Queue()
        # Interfaces with a pause of ours under way (asked for, or running its time).
        self._pausing: set[str] = set()
        observer.over_limit(guards.over_limit())

    def on_event(self, event: Event) -> None:
        self._take(self.guards.feed(event.name, event.fields, self._now()))

    def on_status(self, items: list[Mapping[str, str]]) -> None:
        """A QueueStatus read: members the events missed (a restart, a reconnect)."""
        members = [
            (
                item.get("Queue", ""),
                item.get("Location", ""),
                item.get("Name", ""),
                field_flag(item, "Paused") is True,
                field_text(item, "PausedReason") or "",
                field_flag(item, "InCall") is True,
            )
            for item in items
            if item.get("Event") == "QueueMember"
        ]
        self.guards.resync(members, self._now())
        self.observer.over_limit(self.guards.over_limit())

    def tick(self) -> None:
        self._take(self.guards.tick(self._now()))

    async def run(self) -> None:
        """Carry out the pauses as they fall due, and look at the time caps every TICK_S."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._ticks())
            while True:
                decision = await self._due.get()
                if decision.interface not in self._pausing:
                    self._pausing.add(decision.interface)
                    tasks.create_task(self._pause(decision))

    async def _ticks(self) -> None:
        while True:
            await _sleep(self.clock, TICK_S)
            self.tick()

    def _take(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, HardCallFlagged):
                self.observer.hard_call_flagged(outcome.queue)
                log.info("hard_call_flagged", queue=outcome.queue, responder=outcome.responder)
                continue
            if outcome.trigger != "long_call":
                self.observer.limit_reached(outcome.queue, outcome.trigger)
            if outcome.action == "pause":
                self._due.put_nowait(outcome)
            else:
                log.warning(
                    "wellbeing_limit_reached",
                    queue=outcome.queue,
                    responder=outcome.responder,
                    limit=outcome.trigger,
                    why=outcome.why,
                )
        if outcomes:
            self.observer.over_limit(self.guards.over_limit())

    async def _pause(self, decision: Decision) -> None:
        interface, reason = decision.interface, decision.reason or ""
        try:
            self.guards.expect_pause(interface)
            reply = await self.pauser.send(
                {"Action": "QueuePause", "Interface": interface, "Paused": "true", "Reason": reason}
            )
            if not reply.ok:
                self.guards.pause_failed(interface)
                self._failed("pause", decision, reply)
                return
            minutes = round(decision.duration_s / 60, 2)
            self.observer.paused(decision.queue, decision.trigger)
            log.warning(
                "wellbeing_pause",
                queue=decision.queue,
                responder=decision.responder,
                trigger=decision.trigger,
                reason=reason,
                minutes=minutes,
                why=decision.why,
            )
            target = f"responder {decision.responder}"
            self.audit.record(
                self.clock,
                action="wellbeing_pause",
                target=target,
                reason=decision.why,
                before={"paused": False},
                after={"paused": True, "reason": reason, "minutes": minutes},
            )
            await _sleep(self.clock, decision.duration_s)
            if not self.guards.paused_by_us(interface):
                log.info("wellbeing_pause_ended_by_responder", responder=decision.responder)
                return
            reply = await self.pauser.send(
                {"Action": "QueuePause", "Interface": interface, "Paused": "false"}
            )
            if not reply.ok:
                self._failed("unpause", decision, reply)
                return
            log.info("wellbeing_pause_lifted", responder=decision.responder, reason=reason)
            self.audit.record(
                self.clock,
                action="pause_lifted",
                target=target,
                reason=f"the {minutes:g} min wellbeing pause is over",
                before={"paused": True, "reason": reason},
                after={"paused": False},
            )
        finally:
            self._pausing.discard(interface)

    def _failed(self, action: PauseAction, decision: Decision, reply: Reply) -> None:
        self.observer.action_failed(action)
        log.warning(
            "wellbeing_action_failed",
            action=action,
            responder=decision.responder,
            result=reply.result.value,
            error=reply.message,
        )

    def _now(self) -> float:
        return self.clock.now().timestamp()


async def _sleep(clock: Clock, seconds: float) -> None:
    """`seconds` on `clock` (whose sleeps may return early, for a clock that can jump)."""
    until = clock.now() + timedelta(seconds=seconds)
    while clock.now() < until:
        await clock.sleep_until(until)
