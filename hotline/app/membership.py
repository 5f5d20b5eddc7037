"""The membership keeper: the one task that writes queue membership to Asterisk.

Level-triggered: each round reads QueueStatus, plans with `reconcile.plan` against the roster at
the clock's now, and applies the plan. Events only wake it: a shift boundary, AMI (re)login, a
member change it did not cause, a call ending for a member due to leave, and a periodic resync.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from hotline.core import reconcile, roster
from hotline.core.ami import Event, EventName, Reply, Result
from hotline.core.clock import Clock
from hotline.core.health import NotReady
from hotline.core.presence import MemberChange
from hotline.core.reconcile import Action, Add, Remove, RoundResult, SetPenalty, Trigger
from hotline.core.records import JoinReason, LeaveReason

log = structlog.get_logger("hotline.membership")

# Member changes that hotline did not cause mean drift.
_MEMBER_CHANGES: frozenset[EventName] = frozenset(
    {"QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPenalty"}
)
# A member's call ended: one due to leave may go now.
_CALL_ENDS: frozenset[EventName] = frozenset({"QueueMemberStatus", "AgentComplete"})
# Pipelined actions in flight at once; Asterisk runs one session's actions in order anyway.
_WINDOW = 256
# After a failed round, try again this soon rather than waiting for the periodic resync.
_RETRY_S = 1.0


class Link(Protocol):
    @property
    def up(self) -> bool: ...
    async def send(self, action: Mapping[str, str]) -> Reply: ...
    async def send_list(self, action: Mapping[str, str]) -> Reply: ...


class Observer(Protocol):
    def round_woken(self, triggers: set[Trigger]) -> None: ...
    def round_done(self, result: RoundResult, seconds: float, synced: bool) -> None: ...
    def membership(
        self,
        *,
        scheduled: Mapping[str, int],
        missing: Mapping[str, int],
        unexpected: Mapping[str, int],
        leaving: Mapping[str, int],
        foreign: Mapping[str, int],
    ) -> None: ...


# Called with every QueueStatus list read and the triggers of its round.
StatusListener = Callable[[list[Mapping[str, str]], set[Trigger]], None]
# Called before each change is sent: (queue, interface, "join" | "leave", reason).
ChangeListener = Callable[[str, str, MemberChange, JoinReason | LeaveReason], None]


class MembershipKeeper:
    # The events `on_event` reads; the daemon routes only these here.
    EVENTS: frozenset[EventName] = frozenset({*_MEMBER_CHANGES, *_CALL_ENDS, "Reload"})

    def __init__(
        self,
        rost: roster.Roster,
        link: Link,
        clock: Clock,
        observer: Observer,
        resync_interval_s: float,
        *,
        on_status: StatusListener | None = None,
        on_change: ChangeListener | None = None,
    ) -> None:
        self.on_status = on_status
        self.on_change = on_change
        self.roster = rost
        # Queues whose surge is on: their standby responders are desired too.
        self.surging: frozenset[str] = frozenset()
        self.link = link
        self.clock = clock
        self.observer = observer
        self.resync_interval_s = resync_interval_s
        self.owned = frozenset(rost.responders)
        self.in_sync = False
        self.last_problem = "no reconcile round yet"
        self.rounds = 0
        # Set once the first round has read Asterisk (whatever its result): the daemon is ready.
        self.first_round = asyncio.Event()
        # When the round under way started (loop time): a round that never ends is a stuck task.
        self.round_started: float | None = None
        self._roster_changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._triggers: set[Trigger] = set()
        # (queue, interface) of changes we made whose member event has not arrived yet.
        self._expected: Counter[tuple[str, str]] = Counter()
        self._leaving: set[tuple[str, str]] = set()

    def readiness(self) -> list[NotReady]:
        """Why membership may differ from the roster now; a link that is down says so itself.
        Public: what failed (`last_problem`) is in the log, not here."""
        if self.in_sync or not self.link.up:
            return []
        return [NotReady.MEMBERSHIP_NOT_IN_SYNC]

    def replace_roster(self, rost: roster.Roster, resync_interval_s: float) -> None:
        """Take a new roster (a reloaded configuration) at the next round, on the same link; the
        supervisors' overrides stay."""
        self.roster = dataclasses.replace(rost, overrides=self.roster.overrides)
        self.owned = frozenset(rost.responders)
        self.resync_interval_s = resync_interval_s
        self._roster_changed.set()
        self.wake("config")

    def set_overrides(self, overrides: tuple[roster.Override, ...]) -> None:
        """Honour these overrides (all of them, replacing the previous set) from the next round;
        their ends wake a round like any other boundary."""
        self.roster = dataclasses.replace(self.roster, overrides=overrides)
        self._roster_changed.set()
        self.wake("override")

    def set_surging(self, queues: frozenset[str]) -> None:
        """Add the standby responders of these queues (and release those of the others)."""
        if queues != self.surging:
            self.surging = queues
            self.wake("surge")

    def wake(self, trigger: Trigger) -> None:
        self._triggers.add(trigger)
        self._wake.set()

    def link_down(self) -> None:
        self.in_sync = False
        self.last_problem = "AMI link down"

    def on_event(self, event: Event) -> None:
        """Decide whether an AMI event calls for a round."""
        name = event.name
        if name in _MEMBER_CHANGES:
            key = (event.fields.get("Queue", ""), event.fields.get("Interface", ""))
            if key[0] not in self.roster.queues:
                return
            if self._expected[key] > 0:
                self._expected[key] -= 1
                return
            self.wake("drift")
        elif name in _CALL_ENDS:
            key = (event.fields.get("Queue", ""), event.fields.get("Interface", ""))
            if key in self._leaving:
                self.wake("call_ended")
        elif name == "Reload":
            self.wake("reload")

    async def run_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                # asyncio.timeout, never wait_for: Python 3.11's wait_for loses a cancellation
                # that arrives as the wake-up does, and the daemon could then never stop.
                async with asyncio.timeout(self.resync_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                self._triggers.add("periodic")
            self._wake.clear()
            triggers, self._triggers = self._triggers, set()
            self.observer.round_woken(triggers)
            started = loop.time()
            if not self.link.up:
                self.observer.round_done("skipped", 0.0, synced=False)
                continue
            self.round_started = started
            try:
                ok, changed = await self.round(triggers)
            finally:
                self.round_started = None
            self.first_round.set()
            self.observer.round_done(
                "ok" if ok else "failed", loop.time() - started, synced=self.in_sync
            )
            if not ok and not self._wake.is_set():
                loop.call_later(_RETRY_S, self.wake, "retry")
            elif changed and triggers != {"verify"}:
                # Read back what was just changed: confirms convergence and refreshes the gauges.
                # Not after a verify round itself, so a change that never sticks cannot spin.
                self.wake("verify")

    async def run_timer(self) -> None:
        """Wake a round at every shift or exception boundary of the roster (a new roster's
        boundaries from the moment it is taken)."""
        while True:
            now = self.clock.now()
            boundary = roster.next_change(self.roster, now)
            self._roster_changed.clear()
            sleeping = asyncio.ensure_future(
                self.clock.sleep_until(boundary or now + timedelta(days=1))
            )
            replaced = asyncio.ensure_future(self._roster_changed.wait())
            try:
                done, _ = await asyncio.wait(
                    {sleeping, replaced}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                sleeping.cancel()
                replaced.cancel()
            if sleeping in done and boundary is not None and self.clock.now() >= boundary:
                self.wake("shift")

    async def round(self, triggers: set[Trigger]) -> tuple[bool, bool]:
        """One level-triggered round. Returns whether it read state and every action succeeded,
        and whether it changed anything."""
        now = self.clock.now()
        desired = roster.desired_at(self.roster, now, self.surging)
        status = await self.link.send_list({"Action": "QueueStatus"})
        if not status.ok:
            self.in_sync = False
            self.last_problem = f"QueueStatus failed: {status.result.value} {status.message}"
            log.warning("reconcile_read_failed", result=status.result.value, error=status.message)
            return False, False
        if self.on_status is not None:
            self.on_status(list(status.items), triggers)
        actual = [
            reconcile.member_from_status(item)
            for item in status.items
            if item.get("Event") == "QueueMember"
        ]
        plan = reconcile.plan(desired, actual, self.owned)
        self._leaving = {(m.queue, m.interface) for m in plan.deferred}
        self._report(desired, plan)
        self.rounds += 1
        if plan.empty:
            self.in_sync = True
            self.last_problem = ""
            return True, False
        log.info(
            "reconcile_applying",
            triggers=sorted(triggers),
            at=now.isoformat(),
            adds=sum(isinstance(a, Add) for a in plan.actions),
            removes=sum(isinstance(a, Remove) for a in plan.actions),
            penalties=sum(isinstance(a, SetPenalty) for a in plan.actions),
            leaving=len(plan.deferred),
        )
        if self.on_change is not None:
            self._announce(plan.actions, triggers, now)
        window = asyncio.Semaphore(_WINDOW)
        results = await asyncio.gather(*(self._apply(a, window) for a in plan.actions))
        failed = [
            f"{a.queue}/{a.member_name}: {r.result.value} {r.message}"
            for a, r in results
            if not r.ok
        ]
        self.in_sync = not failed
        self.last_problem = (
            f"{len(failed)} membership actions failed, e.g. {failed[0]}" if failed else ""
        )
        return not failed, True

    def _announce(self, actions: tuple[Action, ...], triggers: set[Trigger], now: datetime) -> None:
        """Tell presence why each member is about to join or leave."""
        assert self.on_change is not None
        standings = roster.explain(self.roster, now, self.surging)
        why = {(queue, s.responder): s.why for queue, found in standings.items() for s in found}
        for action in actions:
            if isinstance(action, SetPenalty):
                continue
            joining = isinstance(action, Add)
            if "drift" in triggers and joining:
                reason: JoinReason | LeaveReason = "drift_repair"
            elif "connect" in triggers and joining:
                reason = "asterisk_restart"
            else:
                reason = _REASONS.get(why.get((action.queue, action.member_name), "surge"), "shift")
            self.on_change(action.queue, action.interface, "join" if joining else "leave", reason)

    async def _apply(self, action: Action, window: asyncio.Semaphore) -> tuple[Action, Reply]:
        async with window:
            key = (action.queue, action.interface)
            # Count the change before sending: its event may arrive before the reply.
            self._expected[key] += 1
            reply = await self.link.send(_ami_action(action))
            if reply.result is not Result.SUCCESS:
                self._expected[key] -= 1
        kind = type(action).__name__.lower()
        if reply.ok:
            log.info(
                "member_"
                + {"add": "added", "remove": "removed", "setpenalty": "penalty_set"}[kind],
                queue=action.queue,
                responder=action.member_name,
                interface=action.interface,
            )
        else:
            log.warning(
                "member_action_failed",
                action=kind,
                queue=action.queue,
                responder=action.member_name,
                result=reply.result.value,
                error=reply.message,
            )
        return action, reply

    def _report(self, desired: roster.Desired, plan: reconcile.Plan) -> None:
        leaving: Counter[str] = Counter(m.queue for m in plan.deferred)
        foreign: Counter[str] = Counter(m.queue for m in plan.foreign)
        self.observer.membership(
            scheduled={q: len(members) for q, members in desired.items()},
            missing=plan.missing,
            unexpected=plan.unexpected,
            leaving=leaving,
            foreign=foreign,
        )


# What presence records for a join or leave, from the roster's reason for the member's standing;
# a standby responder no longer in the standings has left at the end of a surge.
_REASONS: dict[roster.Why, JoinReason | LeaveReason] = {
    "shift": "shift",
    "not_scheduled": "shift",
    "exception_on": "exception",
    "exception_off": "exception",
    "override_on": "override",
    "override_off": "override",
    "surge": "surge",
    "certification": "certification",
}


def _ami_action(action: Action) -> dict[str, str]:
    if isinstance(action, Add):
        return {
            "Action": "QueueAdd",
            "Queue": action.queue,
            "Interface": action.interface,
            "MemberName": action.member_name,
            "StateInterface": action.state_interface,
            "Penalty": str(action.penalty),
        }
    if isinstance(action, SetPenalty):
        return {
            "Action": "QueuePenalty",
            "Queue": action.queue,
            "Interface": action.interface,
            "Penalty": str(action.penalty),
        }
    return {"Action": "QueueRemove", "Queue": action.queue, "Interface": action.interface}
