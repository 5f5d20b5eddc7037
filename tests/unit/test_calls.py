"""Call lifecycles: table cases for each outcome and each kind of lost or reordered event, and
Hypothesis properties of the record stream (revisions, ranks, final outcomes) under junk input."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.core.calls import CallBook
from hotline.core.records import AttemptOutcome, CallRecord, Outcome, PartnerResult, RingAttempt

T0 = datetime(2025, 3, 1, 22, 0, tzinfo=UTC)
UID = "1740866400.17"
Q = "crisis"

Event = tuple[float, str, dict[str, str]]  # (seconds after T0, AMI event name, fields)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def caller(t: float, name: str, uid: str = UID, queue: str = Q, **fields: str) -> Event:
    return (t, name, {"Queue": queue, "Uniqueid": uid, **fields})


def join(t: float, uid: str = UID, queue: str = Q, **fields: str) -> Event:
    given = {"Position": "1", "Count": "1", "CallerKey": "k-9f2c", "CallerKeyId": "2025a"}
    given |= {"CallerWithheld": "0", "Campaign": "988"} | fields
    return caller(t, "QueueCallerJoin", uid, queue, **given)


def called(t: float, member: str, dest: str, uid: str = UID) -> Event:
    return caller(
        t, "AgentCalled", uid, MemberName=member, Interface=f"PJSIP/{member}", DestUniqueid=dest
    )


def dial_end(t: float, dest: str, status: str, uid: str = UID) -> Event:
    return (t, "DialEnd", {"Uniqueid": uid, "DestUniqueid": dest, "DialStatus": status})


def no_answer(t: float, member: str, ring_ms: int, uid: str = UID, **dest: str) -> Event:
    return caller(t, "AgentRingNoAnswer", uid, MemberName=member, RingTime=str(ring_ms), **dest)


def connect(t: float, member: str, hold: int, ring_s: int, uid: str = UID, **dest: str) -> Event:
    timing = {"HoldTime": str(hold), "RingTime": str(ring_s)}
    return caller(t, "AgentConnect", uid, MemberName=member, **timing, **dest)


def complete(t: float, member: str, hold: int, talk: int, reason: str = "caller") -> Event:
    return caller(
        t,
        "AgentComplete",
        MemberName=member,
        HoldTime=str(hold),
        TalkTime=str(talk),
        Reason=reason,
    )


def abandon(t: float, hold: int, uid: str = UID) -> Event:
    return caller(
        t, "QueueCallerAbandon", uid, Position="1", OriginalPosition="2", HoldTime=str(hold)
    )


def leave(t: float, uid: str = UID) -> Event:
    return caller(t, "QueueCallerLeave", uid, Position="1")


def result(t: float, status: str, uid: str = UID, queue: str = Q) -> Event:
    return caller(t, "UserEvent", uid, queue, UserEvent="QueueResult", Status=status)


def rollover(t: float, uid: str = UID) -> Event:
    return caller(t, "UserEvent", uid, UserEvent="QueueRollover")


def partner(t: float, status: str, uid: str = UID) -> Event:
    return caller(t, "UserEvent", uid, UserEvent="PartnerResult", Status=status)


def hangup(t: float, uid: str = UID) -> Event:
    return (t, "Hangup", {"Uniqueid": uid, "Cause": "16"})


def play(events: Sequence[Event], book: CallBook | None = None) -> list[CallRecord]:
    book = book if book is not None else CallBook()
    snapshots: list[CallRecord] = []
    for t, name, fields in events:
        snapshots += book.feed(name, fields, at(t))
    return snapshots


def last(snapshots: Sequence[CallRecord], visit: int = 1, uid: str = UID) -> CallRecord:
    mine = [s for s in snapshots if (s.uniqueid, s.visit) == (uid, visit)]
    assert mine, f"no snapshot of {uid} visit {visit}"
    return mine[-1]


ANSWERED_AFTER_A_MISS = [
    join(0),
    called(1, "r-1", "d.1"),
    called(1, "r-2", "d.2"),
    no_answer(16, "r-1", 15000),
    dial_end(16, "d.1", "NOANSWER"),
    leave(20),
    dial_end(20, "d.2", "ANSWER"),
    connect(20, "r-2", hold=20, ring_s=19),
    complete(320, "r-2", hold=20, talk=300),
    hangup(320.4),
]

# (events, expected fields of the final record, book options)
OUTCOME_CASES: dict[str, tuple[list[Event], dict[str, object], dict[str, float]]] = {
    "answered_after_a_missed_ring": (
        ANSWERED_AFTER_A_MISS,
        {"outcome": Outcome.ANSWERED, "wait_s": 20, "talk_s": 300, "answered_by": "r-2"},
        {},
    ),
    "caller_hangup_while_waiting_is_abandoned_when_the_hangup_comes": (
        [
            join(0),
            called(1, "r-1", "d.1"),
            abandon(42, 42),
            dial_end(42, "d.1", "CANCEL"),
            leave(42),
            hangup(42.2),
        ],
        {"outcome": Outcome.ABANDONED, "wait_s": 42, "ended_at": at(42), "rank": 4},
        {},
    ),
    "timeout_with_queue_result_after_the_abandon": (
        [join(0), abandon(90, 90), leave(90), result(90.1, "TIMEOUT"), hangup(400)],
        {"outcome": Outcome.TIMEOUT, "wait_s": 90, "ended_at": at(90.1), "rank": 4},
        {},
    ),
    "timeout_with_queue_result_before_the_abandon": (
        [join(0), result(90, "TIMEOUT"), abandon(90.1, 90), leave(90.1), hangup(400)],
        {"outcome": Outcome.TIMEOUT, "wait_s": 90, "ended_at": at(90), "rank": 4},
        {},
    ),
    "timeout_with_hangup_long_after_the_queue_result": (
        [join(0), abandon(90, 90), result(90.1, "TIMEOUT"), rollover(90.2), hangup(700)],
        {"outcome": Outcome.TIMEOUT, "rolled_over": True},
        {},
    ),
    "refused_join_is_a_record_of_its_own": (
        [result(5, "JOINEMPTY"), hangup(6)],
        {"outcome": Outcome.JOINEMPTY, "wait_s": 0, "entered_at": at(5), "rank": 4},
        {},
    ),
    "full_queue_is_a_refused_join": (
        [result(5, "FULL")],
        {"outcome": Outcome.JOINEMPTY, "wait_s": 0},
        {},
    ),
    "unavailable_queue_is_a_refused_join": (
        [result(5, "JOINUNAVAIL")],
        {"outcome": Outcome.JOINEMPTY},
        {},
    ),
    "emptied_queue_is_leaveempty": (
        [join(0), abandon(30, 30), result(30.1, "LEAVEEMPTY"), hangup(31)],
        {"outcome": Outcome.LEAVEEMPTY, "wait_s": 30},
        {},
    ),
    "unavailable_members_is_leaveempty": (
        [join(0), abandon(30, 30), result(30.1, "LEAVEUNAVAIL")],
        {"outcome": Outcome.LEAVEEMPTY},
        {},
    ),
    "withdrawn_caller_is_a_rollover": (
        [join(0), abandon(30, 30), result(30.1, "WITHDRAW")],
        {"outcome": Outcome.ROLLOVER},
        {},
    ),
    "transfer_by_the_responder_is_transferred": (
        [
            join(0),
            called(1, "r-1", "d.1"),
            connect(8, "r-1", 8, 7),
            complete(600, "r-1", 8, 592, "transfer"),
            hangup(900),
        ],
        {"outcome": Outcome.TRANSFERRED, "talk_s": 592},
        {},
    ),
    "hangup_at_the_upstream_timer_is_an_upstream_rollover": (
        [join(0), abandon(61, 61), hangup(61.1)],
        {"outcome": Outcome.ROLLOVER, "wait_s": 61},
        {"upstream_rollover_after_s": 60, "upstream_tolerance_s": 2},
    ),
    "hangup_at_the_edge_of_the_tolerance_is_an_upstream_rollover": (
        [join(0), abandon(58, 58), hangup(58.1)],
        {"outcome": Outcome.ROLLOVER},
        {"upstream_rollover_after_s": 60, "upstream_tolerance_s": 2},
    ),
    "hangup_outside_the_tolerance_stays_abandoned": (
        [join(0), abandon(63, 63), hangup(63.1)],
        {"outcome": Outcome.ABANDONED},
        {"upstream_rollover_after_s": 60, "upstream_tolerance_s": 2},
    ),
    "own_timeout_at_the_upstream_timer_stays_a_timeout": (
        [join(0), abandon(60, 60), result(60.1, "TIMEOUT"), hangup(61)],
        {"outcome": Outcome.TIMEOUT},
        {"upstream_rollover_after_s": 60, "upstream_tolerance_s": 2},
    ),
    "lost_abandon_is_inferred_from_the_hangup": (
        [join(0), hangup(40)],
        {"outcome": Outcome.ABANDONED, "wait_s": 40, "ended_at": at(40)},
        {},
    ),
    "lost_agent_complete_is_inferred_from_the_hangup": (
        [join(0), connect(20, "r-1", 20, 3), hangup(200)],
        {"outcome": Outcome.ANSWERED, "wait_s": 20, "talk_s": 180, "ended_at": at(200)},
        {},
    ),
    "agent_complete_before_agent_connect_still_gives_asterisks_times": (
        [join(0), complete(320, "r-2", 20, 300), connect(20, "r-2", 20, 4), hangup(321)],
        {"outcome": Outcome.ANSWERED, "wait_s": 20, "talk_s": 300, "answered_at": at(20)},
        {},
    ),
    "agent_complete_for_an_unknown_call_creates_its_record": (
        [complete(320, "r-2", 20, 300)],
        {"outcome": Outcome.ANSWERED, "entered_at": at(0), "answered_at": at(20), "rank": 4},
        {},
    ),
    "agent_connect_for_an_unknown_call_creates_its_record": (
        [connect(20, "r-2", 20, 4)],
        {"outcome": None, "entered_at": at(0), "answered_by": "r-2", "rank": 2},
        {},
    ),
    "malformed_hold_time_falls_back_on_the_event_times": (
        [join(0), caller(33, "QueueCallerAbandon", HoldTime="3e1"), hangup(33.1)],
        {"outcome": Outcome.ABANDONED, "wait_s": 33},
        {},
    ),
    "continue_after_an_answered_call_is_not_an_exit": (
        [join(0), connect(5, "r-1", 5, 2), complete(65, "r-1", 5, 60), result(65.1, "CONTINUE")],
        {"outcome": Outcome.ANSWERED},
        {},
    ),
}


@pytest.mark.parametrize(
    ("events", "expected", "options"), OUTCOME_CASES.values(), ids=OUTCOME_CASES.keys()
)
def test_each_call_sequence_ends_in_the_expected_record(
    events: list[Event], expected: dict[str, object], options: dict[str, float]
) -> None:
    record = last(play(events, CallBook(**options)))
    assert {name: getattr(record, name) for name in expected} == expected


def test_ring_times_are_milliseconds_on_a_miss_and_seconds_on_an_answer() -> None:
    record = last(play(ANSWERED_AFTER_A_MISS))
    assert record.attempts == (
        RingAttempt("r-1", at(1), AttemptOutcome.NOANSWER, 15000),
        RingAttempt("r-2", at(1), AttemptOutcome.ANSWERED, 19000),
    )


def test_join_fields_are_kept_and_a_withheld_caller_has_no_key() -> None:
    shown = last(play([join(0)]))
    assert (shown.position, shown.campaign, shown.caller_key, shown.caller_key_id) == (
        1,
        "988",
        "k-9f2c",
        "2025a",
    )
    withheld = last(play([join(0, CallerWithheld="1")]))
    assert withheld.caller_withheld
    assert (withheld.caller_key, withheld.caller_key_id) == (None, None)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("BUSY", AttemptOutcome.BUSY),
        ("CONGESTION", AttemptOutcome.BUSY),
        ("CHANUNAVAIL", AttemptOutcome.BUSY),
        ("NOANSWER", AttemptOutcome.NOANSWER),
        ("CANCEL", AttemptOutcome.CANCELED),
        ("ANSWER", AttemptOutcome.RINGING),
    ],
)
def test_dial_end_settles_the_attempt_rung_on_that_member_leg(
    status: str, outcome: AttemptOutcome
) -> None:
    events = [join(0), called(1, "r-1", "d.1"), called(1, "r-2", "d.2"), dial_end(9, "d.2", status)]
    attempts = last(play(events)).attempts
    assert [a.outcome for a in attempts] == [AttemptOutcome.RINGING, outcome]


def test_connect_cancels_the_other_ringing_attempts() -> None:
    events = [join(0), called(1, "r-1", "d.1"), called(1, "r-2", "d.2"), connect(6, "r-1", 6, 5)]
    attempts = last(play(events)).attempts
    assert [a.outcome for a in attempts] == [AttemptOutcome.ANSWERED, AttemptOutcome.CANCELED]


def test_member_legs_pick_the_attempt_when_a_responder_was_rung_twice() -> None:
    events = [
        join(0),
        called(1, "r-1", "d.1"),
        called(17, "r-1", "d.2"),
        no_answer(33, "r-1", 16000, DestUniqueid="d.1"),
        dial_end(33, "d.2", "NOANSWER"),
        dial_end(34, "d.1", "BUSY"),  # settled already: stays a no-answer
    ]
    attempts = last(play(events)).attempts
    assert [(a.outcome, a.ring_ms) for a in attempts] == [
        (AttemptOutcome.NOANSWER, 16000),
        (AttemptOutcome.NOANSWER, None),
    ]


def test_ring_time_arriving_after_dial_end_fills_in_the_attempt() -> None:
    events = [join(0), called(1, "r-1", "d.1"), dial_end(16, "d.1", "NOANSWER")]
    events += [no_answer(16, "r-1", 15000)]
    (attempt,) = last(play(events)).attempts
    assert (attempt.outcome, attempt.ring_ms) == (AttemptOutcome.NOANSWER, 15000)


def test_a_ring_no_answer_whose_agent_called_was_lost_still_adds_the_attempt() -> None:
    (attempt,) = last(play([join(0), no_answer(20, "r-1", 15000, DestUniqueid="d.1")])).attempts
    assert attempt == RingAttempt("r-1", at(5), AttemptOutcome.NOANSWER, 15000)


def test_a_ring_reported_after_the_answer_is_recorded_as_canceled() -> None:
    events = [join(0), connect(9, "r-1", 9, 8), called(1, "r-2", "d.2"), called(1, "r-1", "d.1")]
    attempts = last(play(events)).attempts
    assert [(a.responder, a.outcome) for a in attempts] == [
        ("r-1", AttemptOutcome.ANSWERED),
        ("r-2", AttemptOutcome.CANCELED),
    ]


def test_a_repeated_agent_called_adds_no_attempt() -> None:
    snapshots = play([join(0), called(1, "r-1", "d.1"), called(1, "r-1", "d.1")])
    assert len(last(snapshots).attempts) == 1
    assert len(snapshots) == 2


def test_a_responder_dropping_before_the_bridge_leaves_the_call_queued() -> None:
    book = CallBook()
    snapshots = play(
        [join(0), called(1, "r-1", "d.1"), caller(4, "AgentDump", MemberName="r-1")], book
    )
    record = last(snapshots)
    assert record.attempts[0].outcome is AttemptOutcome.CANCELED
    assert (record.outcome, record.rank, book.open_count) == (None, 1, 1)


def test_a_provisional_abandon_is_reported_open_until_something_decides_it() -> None:
    book = CallBook()
    (record,) = play([join(0), abandon(30, 30)], book)[-1:]
    assert (record.outcome, record.wait_s, record.rank) == (None, 30, 1)
    assert book.open_count == 1


def test_tick_finalises_a_provisional_abandon_only_after_the_grace_period() -> None:
    book = CallBook(abandon_grace_s=5)
    play([join(0), abandon(30, 30)], book)
    assert book.tick(at(34.9)) == []
    (record,) = book.tick(at(35))
    assert (record.outcome, record.ended_at, record.rank) == (Outcome.ABANDONED, at(30), 4)
    assert book.open_count == 0


def test_a_queue_result_after_the_grace_period_no_longer_changes_the_abandon() -> None:
    book = CallBook(abandon_grace_s=5)
    play([join(0), abandon(30, 30)], book)
    book.tick(at(40))
    assert play([result(41, "TIMEOUT")], book) == []


def test_rollover_flag_is_set_on_a_closed_record_with_a_new_revision() -> None:
    snapshots = play([join(0), abandon(90, 90), result(90.1, "TIMEOUT"), rollover(90.2)])
    before, after = snapshots[-2:]
    assert (before.rolled_over, after.rolled_over) == (False, True)
    assert after.revision == before.revision + 1
    assert dataclasses.replace(after, rolled_over=False, revision=before.revision) == before


def test_re_entry_after_a_timeout_is_visit_two() -> None:
    snapshots = play(
        [
            join(0),
            abandon(90, 90),
            result(90.1, "TIMEOUT"),
            join(100),
            connect(110, "r-1", 10, 3),
            complete(200, "r-1", 10, 90),
        ]
    )
    first, second = last(snapshots, visit=1), last(snapshots, visit=2)
    assert (first.outcome, first.wait_s) == (Outcome.TIMEOUT, 90)
    assert (second.outcome, second.entered_at, second.wait_s) == (Outcome.ANSWERED, at(100), 10)
    assert second.revision == 3


TIMED_OUT = [join(0), abandon(90, 90), leave(90), result(90.1, "TIMEOUT"), rollover(90.2)]


def test_a_partner_that_answers_makes_the_timed_out_visit_a_rollover() -> None:
    snapshots = play([*TIMED_OUT, partner(700, "ANSWER"), hangup(700)])
    before, after = snapshots[-2:]
    assert (before.outcome, before.partner_result) == (Outcome.TIMEOUT, None)
    assert (after.outcome, after.partner_result, after.rank) == (
        Outcome.ROLLOVER,
        PartnerResult.ANSWERED,
        4,
    )
    # The queue's end and wait stay; only the outcome and the partner's result change.
    assert (after.ended_at, after.wait_s, after.rolled_over) == (at(90.1), 90, True)
    assert after.revision == before.revision + 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("BUSY", PartnerResult.BUSY),
        ("NOANSWER", PartnerResult.NOANSWER),
        ("CONGESTION", PartnerResult.CONGESTION),
        ("CHANUNAVAIL", PartnerResult.UNAVAILABLE),
        ("INVALIDARGS", PartnerResult.UNAVAILABLE),
        ("CANCEL", PartnerResult.CANCELED),
    ],
)
def test_a_partner_that_does_not_answer_leaves_the_queue_s_outcome(
    status: str, expected: PartnerResult
) -> None:
    after = play([*TIMED_OUT, partner(95, status)])[-1]
    assert (after.outcome, after.partner_result, after.rank) == (Outcome.TIMEOUT, expected, 4)


def test_a_caller_back_in_the_queue_after_a_failed_partner_call_is_visit_two() -> None:
    snapshots = play(
        [
            result(0, "JOINEMPTY"),
            rollover(0.1),
            partner(0.2, "CHANUNAVAIL"),
            join(5),
            connect(9, "r-1", 4, 3),
            complete(60, "r-1", 4, 51),
            partner(61, "ANSWER"),  # the dialplan never rolls an answered visit over: ignored
            hangup(61),
        ]
    )
    first, second = last(snapshots, visit=1), last(snapshots, visit=2)
    assert (first.outcome, first.partner_result, first.rolled_over) == (
        Outcome.JOINEMPTY,
        PartnerResult.UNAVAILABLE,
        True,
    )
    assert (second.outcome, second.answered_by, second.partner_result) == (
        Outcome.ANSWERED,
        "r-1",
        None,
    )


def test_the_partner_s_result_is_taken_once_and_only_as_a_user_event() -> None:
    book = CallBook()
    play([*TIMED_OUT, partner(95, "BUSY")], book)
    assert play([partner(96, "ANSWER"), partner(97, "BUSY")], book) == []
    assert play([caller(98, "PartnerResult", Status="ANSWER")], book) == []
    assert play([partner(99, "DONTCALL"), partner(99, "")], CallBook()) == []


def test_a_partner_answer_for_a_visit_whose_exit_was_lost_closes_it_as_a_rollover() -> None:
    after = play([join(0), abandon(90, 90), partner(91, "ANSWER")])[-1]
    assert (after.outcome, after.ended_at, after.wait_s, after.rank) == (
        Outcome.ROLLOVER,
        at(91),
        90,
        4,
    )


def test_a_partner_answer_for_a_visit_closed_unknown_makes_it_a_true_rollover() -> None:
    book = CallBook()
    play([join(0)], book)
    book.resync([], at(60))  # AMI was away: closed as unknown
    after = play([partner(120, "ANSWER")], book)[-1]
    assert (after.outcome, after.rank, after.ended_at) == (Outcome.ROLLOVER, 4, at(60))


def test_a_join_for_a_visit_still_open_closes_it_as_unknown_and_opens_the_next() -> None:
    book = CallBook()
    old, new = play([join(0), join(50)], book)[-2:]
    assert (old.visit, old.outcome, old.rank, old.ended_at) == (1, Outcome.UNKNOWN, 3, at(50))
    assert (new.visit, new.outcome, new.revision) == (2, None, 1)
    assert book.open_count == 1


def test_a_repeated_join_event_is_not_a_re_entry() -> None:
    assert play([join(0), join(0)])[-1].visit == 1


def test_a_late_join_belongs_to_the_visit_its_later_events_opened() -> None:
    snapshots = play([called(1, "r-1", "d.1"), join(0), abandon(9, 9), hangup(9)])
    assert {s.visit for s in snapshots} == {1}
    record = last(snapshots)
    assert (record.entered_at, record.campaign, record.outcome) == (at(0), "988", Outcome.ABANDONED)


def test_a_late_join_of_a_visit_already_closed_changes_nothing_and_a_later_one_re_enters() -> None:
    book = CallBook()
    (closed,) = play([complete(320, "r-2", 20, 300)], book)
    assert play([join(0)], book) == []
    (second,) = play([join(400)], book)
    assert (closed.visit, second.visit, second.entered_at) == (1, 2, at(400))


def test_a_refused_join_while_a_visit_looks_open_closes_that_visit_first() -> None:
    old, refused = play([join(0), result(500, "JOINEMPTY")])[-2:]
    assert (old.visit, old.outcome, refused.visit, refused.outcome) == (
        1,
        Outcome.UNKNOWN,
        2,
        Outcome.JOINEMPTY,
    )


def test_a_repeated_refusal_is_one_record() -> None:
    assert len(play([result(5, "FULL"), result(5, "FULL")])) == 1


def test_an_exit_for_an_unknown_call_is_recorded_without_an_entry_time() -> None:
    (record,) = play([result(90, "TIMEOUT")])
    assert (record.outcome, record.entered_at, record.wait_s) == (Outcome.TIMEOUT, None, None)


def test_agent_complete_without_hold_time_takes_the_wait_from_the_event_times() -> None:
    events = [join(0), caller(320, "AgentComplete", MemberName="r-1", TalkTime="300")]
    record = last(play(events))
    assert (record.wait_s, record.talk_s, record.answered_at) == (20, 300, at(20))


def test_instants_at_the_edge_of_the_calendar_do_not_crash_the_arithmetic() -> None:
    book = CallBook()
    early = datetime(1, 1, 1, 0, 0, 5, tzinfo=UTC)
    fields = {"Queue": Q, "Uniqueid": UID, "MemberName": "r-1", "HoldTime": "60"}
    (record,) = book.feed("AgentConnect", fields, early)
    assert (record.entered_at, record.answered_at) == (None, early)


def test_resync_closes_what_is_no_longer_waiting_and_agent_complete_upgrades_it() -> None:
    book = CallBook()
    play([join(0), join(1, uid="b"), join(2, uid="c"), connect(20, "r-1", 20, 3)], book)
    changed = book.resync([(Q, "b")], at(100))
    assert {(s.uniqueid, s.outcome, s.rank, s.ended_at) for s in changed} == {
        (UID, Outcome.UNKNOWN, 3, at(100)),
        ("c", Outcome.UNKNOWN, 3, at(100)),
    }
    assert book.open_count == 1
    (upgraded,) = play([complete(400, "r-1", 20, 380)], book)
    assert (upgraded.outcome, upgraded.rank, upgraded.talk_s) == (Outcome.ANSWERED, 4, 380)
    assert upgraded.revision > last(changed).revision


def test_after_resync_a_hangup_finishes_an_answered_call_but_not_an_unanswered_one() -> None:
    book = CallBook()
    play([join(0), connect(20, "r-1", 20, 3), join(5, uid="b")], book)
    book.resync([], at(100))
    changed = play([hangup(300), hangup(301, uid="b")], book)
    assert [(s.uniqueid, s.outcome, s.talk_s) for s in changed] == [(UID, Outcome.ANSWERED, 280)]


def test_resync_opens_a_record_for_a_caller_that_joined_while_we_were_away() -> None:
    book = CallBook()
    (opened,) = book.resync([(Q, UID)], at(100))
    assert (opened.visit, opened.entered_at, opened.rank) == (1, None, 1)
    (answered,) = play([connect(130, "r-1", 45, 2)], book)
    assert (answered.entered_at, answered.wait_s, answered.revision) == (at(85), 45, 2)


def test_tick_closes_a_record_without_events_for_stale_after_s_as_unknown() -> None:
    book = CallBook(stale_after_s=6 * 3600)
    play([join(0)], book)
    assert book.tick(at(6 * 3600 - 1)) == []
    (closed,) = book.tick(at(6 * 3600))
    assert (closed.outcome, closed.rank, closed.ended_at) == (Outcome.UNKNOWN, 3, at(6 * 3600))
    assert book.open_count == 0


def test_closed_records_are_forgotten_after_keep_closed_s() -> None:
    book = CallBook(keep_closed_s=3600)
    play([join(0), abandon(10, 10), hangup(10)], book)
    book.tick(at(3600))
    assert play([rollover(3601)], book) != []  # still known just before the hour
    book.tick(at(3601 + 3600))
    assert play([rollover(7300)], book) == []


def test_a_closed_record_is_never_reopened() -> None:
    book = CallBook()
    play([join(0), abandon(10, 10), hangup(10)], book)
    later = [connect(11, "r-1", 11, 1), complete(50, "r-1", 11, 39), abandon(12, 12), hangup(60)]
    assert play([*later, result(61, "TIMEOUT"), called(62, "r-2", "d.9")], book) == []


def test_restored_records_continue_with_their_visit_rank_and_revision() -> None:
    stored = last(play([join(0), join(50), called(51, "r-1", "d.1")]), visit=2)
    book = CallBook()
    book.restore([stored])
    assert book.open_count == 1
    (record,) = play([connect(60, "r-1", 10, 9)], book)
    assert (record.visit, record.rank, record.revision) == (2, 2, stored.revision + 1)
    assert record.attempts[0].outcome is AttemptOutcome.ANSWERED


def test_a_restored_provisional_abandon_is_still_finalised_after_the_grace_period() -> None:
    stored = last(play([join(0), abandon(30, 30)]))
    book = CallBook(abandon_grace_s=5)
    book.restore([stored])
    (record,) = book.tick(at(35))
    assert (record.outcome, record.ended_at, record.revision) == (
        Outcome.ABANDONED,
        at(30),
        stored.revision + 1,
    )


def test_restore_keeps_the_newest_copy_of_a_record() -> None:
    older, newer = play([join(0), called(1, "r-1", "d.1")])
    book = CallBook()
    book.restore([newer, older])
    assert play([hangup(9)], book)[0].revision == newer.revision + 1


def test_a_restored_record_without_any_instant_goes_stale_from_the_first_tick() -> None:
    (stored,) = CallBook().resync([(Q, UID)], at(0))
    book = CallBook(stale_after_s=600)
    book.restore([dataclasses.replace(stored)])
    assert book.tick(at(10_000)) == []  # the timer starts here
    (closed,) = book.tick(at(10_600))
    assert closed.outcome is Outcome.UNKNOWN


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("Newchannel", {"Queue": Q, "Uniqueid": UID}),
        ("QueueCallerJoin", {"Uniqueid": UID}),
        ("QueueCallerJoin", {"Queue": Q, "Uniqueid": ""}),
        ("AgentConnect", {"Queue": Q}),
        ("Hangup", {"Uniqueid": "1740866400.99"}),
        ("UserEvent", {"UserEvent": "SomethingElse", "Queue": Q, "Uniqueid": UID}),
        ("QueueResult", {"Queue": Q, "Uniqueid": UID, "Status": "JOINEMPTY"}),
        ("DialEnd", {"Uniqueid": UID, "DestUniqueid": "unknown", "DialStatus": "BUSY"}),
    ],
)
def test_events_that_are_not_ours_or_lack_their_ids_change_nothing(
    name: str, fields: dict[str, str]
) -> None:
    book = CallBook()
    assert book.feed(name, fields, T0) == []
    assert book.open_count == 0


# -- Hypothesis --------------------------------------------------------------------------------

UIDS = ("1740866400.1", "1740866400.2", "1740866400.3")
QUEUES = ("crisis", "spanish")
NAMES = (
    "QueueCallerJoin",
    "AgentCalled",
    "DialEnd",
    "AgentRingNoAnswer",
    "AgentConnect",
    "AgentComplete",
    "AgentDump",
    "QueueCallerAbandon",
    "QueueCallerLeave",
    "Hangup",
    "UserEvent",
    "Newchannel",
    "QueueMemberStatus",
    "",
)
STATUSES = ("TIMEOUT", "LEAVEEMPTY", "LEAVEUNAVAIL", "JOINEMPTY", "JOINUNAVAIL", "FULL", "WITHDRAW")
NUMBERS = st.one_of(
    st.integers(0, 400).map(str),
    st.sampled_from(["", "abc", "-5", "1e3", " 7 ", "99999999999999999999", "٣", "1_000"]),
)
FIELDS = {
    "Queue": st.sampled_from((*QUEUES, "")),
    "Uniqueid": st.sampled_from((*UIDS, "")),
    "UserEvent": st.sampled_from(("QueueResult", "QueueRollover", "PartnerResult", "Other", "")),
    "Status": st.sampled_from(
        (*STATUSES, "CONTINUE", "ANSWER", "BUSY", "CHANUNAVAIL", "", "bogus")
    ),
    "DialStatus": st.sampled_from(
        ("ANSWER", "BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "", "x")
    ),
    "Reason": st.sampled_from(("caller", "agent", "transfer", "", "?")),
    "MemberName": st.sampled_from(("r-1", "r-2", "")),
    "Interface": st.sampled_from(("PJSIP/101", "")),
    "DestUniqueid": st.sampled_from(("d.1", "d.2", "d.3", "")),
    "CallerWithheld": st.sampled_from(("1", "0", "", "yes")),
    "CallerKey": st.sampled_from(("k-1", "")),
    "CallerKeyId": st.sampled_from(("2025a", "")),
    "Campaign": st.sampled_from(("988", "")),
    "Position": NUMBERS,
    "OriginalPosition": NUMBERS,
    "HoldTime": NUMBERS,
    "TalkTime": NUMBERS,
    "RingTime": NUMBERS,
}
MS = st.integers(-5_000, 120_000)  # time to the step from the previous one: monotone-ish


@dataclasses.dataclass(frozen=True)
class Feed:
    name: str
    fields: dict[str, str]
    delta_ms: int


@dataclasses.dataclass(frozen=True)
class Tick:
    delta_ms: int


@dataclasses.dataclass(frozen=True)
class Restart:
    """The daemon restarts: a new book restores every stored record, then resyncs."""

    waiting: list[tuple[str, str]]
    delta_ms: int


@dataclasses.dataclass(frozen=True)
class Resync:
    waiting: list[tuple[str, str]]
    delta_ms: int


Step = Feed | Tick | Resync | Restart

WAITING = st.lists(st.tuples(st.sampled_from((*QUEUES, "")), st.sampled_from(UIDS)), max_size=4)
OTHER_STEPS: st.SearchStrategy[Step] = st.one_of(
    st.builds(Tick, MS), st.builds(Resync, WAITING, MS), st.builds(Restart, WAITING, MS)
)
RANDOM_STEPS = st.lists(
    st.one_of(
        st.builds(
            Feed,
            st.sampled_from(NAMES),
            st.fixed_dictionaries({}, optional=FIELDS),
            MS,
        ),
        OTHER_STEPS,
    ),
    max_size=60,
)


def flow(kind: str, uid: str, queue: str) -> list[Event]:
    """One realistic call, at times relative to its start."""
    d1, d2 = f"{uid}-1", f"{uid}-2"
    if kind == "answered":
        events = [join(0), called(1, "r-1", d1), called(1, "r-2", d2)]
        events += [no_answer(16, "r-1", 15000, DestUniqueid=d1), dial_end(16, d1, "NOANSWER")]
        events += [
            leave(20),
            dial_end(20, d2, "ANSWER"),
            connect(20, "r-2", 20, 19, DestUniqueid=d2),
        ]
        events += [complete(320, "r-2", 20, 300), hangup(320.4)]
    elif kind == "transferred":
        events = [join(0), called(1, "r-1", d1), connect(8, "r-1", 8, 7)]
        events += [complete(600, "r-1", 8, 592, "transfer"), hangup(900)]
    elif kind == "abandoned":
        events = [join(0), called(1, "r-1", d1), abandon(40, 40), leave(40)]
        events += [dial_end(40, d1, "CANCEL"), hangup(40)]
    elif kind == "timeout":
        events = [join(0), abandon(90, 90), leave(90), result(90, "TIMEOUT"), rollover(90)]
        events += [partner(400, "ANSWER"), hangup(400)]
    elif kind == "requeued":
        events = [result(0, "JOINEMPTY"), rollover(0), partner(0, "CHANUNAVAIL")]
        events += [join(5), abandon(30, 25), leave(30), hangup(30)]
    elif kind == "upstream":
        events = [join(0), abandon(60, 60), leave(60), hangup(60)]
    elif kind == "dumped":
        events = [join(0), called(1, "r-1", d1), called(1, "r-2", d2), dial_end(3, d1, "ANSWER")]
        events += [caller(3, "AgentDump", MemberName="r-1", DestUniqueid=d1)]
        events += [abandon(20, 20), hangup(20)]
    else:
        events = [result(0, kind), hangup(1)]
    rebound: list[Event] = []
    for t, name, fields in events:
        moved = dict(fields, Uniqueid=uid)
        if "Queue" in moved:
            moved["Queue"] = queue
        rebound.append((t, name, moved))
    return rebound


KINDS = (
    "answered", "transferred", "abandoned", "timeout", "requeued", "upstream", "dumped", "JOINEMPTY"
)  # fmt: skip


@st.composite
def realistic_steps(draw: st.DrawFn) -> list[Step]:
    """A few overlapping realistic calls, then events dropped, duplicated and swapped, with
    ticks and resyncs in between."""
    timed: list[tuple[float, str, dict[str, str]]] = []
    for uid in draw(st.lists(st.sampled_from(UIDS), min_size=1, max_size=3, unique=True)):
        start = draw(st.integers(0, 300))
        kind = draw(st.sampled_from(KINDS))
        queue = draw(st.sampled_from(QUEUES))
        timed += [(start + t, name, fields) for t, name, fields in flow(kind, uid, queue)]
    timed.sort(key=lambda e: e[0])
    mutated: list[tuple[float, str, dict[str, str]]] = []
    for event in timed:
        fate = draw(st.sampled_from(("keep",) * 6 + ("drop", "twice")))
        mutated += [] if fate == "drop" else [event] * (2 if fate == "twice" else 1)
    for _ in range(draw(st.integers(0, 4))):
        if len(mutated) > 1:
            i = draw(st.integers(0, len(mutated) - 2))
            mutated[i], mutated[i + 1] = mutated[i + 1], mutated[i]
    steps: list[Step] = []
    previous = 0.0
    for t, name, fields in mutated:
        if draw(st.integers(0, 9)) == 0:
            steps.append(draw(OTHER_STEPS.filter(lambda s: s.delta_ms >= 0)))
        steps.append(Feed(name, fields, round((t - previous) * 1000)))
        previous = t
    return steps


class Ledger:
    """Every snapshot a CallBook returned, checked against the forward-only rules."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str, int], CallRecord] = {}

    def take(self, snapshots: list[CallRecord]) -> None:
        for s in snapshots:
            key = (s.uniqueid, s.queue, s.visit)
            before = self.latest.get(key)
            if before is None:
                assert s.revision == 1
                if s.visit > 1:  # a visit follows a closed one
                    previous = self.latest[(s.uniqueid, s.queue, s.visit - 1)]
                    assert previous.outcome is not None
            else:
                assert s.revision > before.revision
                assert s.rank >= before.rank
                if before.rank == 4:
                    # Final: only the rollover flag and the partner's result may still change,
                    # each once, and a partner's answer makes an unanswered visit a rollover.
                    assert (s.rolled_over, s.partner_result) != (
                        before.rolled_over,
                        before.partner_result,
                    )
                    assert s.rolled_over or not before.rolled_over
                    assert before.partner_result in (None, s.partner_result)
                    if s.outcome is not before.outcome:
                        assert s.outcome is Outcome.ROLLOVER
                        assert s.partner_result is PartnerResult.ANSWERED
                    unchanged = dataclasses.replace(
                        s,
                        rolled_over=before.rolled_over,
                        partner_result=before.partner_result,
                        outcome=before.outcome,
                        revision=before.revision,
                    )
                    assert unchanged == before
            assert (s.outcome is None) == (s.rank in (1, 2))
            assert (s.outcome is Outcome.UNKNOWN) == (s.rank == 3)
            assert s.answered_at is not None or s.rank != 2
            if s.outcome is not None:
                assert s.ended_at is not None
                assert all(a.outcome is not AttemptOutcome.RINGING for a in s.attempts)
            answers = sum(a.outcome is AttemptOutcome.ANSWERED for a in s.attempts)
            if s.rank == 2 or s.outcome in (Outcome.ANSWERED, Outcome.TRANSFERRED):
                assert answers == 1
            elif s.outcome is not Outcome.UNKNOWN:  # open and waiting, or left unanswered
                assert answers == 0
                assert s.answered_at is None
            assert s.wait_s is None or s.wait_s >= 0
            assert s.talk_s is None or s.talk_s >= 0
            self.latest[key] = s


