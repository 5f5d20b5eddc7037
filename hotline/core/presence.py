"""Responder presence, pure: fold queue-member events into membership sessions and pause intervals,
so logged-in and paused time can be reported per responder and per queue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final, Literal, TypeGuard, get_args

from hotline.core.ami import EventName, aware, field_flag, field_text
from hotline.core.records import (
    JOIN_REASONS,
    LEAVE_REASONS,
    JoinReason,
    LeaveReason,
    MemberSession,
    PausedBy,
    PauseInterval,
)

# What hotline announces it is about to do to a member (`Presence.expect`).
MemberChange = Literal["join", "leave"]
MEMBER_CHANGES: Final[tuple[MemberChange, ...]] = get_args(MemberChange)

_Key = tuple[str, str]  # (queue, interface)
_TICK = timedelta(microseconds=1)


def _is_join_reason(reason: str) -> TypeGuard[JoinReason]:
    return reason in JOIN_REASONS


def _is_leave_reason(reason: str) -> TypeGuard[LeaveReason]:
    return reason in LEAVE_REASONS


class Presence:
    """Folds QueueMemberAdded/Removed/Pause events and QueueStatus snapshots into sessions and
    pause intervals. Every method returns the snapshots it changed, each with a higher revision.

    Intervals of one (queue, interface) never overlap and never share a start: reordered events
    are clamped forward, so the natural keys stay unique in the database.
    """

    # The events `feed` reads.
    EVENTS: frozenset[EventName] = frozenset(
        {"QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause"}
    )

    def __init__(self) -> None:
        self._sessions: dict[_Key, MemberSession] = {}  # open ones
        self._pauses: dict[_Key, PauseInterval] = {}  # open ones
        # Announced and not yet seen: the reasons of hotline's own joins and leaves.
        self._joins: dict[_Key, JoinReason] = {}
        self._leaves: dict[_Key, LeaveReason] = {}
        # Interfaces hotline is pausing, with the queue (None: all of them) and the reason.
        self._our_pauses: dict[str, tuple[str | None, str]] = {}
        # (start, end) of the last closed session / pause of each key: a new one starts after.
        self._last_session: dict[_Key, tuple[datetime, datetime]] = {}
        self._last_pause: dict[_Key, tuple[datetime, datetime]] = {}

    def expect(
        self, queue: str, interface: str, change: MemberChange, reason: JoinReason | LeaveReason
    ) -> None:
        """Announce hotline's own change before sending it, so its event is attributed to
        `reason` rather than "external". A newer announcement replaces an unconsumed one (an
        action that failed produces no event). ValueError for an unknown change, or a reason
        that is not one for this change (such as "drift" for a join)."""
        key = (queue, interface)
        if change == "join" and _is_join_reason(reason):
            self._joins[key] = reason
        elif change == "leave" and _is_leave_reason(reason):
            self._leaves[key] = reason
        elif change not in MEMBER_CHANGES:
            raise ValueError(f"unknown member change {change!r}, not one of {MEMBER_CHANGES}")
        else:
            reasons = JOIN_REASONS if change == "join" else LEAVE_REASONS
            raise ValueError(f"{reason!r} is no reason to {change}, not one of {reasons}")

    def expect_pause(self, interface: str, queue: str | None, reason: str) -> None:
        """Announce a pause hotline is about to send (a supervisor's, a wellbeing pause), so the
        pause it starts, in `queue` or in every queue, is filed as paused by hotline. It holds
        until the member's next unpause."""
        self._our_pauses[interface] = (queue, reason)

    def feed(
        self, name: str, fields: Mapping[str, str], at: datetime
    ) -> list[MemberSession | PauseInterval]:
        """Apply one member event (QueueMemberAdded, QueueMemberRemoved, QueueMemberPause);
        return the sessions and pauses it opened or closed, in order. Other events are no-ops."""
        queue, interface = field_text(fields, "Queue"), field_text(fields, "Interface")
        if queue is None or interface is None:
            return []
        key = (queue, interface)
        at = aware(at)
        responder = field_text(fields, "MemberName") or interface
        reason = field_text(fields, "PausedReason") or ""
        paused = field_flag(fields, "Paused")
        if name == "QueueMemberAdded":
            join_reason: JoinReason = self._joins.pop(key, "external")
            changed: list[MemberSession | PauseInterval] = []
            if key not in self._sessions:
                changed.append(self._join(key, responder, at, join_reason))
            if paused is not None:
                # The event carries the member's pause state at the time it was added.
                start = max(at, self._sessions[key].joined_at)
                changed += self._pause(key, responder, reason, start, paused)
            return changed
        if name == "QueueMemberRemoved":
            leave_reason: LeaveReason = self._leaves.pop(key, "external")
            return self._leave(key, at, leave_reason)
        if name == "QueueMemberPause" and paused is not None:
            return self._pause(key, responder, reason, at, paused)
        return []

    def snapshot(
        self, members: Iterable[tuple[str, str, str, bool, str]], at: datetime, restarted: bool
    ) -> list[MemberSession | PauseInterval]:
        """Align with the members Asterisk reports after a resync: (queue, interface,
        member_name, paused, paused_reason). What changed unseen gets "asterisk_restart" if
        Asterisk restarted, else "unknown" (gone) or "restored" (found)."""
        at = aware(at)
        present: dict[_Key, tuple[str, bool, str]] = {}
        for queue, interface, member_name, paused, paused_reason in members:
            if queue and interface:
                present[(queue, interface)] = (member_name or interface, paused, paused_reason)
        changed: list[MemberSession | PauseInterval] = []
        for key in [k for k in self._sessions if k not in present]:
            changed += self._leave(key, at, "asterisk_restart" if restarted else "unknown")
        for key in [k for k in self._pauses if k not in present]:
            changed += self._unpause(key, at)
        for key, (member_name, paused, paused_reason) in present.items():
            if key not in self._sessions:
                join_reason: JoinReason = "asterisk_restart" if restarted else "restored"
                changed.append(self._join(key, member_name, at, join_reason))
            start = max(at, self._sessions[key].joined_at)
            changed += self._pause(key, member_name, paused_reason or "", start, paused)
        # An announced change the snapshot already shows happened has lost its event.
        for key in [k for k in self._joins if k in present]:
            del self._joins[key]
        for key in [k for k in self._leaves if k not in present]:
            del self._leaves[key]
        return changed

    def restore(self, sessions: Iterable[MemberSession], pauses: Iterable[PauseInterval]) -> None:
        """Continue the open sessions and pauses read back from the database after a restart."""
        for session in sessions:
            key = (session.queue, session.interface)
            if session.left_at is None:
                self._sessions[key] = session
            else:
                self._remember(self._last_session, key, session.joined_at, session.left_at)
        for pause in pauses:
            key = (pause.queue, pause.interface)
            if pause.ended_at is None:
                self._pauses[key] = pause
            else:
                self._remember(self._last_pause, key, pause.started_at, pause.ended_at)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _remember(
        last: dict[_Key, tuple[datetime, datetime]], key: _Key, start: datetime, end: datetime
    ) -> None:
        if key not in last or start > last[key][0]:
            last[key] = (start, end)

    @staticmethod
    def _start(last: tuple[datetime, datetime] | None, at: datetime) -> datetime:
        """`at`, moved after the previous interval of the key if reordering put it before."""
        if last is None:
            return at
        start = max(at, last[1])
        return start if start > last[0] else last[0] + _TICK

    def _join(self, key: _Key, responder: str, at: datetime, reason: JoinReason) -> MemberSession:
        start = self._start(self._last_session.get(key), at)
        session = MemberSession(key[0], responder, key[1], start, None, reason, None, 1)
        self._sessions[key] = session
        return session

    def _leave(
        self, key: _Key, at: datetime, reason: LeaveReason
    ) -> list[MemberSession | PauseInterval]:
        changed: list[MemberSession | PauseInterval] = list(self._unpause(key, at))
        session = self._sessions.pop(key, None)
        if session is not None:
            end = max(at, session.joined_at)
            self._remember(self._last_session, key, session.joined_at, end)
            changed.append(
                replace(session, left_at=end, leave_reason=reason, revision=session.revision + 1)
            )
        return changed

    def _pause(
        self, key: _Key, responder: str, reason: str, at: datetime, paused: bool
    ) -> list[MemberSession | PauseInterval]:
        if not paused:
            ours = self._our_pauses.get(key[1])
            if ours is not None and ours[0] in (None, key[0]):
                del self._our_pauses[key[1]]
            return list(self._unpause(key, at))
        current = self._pauses.get(key)
        if current is not None and current.reason == reason:
            return []  # Asterisk repeats QueueMemberPause for a repeated pause
        changed: list[MemberSession | PauseInterval] = list(self._unpause(key, at))
        start = self._start(self._last_pause.get(key), at)
        ours = self._our_pauses.get(key[1])
        by: PausedBy = (
            "hotline" if ours is not None and ours[1] == reason and ours[0] in (None, key[0])
            else "external"
        )  # fmt: skip
        pause = PauseInterval(key[0], responder, key[1], start, None, reason, by, 1)
        self._pauses[key] = pause
        changed.append(pause)
        return changed

    def _unpause(self, key: _Key, at: datetime) -> list[PauseInterval]:
        pause = self._pauses.pop(key, None)
        if pause is None:
            return []
        end = max(at, pause.started_at)
        self._remember(self._last_pause, key, pause.started_at, end)
        return [replace(pause, ended_at=end, revision=pause.revision + 1)]
