"""Reconciliation, pure: compare the roster's desired members with what Asterisk reports and plan
the QueueAdd / QueuePenalty / QueueRemove actions that close the gap.

Ownership: hotline owns the dynamic members whose MemberName is a configured responder id, in the
queues the roster names. Everything else (static members, members added by others) is left alone
and reported. Pauses are never touched. Make-before-break: a member due to leave while on a call
stays until the call ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from hotline.core.roster import Desired

# Why a reconcile round runs: a shift, exception, override or certification boundary, AMI
# (re)login, a member change hotline did not make, a call ending for a member due to leave,
# Asterisk's Reload event, a new hotline configuration, a supervisor's new or cancelled override,
# a surge starting or ending, a supervisor's forced resync, events lost to an overflowing inbox,
# the periodic resync, a retry after a failed round, a read-back after a change.
Trigger = Literal[
    "shift", "connect", "drift", "call_ended", "reload", "config", "override", "surge",
    "resync", "overflow", "periodic", "retry", "verify",
]  # fmt: skip
# How a round ended: state read and every action applied, something failed, or no AMI link.
RoundResult = Literal["ok", "failed", "skipped"]

# Device states (enum ast_device_state) in which removing the member would cut off or drop a call:
# INUSE, BUSY, RINGING, RINGINUSE, ONHOLD.
_BUSY_STATUSES = frozenset({"2", "3", "6", "7", "8"})


@dataclass(frozen=True, slots=True)
class ActualMember:
    queue: str
    interface: str
    name: str  # MemberName
    state_interface: str
    penalty: int
    dynamic: bool
    paused: bool
    busy: bool  # on a call or ringing: leaving now would drop a caller


def member_from_status(fields: Mapping[str, str]) -> ActualMember:
    """An ActualMember from a QueueStatus `QueueMember` list item (its `Name`/`Location` fields)."""
    try:
        penalty = int(fields.get("Penalty", "0"))
    except ValueError:
        penalty = 0
    return ActualMember(
        queue=fields.get("Queue", ""),
        interface=fields.get("Location", ""),
        name=fields.get("Name", ""),
        state_interface=fields.get("StateInterface", ""),
        penalty=penalty,
        dynamic=fields.get("Membership", "") == "dynamic",
        paused=fields.get("Paused", "0") == "1",
        busy=fields.get("InCall", "0") == "1" or fields.get("Status", "") in _BUSY_STATUSES,
    )


@dataclass(frozen=True, slots=True)
class Add:
    queue: str
    interface: str
    member_name: str
    state_interface: str
    penalty: int


@dataclass(frozen=True, slots=True)
class SetPenalty:
    queue: str
    interface: str
    member_name: str
    penalty: int


@dataclass(frozen=True, slots=True)
class Remove:
    queue: str
    interface: str
    member_name: str


Action = Add | SetPenalty | Remove


@dataclass(frozen=True, slots=True)
class Plan:
    # In the order to apply: per queue, removals that free an interface a desired member needs,
    # then adds, then penalty fixes, then removals (make-before-break).
    actions: tuple[Action, ...]
    deferred: tuple[ActualMember, ...]  # due to leave, kept until their call ends
    foreign: tuple[ActualMember, ...]  # not ours: reported, never changed
    missing: Mapping[str, int] = field(default_factory=dict)  # queue -> desired but absent
    unexpected: Mapping[str, int] = field(default_factory=dict)  # queue -> ours, present, undesired

    @property
    def empty(self) -> bool:
        return not self.actions


def plan(desired: Desired, actual: Iterable[ActualMember], owned_ids: frozenset[str]) -> Plan:
    """The actions that make `actual` equal `desired` in the roster's queues."""
    by_queue: dict[str, list[ActualMember]] = {q: [] for q in desired}
    for member in actual:
        if member.queue in by_queue:
            by_queue[member.queue].append(member)

    actions: list[Action] = []
    deferred: list[ActualMember] = []
    foreign: list[ActualMember] = []
    missing: dict[str, int] = {}
    unexpected: dict[str, int] = {}
    for queue, want in desired.items():
        ours: dict[str, ActualMember] = {}  # interface -> member
        foreign_interfaces: set[str] = set()
        for member in by_queue[queue]:
            if member.dynamic and member.name in owned_ids:
                ours[member.interface] = member
            else:
                foreign.append(member)
                foreign_interfaces.add(member.interface)

        kept: set[str] = set()  # interfaces of ours that match a desired member
        adds: list[Action] = []
        fixes: list[Action] = []
        n_missing = 0
        for member_name, d in want.items():
            current = ours.get(d.interface)
            if current is not None and current.name == member_name:
                kept.add(d.interface)
                if current.penalty != d.penalty:
                    fixes.append(SetPenalty(queue, d.interface, member_name, d.penalty))
                continue
            n_missing += 1
            if d.interface in foreign_interfaces:
                # Someone else's member holds this phone; adding would only be refused.
                continue
            adds.append(Add(queue, d.interface, member_name, d.state_interface, d.penalty))

        frees: list[Action] = []
        removes: list[Action] = []
        needed = {a.interface for a in adds if isinstance(a, Add)}
        n_unexpected = 0
        for interface, member in ours.items():
            if interface in kept:
                continue
            n_unexpected += 1
            if member.busy:
                deferred.append(member)
                if interface in needed:
                    # The phone is still on a call under its old name: add it once that ends.
                    adds = [a for a in adds if a.interface != interface]
                continue
            target = frees if interface in needed else removes
            target.append(Remove(queue, interface, member.name))

        actions.extend(frees)
        actions.extend(adds)
        actions.extend(fixes)
        actions.extend(removes)
        missing[queue] = n_missing
        unexpected[queue] = n_unexpected
    return Plan(tuple(actions), tuple(deferred), tuple(foreign), missing, unexpected)


def apply(actual: Iterable[ActualMember], actions: Iterable[Action]) -> list[ActualMember]:
    """The membership Asterisk would report after `actions` succeed (for tests and dry runs)."""
    members = {(m.queue, m.interface): m for m in actual}
    for action in actions:
        key = (action.queue, action.interface)
        if isinstance(action, Add):
            if key not in members:
                members[key] = ActualMember(
                    action.queue,
                    action.interface,
                    action.member_name,
                    action.state_interface,
                    action.penalty,
                    dynamic=True,
                    paused=False,
                    busy=False,
                )
        elif isinstance(action, SetPenalty):
            if key in members:
                old = members[key]
                members[key] = ActualMember(
                    old.queue,
                    old.interface,
                    old.name,
                    old.state_interface,
                    action.penalty,
                    old.dynamic,
                    old.paused,
                    old.busy,
                )
        elif key in members and members[key].dynamic:
            del members[key]
    return list(members.values())
