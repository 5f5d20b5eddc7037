"""The surge pool: every second, each queue with a surge rule is judged on its live load
(`core.surge`); a surge turning on or off changes the membership keeper's surging queues (which
adds or releases the standby responders at its next round, never one on a call) and is logged,
counted and written to the audit trail.

Also the audit trail's writer for hotline's own decisions (`AuditTrail`), which the wellbeing
guardrails share: entries are written in order by a task of their own, so Postgres being slow
or away never holds up a decision; an entry that cannot be written is logged and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from hotline.core.clock import Clock
from hotline.core.supervision import SYSTEM, AuditAction, AuditEntry
from hotline.core.surge import Change, Load, SurgeRule, SurgeState, step

log = structlog.get_logger("hotline.surge")

# How often the load is judged: the rule's durations are counted in these steps.
EVERY_S = 1.0
# Audit entries waiting for Postgres; more are dropped (logged and counted), never waited for.
_AUDIT_BACKLOG = 1000
_AUDIT_TIMEOUT_S = 5.0


class AuditSink(Protocol):
    async def record_audit(self, entry: AuditEntry) -> None: ...


class AuditFailures(Protocol):
    def audit_failed(self) -> None: ...


class AuditTrail:
    """hotline's own decisions, written to the audit trail in order, in the background."""

    def __init__(self, sink: AuditSink | None, failures: AuditFailures) -> None:
        self.sink = sink
        self.failures = failures
        self._backlog: asyncio.Queue[AuditEntry] = asyncio.Queue(maxsize=_AUDIT_BACKLOG)

    def record(
        self,
        clock: Clock,
        *,
        action: AuditAction,
        target: str,
        reason: str,
        before: Mapping[str, object],
        after: Mapping[str, object],
    ) -> None:
        entry = AuditEntry(
            clock.now(), SYSTEM.name, SYSTEM.role, action, target, reason, before, after, None
        )
        if self.sink is None:
            return  # no database: the log line is the record
        try:
            self._backlog.put_nowait(entry)
        except asyncio.QueueFull:
            self._lost(entry, "backlog full")

    async def run(self) -> None:
        while True:
            entry = await self._backlog.get()
            assert self.sink is not None
            try:
                async with asyncio.timeout(_AUDIT_TIMEOUT_S):
                    await self.sink.record_audit(entry)
            except Exception as exc:  # Postgres away, slow or refusing: the decision stands
                self._lost(entry, type(exc).__name__)

    def _lost(self, entry: AuditEntry, why: str) -> None:
        self.failures.audit_failed()
        log.warning(
            "audit_not_stored",
            action=entry.action,
            target=entry.target,
            reason=entry.reason,
            why=why,
        )


class Surging(Protocol):
    """The membership keeper, as the surge sees it."""

    def set_surging(self, queues: frozenset[str]) -> None: ...


class SurgeObserver(Protocol):
    def surge_changed(self, queue: str, active: bool) -> None: ...


# Each surge queue's load now, or None while it cannot be known (AMI down): no decision then.
LoadSource = Callable[[], Mapping[str, Load] | None]


class SurgeWatch:
    def __init__(
        self,
        rules: Mapping[str, SurgeRule],
        load: LoadSource,
        keeper: Surging,
        *,
        clock: Clock,
        observer: SurgeObserver,
        audit: AuditTrail,
    ) -> None:
        self.rules = rules
        self.load = load
        self.keeper = keeper
        self.clock = clock
        self.observer = observer
        self.audit = audit
        self.states = {queue: SurgeState() for queue in rules}
        for queue in rules:
            observer.surge_changed(queue, False)

    @property
    def surging(self) -> frozenset[str]:
        return frozenset(q for q, state in self.states.items() if state.active)

    def evaluate(self) -> list[Change]:
        """Judge every surge queue on its load now; apply and report what changes."""
        loads = self.load()
        if loads is None:
            return []
        now = self.clock.now()
        changes = []
        for queue, rule in self.rules.items():
            load = loads.get(queue)
            if load is None:
                continue
            self.states[queue], change = step(
                queue, rule, self.states[queue], load, now.timestamp()
            )
            if change is not None:
                changes.append(change)
        if changes:
            self.keeper.set_surging(self.surging)
        for change in changes:
            self._report(change)
        return changes

    async def run(self) -> None:
        while True:
            self.evaluate()
            await asyncio.sleep(EVERY_S)

    def _report(self, change: Change) -> None:
        self.observer.surge_changed(change.queue, change.active)
        figures = {
            "callers_waiting": change.load.callers_waiting,
            "longest_wait_s": round(change.load.longest_wait_s, 1),
            "calls_per_responder": _finite(change.load.calls_per_responder),
        }
        log.warning(
            "surge_on" if change.active else "surge_off",
            queue=change.queue,
            reason=change.reason,
            **figures,
        )
        self.audit.record(
            self.clock,
            action="surge_on" if change.active else "surge_off",
            target=f"queue {change.queue}",
            reason=change.reason,
            before={"surging": not change.active},
            after={"surging": change.active, **figures},
        )


def _finite(value: float) -> float | None:
    # JSON (the audit trail's before/after) has no infinity: none present is null.
    return round(value, 2) if value != float("inf") else None
