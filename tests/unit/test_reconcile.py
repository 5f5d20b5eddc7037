"""The reconcile plan: table cases, and Hypothesis properties of convergence, ownership and
make-before-break."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hotline.core.reconcile import (
    ActualMember,
    Add,
    Remove,
    SetPenalty,
    apply,
    member_from_status,
    plan,
)
from hotline.core.roster import DesiredMember

QUEUES = ("crisis", "spanish")
IDS = tuple(f"r-{i}" for i in range(8))
OWNED = frozenset(IDS)


def phone(rid: str) -> str:
    return f"PJSIP/10{rid[-1]}"


def member(
    queue: str,
    name: str,
    interface: str | None = None,
    penalty: int = 0,
    *,
    dynamic: bool = True,
    paused: bool = False,
    busy: bool = False,
) -> ActualMember:
    iface = interface or phone(name)
    return ActualMember(queue, iface, name, iface, penalty, dynamic, paused, busy)


def want(**queues: dict[str, int]) -> dict[str, dict[str, DesiredMember]]:
    result: dict[str, dict[str, DesiredMember]] = {q: {} for q in QUEUES}
    for q, members in queues.items():
        result[q] = {r: DesiredMember(r, phone(r), phone(r), p) for r, p in members.items()}
    return result


def test_nothing_to_do_when_asterisk_already_matches_the_roster() -> None:
    actual = [member("crisis", "r-1"), member("crisis", "r-2", penalty=1)]
    p = plan(want(crisis={"r-1": 0, "r-2": 1}), actual, OWNED)
    assert p.actions == ()
    assert p.missing == {"crisis": 0, "spanish": 0}


def test_adds_come_before_removes_so_the_queue_is_never_emptier_than_needed() -> None:
    p = plan(want(crisis={"r-2": 0}), [member("crisis", "r-1")], OWNED)
    assert p.actions == (
        Add("crisis", "PJSIP/102", "r-2", "PJSIP/102", 0),
        Remove("crisis", "PJSIP/101", "r-1"),
    )


def test_a_wrong_penalty_is_fixed_in_place() -> None:
    p = plan(want(crisis={"r-1": 3}), [member("crisis", "r-1", penalty=0)], OWNED)
    assert p.actions == (SetPenalty("crisis", "PJSIP/101", "r-1", 3),)


def test_a_member_on_a_call_is_kept_until_the_call_ends() -> None:
    on_call = member("crisis", "r-1", busy=True)
    p = plan(want(crisis={"r-2": 0}), [on_call], OWNED)
    assert p.actions == (Add("crisis", "PJSIP/102", "r-2", "PJSIP/102", 0),)
    assert p.deferred == (on_call,)
    assert p.unexpected["crisis"] == 1


def test_static_and_unknown_members_are_left_alone_and_reported() -> None:
    static = member("crisis", "r-1", dynamic=False)
    visitor = member("crisis", "supervisor", "PJSIP/2000")
    p = plan(want(crisis={}), [static, visitor], OWNED)
    assert p.actions == ()
    assert p.foreign == (static, visitor)


def test_a_phone_held_by_someone_elses_member_is_not_added_again() -> None:
    static = member("crisis", "front-desk", "PJSIP/101", dynamic=False)
    p = plan(want(crisis={"r-1": 0}), [static], OWNED)
    assert p.actions == ()
    assert p.missing["crisis"] == 1


def test_a_phone_moved_to_another_responder_is_freed_before_it_is_added() -> None:
    old = member("crisis", "r-2", interface="PJSIP/101")
    p = plan(want(crisis={"r-1": 0}), [old], OWNED)
    assert p.actions == (
        Remove("crisis", "PJSIP/101", "r-2"),
        Add("crisis", "PJSIP/101", "r-1", "PJSIP/101", 0),
    )


def test_queues_outside_the_roster_are_not_touched() -> None:
    p = plan(want(), [member("sales", "r-1")], OWNED)
    assert p.actions == ()
    assert p.foreign == ()


def test_a_queuestatus_member_is_read_with_its_call_and_pause_state() -> None:
    fields = {
        "Event": "QueueMember",
        "Queue": "crisis",
        "Name": "r-1",
        "Location": "PJSIP/101",
        "StateInterface": "PJSIP/101",
        "Membership": "dynamic",
        "Penalty": "2",
        "InCall": "1",
        "Status": "2",
        "Paused": "1",
    }
    assert member_from_status(fields) == ActualMember(
        "crisis", "PJSIP/101", "r-1", "PJSIP/101", 2, True, True, True
    )


desired_st = st.fixed_dictionaries(
    {q: st.dictionaries(st.sampled_from(IDS), st.integers(0, 3), max_size=6) for q in QUEUES}
).map(lambda d: want(**d))

actual_member_st = st.builds(
    member,
    queue=st.sampled_from((*QUEUES, "sales")),
    name=st.sampled_from((*IDS, "visitor", "front-desk")),
    interface=st.one_of(st.none(), st.sampled_from([f"PJSIP/10{i}" for i in range(10)])),
    penalty=st.integers(0, 3),
    dynamic=st.booleans(),
    paused=st.booleans(),
    busy=st.booleans(),
)
actual_st = st.lists(actual_member_st, max_size=12).map(
    # Asterisk holds one member per (queue, interface).
    lambda ms: list({(m.queue, m.interface): m for m in ms}.values())
)


@given(desired_st)
def test_a_roster_applied_to_an_empty_pbx_is_then_in_sync(
    desired: dict[str, dict[str, DesiredMember]],
) -> None:
    first = plan(desired, [], OWNED)
    after = apply([], first.actions)
    assert plan(desired, after, OWNED).actions == ()
    assert {(m.queue, m.name) for m in after} == {(q, r) for q, ms in desired.items() for r in ms}


@given(desired_st, actual_st)
def test_one_round_converges_except_for_members_on_a_call(
    desired: dict[str, dict[str, DesiredMember]], actual: list[ActualMember]
) -> None:
    first = plan(desired, actual, OWNED)
    after = apply(actual, first.actions)
    second = plan(desired, after, OWNED)
    assert second.actions == ()
    # Whatever is still unexpected is exactly the members on a call.
    assert sum(second.unexpected.values()) == len(second.deferred)
    assert all(m.busy for m in second.deferred)


@given(desired_st, actual_st)
def test_members_that_are_not_ours_and_members_on_a_call_are_never_removed(
    desired: dict[str, dict[str, DesiredMember]], actual: list[ActualMember]
) -> None:
    p = plan(desired, actual, OWNED)
    protected = {
        (m.queue, m.interface)
        for m in actual
        if m.busy or not m.dynamic or m.name not in OWNED or m.queue not in desired
    }
    removed = {(a.queue, a.interface) for a in p.actions if isinstance(a, Remove)}
    assert not removed & protected
    # Pauses are never changed: every member that is still there keeps its own.
    after = {(m.queue, m.interface, m.name): m.paused for m in apply(actual, p.actions)}
    for m in actual:
        if (m.queue, m.interface, m.name) in after:
            assert after[(m.queue, m.interface, m.name)] == m.paused


@given(desired_st, actual_st)
def test_within_a_queue_every_add_precedes_every_ordinary_removal(
    desired: dict[str, dict[str, DesiredMember]], actual: list[ActualMember]
) -> None:
    p = plan(desired, actual, OWNED)
    added = {(a.queue, a.interface) for a in p.actions if isinstance(a, Add)}
    for queue in desired:
        kinds = [
            "free"
            if isinstance(a, Remove) and (a.queue, a.interface) in added
            else type(a).__name__
            for a in p.actions
            if a.queue == queue
        ]
        ordinary = [i for i, k in enumerate(kinds) if k == "Remove"]
        adds = [i for i, k in enumerate(kinds) if k == "Add"]
        assert not ordinary or not adds or max(adds) < min(ordinary)
