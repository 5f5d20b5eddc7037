"""The live queue model: exclusive member states, waiting callers, resync from QueueStatus."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hotline.core.queuestate import STATES, QueueBoard

NOW = 1_800_000_000.0


def member(interface: str, **fields: str) -> dict[str, str]:
    return {"Event": "QueueMember", "Queue": "crisis", "Location": interface, "Name": "r"} | fields


def test_member_states_follow_the_first_matching_rule() -> None:
    board = QueueBoard({"crisis": 30})
    board.resync(
        [
            member("A", Status="5", Paused="1"),  # unavailable beats paused
            member("B", Status="1", InCall="1"),  # in a queue call
            member("C", Status="6"),  # ringing
            member("D", Status="1", Paused="1"),  # paused
            member("E", Status="1", LastCall=str(int(NOW) - 10)),  # 10 s into 30 s wrap-up
            member("F", Status="1", LastCall=str(int(NOW) - 40)),  # wrap-up over
            member("G", Status="0"),  # UNKNOWN: Asterisk offers calls to it
        ],
        NOW,
    )
    view = board.view(NOW)["crisis"]
    assert view.members == {
        "available": 2, "ringing": 1, "in_call": 1, "paused": 1, "wrapup": 1, "unavailable": 1,
    }  # fmt: skip
    assert view.logged_in == 7


def test_callers_wait_from_their_join_and_resync_takes_waits_from_queuestatus() -> None:
    board = QueueBoard({"crisis": 0})
    board.feed("QueueCallerJoin", {"Queue": "crisis", "Uniqueid": "1"}, NOW - 12)
    board.feed("QueueCallerJoin", {"Queue": "crisis", "Uniqueid": "2"}, NOW - 3)
    assert board.view(NOW)["crisis"].callers == 2
    assert board.view(NOW)["crisis"].longest_wait_s == 12
    board.feed("QueueCallerAbandon", {"Queue": "crisis", "Uniqueid": "1"}, NOW)
    assert board.view(NOW)["crisis"].longest_wait_s == 3
    board.resync([{"Event": "QueueEntry", "Queue": "crisis", "Uniqueid": "9", "Wait": "40"}], NOW)
    assert board.view(NOW + 5)["crisis"].longest_wait_s == 45
    assert board.view(NOW)["crisis"].callers == 1


def test_an_answered_call_puts_the_member_in_call_then_in_wrapup() -> None:
    board = QueueBoard({"crisis": 30})
    board.resync([member("A", Status="1")], NOW)
    board.feed("AgentConnect", {"Queue": "crisis", "Interface": "A"}, NOW)
    assert board.view(NOW)["crisis"].members["in_call"] == 1
    board.feed("AgentComplete", {"Queue": "crisis", "Interface": "A"}, NOW + 60)
    assert board.view(NOW + 70)["crisis"].members["wrapup"] == 1
    assert board.view(NOW + 95)["crisis"].members["available"] == 1


def test_queues_that_are_not_configured_are_ignored() -> None:
    board = QueueBoard({"crisis": 0})
    board.feed("QueueCallerJoin", {"Queue": "sales", "Uniqueid": "1"}, NOW)
    board.resync([member("A") | {"Queue": "sales"}], NOW)
    assert set(board.view(NOW)) == {"crisis"}
    assert board.view(NOW)["crisis"].callers == 0


EVENTS = st.sampled_from(
    ["QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "QueueMemberAdded",
     "QueueMemberRemoved", "QueueMemberStatus", "QueueMemberPause", "AgentConnect",
     "AgentComplete", "Junk"]
)  # fmt: skip
FIELDS = st.fixed_dictionaries(
    {"Queue": st.sampled_from(["crisis", "other", ""]), "Uniqueid": st.sampled_from("123"),
     "Interface": st.sampled_from("AB"), "Status": st.sampled_from(["0", "1", "2", "5", "6", "x"]),
     "Paused": st.sampled_from(["0", "1"]), "InCall": st.sampled_from(["0", "1", ""]),
     "LastCall": st.sampled_from(["0", str(int(NOW)), "nan", "1e300"])}
)  # fmt: skip


@given(st.lists(st.tuples(EVENTS, FIELDS, st.floats(NOW - 100, NOW)), max_size=40))
def test_states_are_exclusive_and_sum_to_the_members_present_after_any_events(
    events: list[tuple[str, dict[str, str], float]],
) -> None:
    board = QueueBoard({"crisis": 30})
    for name, fields, at in events:
        board.feed(name, fields, at)
    view = board.view(NOW)["crisis"]
    assert set(view.members) == set(STATES)
    assert sum(view.members.values()) == view.logged_in
    assert view.callers >= 0
    assert view.longest_wait_s >= 0