def run_and_check(steps: list[Step]) -> None:
    options: dict[str, float] = {
        "stale_after_s": 600,
        "upstream_rollover_after_s": 60,
        "upstream_tolerance_s": 2,
    }
    book = CallBook(**options)
    ledger = Ledger()
    now = T0
    for step in steps:
        now += timedelta(milliseconds=step.delta_ms)
        if isinstance(step, Feed):
            ledger.take(book.feed(step.name, step.fields, now))
        elif isinstance(step, Tick):
            ledger.take(book.tick(now))
        elif isinstance(step, Resync):
            ledger.take(book.resync(step.waiting, now))
        else:
            book = CallBook(**options)
            book.restore(ledger.latest.values())
            ledger.take(book.resync(step.waiting, now))
        assert book.open_count >= 0
    ledger.take(book.tick(now + timedelta(days=30)))
    assert book.open_count == 0
    assert all(s.outcome is not None for s in ledger.latest.values())


@settings(deadline=None)
@given(RANDOM_STEPS)
def test_random_event_streams_never_break_the_forward_only_rules(steps: list[Step]) -> None:
    run_and_check(steps)


@settings(deadline=None)
@given(realistic_steps())
def test_realistic_calls_with_lost_repeated_and_reordered_events_keep_the_rules(
    steps: list[Step],
) -> None:
    run_and_check(steps)
