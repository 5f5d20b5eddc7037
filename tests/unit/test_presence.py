"""Responder presence: table cases for sessions, pauses, attribution and resync snapshots, and
Hypothesis properties (no overlap, no reused key, left_at >= joined_at) under junk input."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.core.presence import Presence
from hotline.core.records import JOIN_REASONS, LEAVE_REASONS, MemberSession, PauseInterval

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
Q = "crisis"
PHONE = "PJSIP/101"

Change = MemberSession | PauseInterval


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fields_of(queue: str = Q, interface: str = PHONE, **fields: str) -> dict[str, str]:
    return {"Queue": queue, "Interface": interface, "MemberName": "r-1", **fields}


def added(paused: str = "0", reason: str = "", interface: str = PHONE) -> dict[str, str]:
    return fields_of(interface=interface, Paused=paused, PausedReason=reason)


def pause(paused: str, reason: str = "") -> dict[str, str]:
    return fields_of(Paused=paused, PausedReason=reason)


def sessions(changes: Sequence[Change]) -> list[MemberSession]:
    return [c for c in changes if isinstance(c, MemberSession)]


def pauses(changes: Sequence[Change]) -> list[PauseInterval]:
    return [c for c in changes if isinstance(c, PauseInterval)]


def test_a_member_added_by_someone_else_is_an_external_join() -> None:
    (session,) = sessions(Presence().feed("QueueMemberAdded", added(), at(0)))
    assert session == MemberSession(Q, "r-1", PHONE, at(0), None, "external", None, 1)


def test_an_announced_join_and_leave_carry_hotlines_reasons() -> None:
    presence = Presence()
    presence.expect(Q, PHONE, "join", "shift")
    (joined,) = sessions(presence.feed("QueueMemberAdded", added(), at(0)))
    presence.expect(Q, PHONE, "leave", "drift")
    (left,) = sessions(presence.feed("QueueMemberRemoved", fields_of(), at(3600)))
    assert joined.join_reason == "shift"
    assert left == dataclasses.replace(joined, left_at=at(3600), leave_reason="drift", revision=2)


def test_an_announcement_is_used_once() -> None:
    presence = Presence()
    presence.expect(Q, PHONE, "join", "shift")
    presence.feed("QueueMemberAdded", added(), at(0))
    presence.feed("QueueMemberRemoved", fields_of(), at(10))
    (again,) = sessions(presence.feed("QueueMemberAdded", added(), at(20)))
    assert again.join_reason == "external"


def test_an_announcement_for_another_member_or_queue_does_not_apply() -> None:
    presence = Presence()
    presence.expect("spanish", PHONE, "join", "shift")
    presence.expect(Q, "PJSIP/102", "join", "shift")
    (session,) = sessions(presence.feed("QueueMemberAdded", added(), at(0)))
    assert session.join_reason == "external"


def test_an_announcement_with_an_unknown_reason_or_change_is_refused() -> None:
    presence = Presence()
    with pytest.raises(ValueError, match="'drift' is no reason to join"):
        presence.expect(Q, PHONE, "join", "drift")  # a leave reason
    with pytest.raises(ValueError, match="unknown member change 'rejoin'"):
        presence.expect(Q, PHONE, "rejoin", "shift")  # type: ignore[arg-type]
    (session,) = sessions(presence.feed("QueueMemberAdded", added(), at(0)))
    assert session.join_reason == "external"


def test_a_member_added_paused_opens_a_session_and_a_pause() -> None:
    session, paused = Presence().feed("QueueMemberAdded", added("1", "Auto-Pause"), at(0))
    assert isinstance(session, MemberSession)
    assert paused == PauseInterval(Q, "r-1", PHONE, at(0), None, "Auto-Pause", "external", 1)


def test_pause_and_unpause_make_one_interval() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added(), at(0))
    (opened,) = pauses(presence.feed("QueueMemberPause", pause("1", "lunch"), at(60)))
    (closed,) = pauses(presence.feed("QueueMemberPause", pause("0"), at(900)))
    assert (opened.started_at, opened.reason, opened.paused_by) == (at(60), "lunch", "external")
    assert closed == dataclasses.replace(opened, ended_at=at(900), revision=2)


def test_a_repeated_identical_pause_is_no_change() -> None:
    presence = Presence()
    presence.feed("QueueMemberPause", pause("1", "lunch"), at(60))
    assert presence.feed("QueueMemberPause", pause("1", "lunch"), at(61)) == []
    (closed,) = pauses(presence.feed("QueueMemberPause", pause("0"), at(62)))
    assert (closed.started_at, closed.ended_at) == (at(60), at(62))


def test_a_pause_with_a_new_reason_closes_the_old_interval_and_opens_another() -> None:
    presence = Presence()
    presence.feed("QueueMemberPause", pause("1", "Auto-Pause"), at(60))
    old, new = pauses(presence.feed("QueueMemberPause", pause("1", "supervisor"), at(90)))
    assert (old.reason, old.ended_at) == ("Auto-Pause", at(90))
    assert (new.reason, new.started_at, new.ended_at, new.revision) == (
        "supervisor",
        at(90),
        None,
        1,
    )


def test_removal_closes_the_open_pause_and_the_session() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added("1", "lunch"), at(0))
    paused, session = presence.feed("QueueMemberRemoved", fields_of(), at(50))
    assert isinstance(paused, PauseInterval)
    assert isinstance(session, MemberSession)
    assert (paused.ended_at, session.left_at, session.leave_reason) == (at(50), at(50), "external")


def test_a_repeated_added_event_opens_no_second_session() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added(), at(0))
    assert presence.feed("QueueMemberAdded", added(), at(5)) == []


def test_a_removal_reported_before_its_time_never_ends_a_session_before_it_began() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added(), at(100))
    (left,) = sessions(presence.feed("QueueMemberRemoved", fields_of(), at(90)))
    (again,) = sessions(presence.feed("QueueMemberAdded", added(), at(95)))
    assert left.left_at == left.joined_at == at(100)
    assert again.joined_at > left.joined_at  # a distinct natural key, after the last session


def test_snapshot_closes_sessions_asterisk_no_longer_reports_and_opens_the_missing() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added("1", "lunch"), at(0))
    changes = presence.snapshot([(Q, "PJSIP/102", "r-2", True, "Auto-Pause")], at(500), False)
    assert [(type(c).__name__, c.interface) for c in changes] == [
        ("PauseInterval", PHONE),
        ("MemberSession", PHONE),
        ("MemberSession", "PJSIP/102"),
        ("PauseInterval", "PJSIP/102"),
    ]
    gone, found = sessions(changes)
    assert (gone.left_at, gone.leave_reason) == (at(500), "unknown")
    assert (found.joined_at, found.join_reason, found.responder) == (at(500), "restored", "r-2")
    assert pauses(changes)[1].reason == "Auto-Pause"


def test_snapshot_closes_a_pause_of_a_member_it_no_longer_reports() -> None:
    presence = Presence()
    presence.feed("QueueMemberPause", pause("1", "lunch"), at(0))  # its Added was missed
    (closed,) = pauses(presence.snapshot([], at(30), False))
    assert closed.ended_at == at(30)


def test_snapshot_after_an_asterisk_restart_says_so() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added(), at(0))
    changes = presence.snapshot([(Q, "PJSIP/102", "r-2", False, "")], at(500), True)
    assert [(s.leave_reason, s.join_reason) for s in sessions(changes)] == [
        ("asterisk_restart", "external"),
        (None, "asterisk_restart"),
    ]


def test_snapshot_aligns_pauses_of_members_still_present() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added("1", "lunch"), at(0))
    assert presence.snapshot([(Q, PHONE, "r-1", True, "lunch")], at(10), False) == []
    (unpaused,) = presence.snapshot([(Q, PHONE, "r-1", False, "")], at(20), False)
    assert isinstance(unpaused, PauseInterval)
    assert unpaused.ended_at == at(20)


def test_snapshot_drops_an_announcement_whose_event_was_lost() -> None:
    presence = Presence()
    presence.expect(Q, PHONE, "join", "shift")
    presence.snapshot([(Q, PHONE, "r-1", False, "")], at(10), False)
    presence.feed("QueueMemberRemoved", fields_of(), at(20))
    (again,) = sessions(presence.feed("QueueMemberAdded", added(), at(30)))
    assert again.join_reason == "external"


def test_restored_sessions_and_pauses_continue_with_their_revision() -> None:
    session = MemberSession(Q, "r-1", PHONE, at(0), None, "shift", None, 1)
    paused = PauseInterval(Q, "r-1", PHONE, at(10), None, "lunch", "external", 1)
    presence = Presence()
    presence.restore([session], [paused])
    closed_pause, closed = presence.feed("QueueMemberRemoved", fields_of(), at(60))
    assert closed_pause == dataclasses.replace(paused, ended_at=at(60), revision=2)
    assert closed == dataclasses.replace(
        session, left_at=at(60), leave_reason="external", revision=2
    )


def test_events_without_queue_or_interface_or_with_junk_flags_change_nothing() -> None:
    presence = Presence()
    assert presence.feed("QueueMemberAdded", {"Queue": Q}, at(0)) == []
    assert presence.feed("QueueMemberAdded", {"Interface": PHONE, "Queue": ""}, at(0)) == []
    assert presence.feed("QueueMemberPause", pause("yes", "lunch"), at(0)) == []
    assert presence.feed("QueueMemberStatus", fields_of(), at(0)) == []


# -- Hypothesis --------------------------------------------------------------------------------

QUEUES = (Q, "spanish")
PHONES = (PHONE, "PJSIP/102", "Local/103@dialer")
MS = st.integers(-5_000, 600_000)
FIELDS = {
    "Queue": st.sampled_from((*QUEUES, "")),
    "Interface": st.sampled_from((*PHONES, "")),
    "MemberName": st.sampled_from(("r-1", "r-2", "")),
    "Paused": st.sampled_from(("1", "0", "", "true")),
    "PausedReason": st.sampled_from(("Auto-Pause", "lunch", "")),
}


@dataclasses.dataclass(frozen=True)
class Feed:
    name: str
    fields: dict[str, str]
    delta_ms: int


@dataclasses.dataclass(frozen=True)
class Expect:
    queue: str
    interface: str
    change: str
    reason: str
    delta_ms: int = 0


@dataclasses.dataclass(frozen=True)
class Snapshot:
    members: list[tuple[str, str, str, bool, str]]
    restarted: bool
    delta_ms: int


Step = Feed | Expect | Snapshot

STEPS = st.lists(
    st.one_of(
        st.builds(
            Feed,
            st.sampled_from(
                ("QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause", "Other", "")
            ),
            st.fixed_dictionaries({}, optional=FIELDS),
            MS,
        ),
        st.builds(
            Expect,
            st.sampled_from(QUEUES),
            st.sampled_from(PHONES),
            st.sampled_from(("join", "leave", "bogus")),
            st.sampled_from((*JOIN_REASONS, *LEAVE_REASONS, "nope")),
        ),
        st.builds(
            Snapshot,
            st.lists(
                st.tuples(
                    st.sampled_from((*QUEUES, "")),
                    st.sampled_from(PHONES),
                    st.sampled_from(("r-1", "")),
                    st.booleans(),
                    st.sampled_from(("lunch", "Auto-Pause", "")),
                ),
                max_size=4,
            ),
            st.booleans(),
            MS,
        ),
    ),
    max_size=60,
)

Interval = tuple[datetime, datetime | None]


def check_stream(changes: list[Change]) -> None:
    """Revisions go up per natural key, a key is never reused, closed means closed for good,
    and the intervals of one (queue, interface) never overlap."""
    latest: dict[tuple[str, str, str, datetime], Change] = {}
    for change in changes:
        if isinstance(change, MemberSession):
            key = ("session", change.queue, change.interface, change.joined_at)
            assert change.join_reason in JOIN_REASONS
            assert (change.left_at is None) == (change.leave_reason is None)
            assert change.leave_reason is None or change.leave_reason in LEAVE_REASONS
            assert change.left_at is None or change.left_at >= change.joined_at
        else:
            key = ("pause", change.queue, change.interface, change.started_at)
            assert change.paused_by == "external"
            assert change.ended_at is None or change.ended_at >= change.started_at
        before = latest.get(key)
        if before is None:
            assert change.revision == 1
        else:
            assert change.revision == before.revision + 1
            assert _end(before) is None  # a closed interval never changes again
        latest[key] = change
    by_member: dict[tuple[str, str, str], list[Interval]] = {}
    for (kind, queue, interface, start), change in latest.items():
        by_member.setdefault((kind, queue, interface), []).append((start, _end(change)))
    for intervals in by_member.values():
        intervals.sort(key=lambda i: i[0])
        for (_, end), (next_start, _) in itertools.pairwise(intervals):
            assert end is not None
            assert next_start >= end


def _end(change: Change) -> datetime | None:
    return change.left_at if isinstance(change, MemberSession) else change.ended_at


@settings(deadline=None)
@given(STEPS)
def test_random_member_events_never_overlap_sessions_or_pauses(steps: list[Step]) -> None:
    presence = Presence()
    changes: list[Change] = []
    now = T0
    for step in steps:
        now += timedelta(milliseconds=step.delta_ms)
        if isinstance(step, Feed):
            changes += presence.feed(step.name, step.fields, now)
        elif isinstance(step, Expect):
            # The steps draw junk changes and reasons too: those must be refused out loud.
            expect = cast(Callable[[str, str, str, str], None], presence.expect)
            if step.reason in {"join": JOIN_REASONS, "leave": LEAVE_REASONS}.get(step.change, ()):
                expect(step.queue, step.interface, step.change, step.reason)
            else:
                with pytest.raises(ValueError, match=r"no reason to|unknown member change"):
                    expect(step.queue, step.interface, step.change, step.reason)
        else:
            changes += presence.snapshot(step.members, now, step.restarted)
    changes += presence.snapshot([], now + timedelta(days=1), False)
    check_stream(changes)
    assert all(_end(c) is not None for c in {_key(c): c for c in changes}.values())


def _key(change: Change) -> tuple[str, str, str, datetime]:
    if isinstance(change, MemberSession):
        return ("session", change.queue, change.interface, change.joined_at)
    return ("pause", change.queue, change.interface, change.started_at)


def test_a_pause_hotline_announced_is_filed_as_hotlines_until_the_next_unpause() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added(), at(0))
    presence.feed("QueueMemberAdded", fields_of(queue="youth"), at(0))
    presence.expect_pause(PHONE, None, "decompression")  # every queue
    (ours,) = pauses(presence.feed("QueueMemberPause", pause("1", "decompression"), at(1)))
    youth = fields_of(queue="youth", Paused="1", PausedReason="decompression")
    (ours_too,) = pauses(presence.feed("QueueMemberPause", youth, at(1)))
    assert (ours.paused_by, ours_too.paused_by) == ("hotline", "hotline")
    presence.feed("QueueMemberPause", pause("0"), at(2))
    # After the unpause the responder's own pause, even with the same reason, is theirs.
    (theirs,) = pauses(presence.feed("QueueMemberPause", pause("1", "decompression"), at(3)))
    assert theirs.paused_by == "external"


def test_an_announced_pause_with_another_reason_or_queue_is_not_hotlines() -> None:
    presence = Presence()
    presence.feed("QueueMemberAdded", added(), at(0))
    presence.expect_pause(PHONE, Q, "break")
    (other,) = pauses(presence.feed("QueueMemberPause", pause("1", "admin"), at(1)))
    assert other.paused_by == "external"
    presence.expect_pause(PHONE, "youth", "break")
    # The admin pause ends as the break begins.
    ended, elsewhere = pauses(presence.feed("QueueMemberPause", pause("1", "break"), at(2)))
    assert (ended.reason, ended.ended_at) == ("admin", at(2))
    assert (elsewhere.reason, elsewhere.paused_by) == ("break", "external")
