"""The phone book: reachability from ContactStatus and member device states, refused calls, and
the readiness reasons they give."""

from __future__ import annotations

from collections.abc import Mapping

from hotline.core.health import NotReady
from hotline.core.phones import PhoneBook, Refusal, endpoint_of, roster_phones
from hotline.core.roster import Responder

PHONES = {"2001": "r-ana", "2002": "r-ben"}


def book() -> PhoneBook:
    return PhoneBook(PHONES, ["crisis"])


def contact(endpoint: str, status: str) -> tuple[str, Mapping[str, str]]:
    return "ContactStatus", {"EndpointName": endpoint, "ContactStatus": status, "AOR": endpoint}


def member(
    name: str, interface: str, status: int | None = None, queue: str = "crisis"
) -> tuple[str, Mapping[str, str]]:
    fields = {"Queue": queue, "Interface": interface, "MemberName": "x"}
    if status is not None:
        fields["Status"] = str(status)
    return name, fields


def feed(phones: PhoneBook, *events: tuple[str, Mapping[str, str]]) -> list[Refusal | None]:
    return [phones.on_event(name, fields) for name, fields in events]


def test_contact_status_sets_reachability_and_unknown_until_then() -> None:
    phones = book()
    assert phones.phones() == {"r-ana": "unknown", "r-ben": "unknown"}
    feed(phones, contact("2001", "NonQualified"), contact("2001", "Reachable"))
    feed(phones, contact("2002", "Unreachable"))
    assert phones.phones() == {"r-ana": "reachable", "r-ben": "unreachable"}
    feed(phones, contact("2001", "Removed"), contact("2002", "Updated"))
    assert phones.phones() == {"r-ana": "unreachable", "r-ben": "unreachable"}


def test_member_device_state_speaks_for_a_phone_no_contact_event_was_seen_for() -> None:
    phones = book()
    phones.resync(
        [
            {"Event": "QueueMember", "Queue": "crisis", "Location": "PJSIP/2001", "Status": "5"},
            {"Event": "QueueMember", "Queue": "crisis", "Location": "PJSIP/2002", "Status": "1"},
            {"Event": "QueueMember", "Queue": "other", "Location": "PJSIP/2003", "Status": "1"},
        ]
    )
    assert phones.phones() == {"r-ana": "unreachable", "r-ben": "reachable"}
    assert phones.on_shift() == {"unreachable": 1, "refusing": 0, "reachable": 1, "unknown": 0}
    feed(phones, member("QueueMemberStatus", "PJSIP/2001", 1))
    assert phones.phones()["r-ana"] == "reachable"
    feed(phones, member("QueueMemberStatus", "PJSIP/2001", 0))  # unknown says nothing
    assert phones.phones()["r-ana"] == "reachable"


def test_no_reason_while_nobody_is_on_shift_or_a_phone_can_answer() -> None:
    phones = book()
    feed(phones, contact("2001", "Unreachable"))
    assert phones.readiness() == []  # nobody on shift
    feed(phones, member("QueueMemberAdded", "PJSIP/2001", 5))
    assert phones.readiness() == [NotReady.NO_PHONE_REACHABLE]
    feed(phones, member("QueueMemberAdded", "Local/1001@dev/n", 1))
    assert phones.readiness() == []
    feed(phones, member("QueueMemberRemoved", "Local/1001@dev/n"))
    assert phones.readiness() == [NotReady.NO_PHONE_REACHABLE]
    feed(phones, member("QueueMemberRemoved", "PJSIP/2001"))
    assert phones.readiness() == []
    feed(phones, member("QueueMemberAdded", "PJSIP/2002", 1, queue="elsewhere"))
    assert phones.readiness() == [], "a queue hotline does not run is nobody's shift"


def _offer(uid: str, interface: str = "PJSIP/2002") -> tuple[str, Mapping[str, str]]:
    return "AgentCalled", {"Queue": "crisis", "Interface": interface, "DestUniqueid": uid}


def test_a_phone_that_refuses_its_calls_media_is_refusing_until_it_answers_one() -> None:
    phones = book()
    feed(phones, member("QueueMemberAdded", "PJSIP/2002", 1))
    [_, refusal] = feed(phones, _offer("d.1"), ("Hangup", {"Uniqueid": "d.1", "Cause": "58"}))
    assert refusal is not None
    assert (refusal.endpoint, refusal.responder) == ("2002", "r-ben")
    assert phones.phones()["r-ben"] == "refusing"
    assert phones.readiness() == [NotReady.PHONES_REFUSE_CALLS]
    # A call that rang out (cause 19, no answer) or ended normally is no refusal.
    assert feed(phones, _offer("d.2"), ("Hangup", {"Uniqueid": "d.2", "Cause": "19"})) == [
        None,
        None,
    ]
    # A Hangup of any other channel says nothing of the phone.
    assert feed(phones, ("Hangup", {"Uniqueid": "caller.1", "Cause": "58"})) == [None]
    feed(phones, ("AgentConnect", {"Queue": "crisis", "Interface": "PJSIP/2002"}))
    assert phones.phones()["r-ben"] == "reachable"
    assert phones.readiness() == []


def test_a_refusing_phone_that_registers_anew_is_offered_calls_again() -> None:
    phones = book()
    feed(phones, _offer("d.1"), ("Hangup", {"Uniqueid": "d.1", "Cause": "58"}))
    assert phones.state("PJSIP/2002") == "refusing"
    feed(phones, contact("2002", "Created"))
    assert phones.state("PJSIP/2002") == "reachable"


def test_unreachable_wins_over_refusing_and_the_reason_says_so() -> None:
    phones = book()
    feed(phones, member("QueueMemberAdded", "PJSIP/2002", 1))
    feed(phones, _offer("d.1"), ("Hangup", {"Uniqueid": "d.1", "Cause": "58"}))
    feed(phones, contact("2002", "Unreachable"))
    assert phones.on_shift()["unreachable"] == 1
    assert phones.readiness() == [NotReady.NO_PHONE_REACHABLE]


def test_offers_whose_end_never_came_are_forgotten_past_a_bound() -> None:
    phones = book()
    feed(phones, *(_offer(f"lost.{n}") for n in range(5000)))
    assert feed(phones, ("Hangup", {"Uniqueid": "lost.0", "Cause": "58"})) == [None]
    assert feed(phones, ("Hangup", {"Uniqueid": "lost.4999", "Cause": "58"}))[0] is not None


def test_roster_phones_are_the_pjsip_interfaces_and_state_interfaces() -> None:
    responders = [
        Responder("r-ana", "Ana", "PJSIP/2001", "PJSIP/2001", {"crisis": 0}),
        Responder("r-ben", "Ben", "Local/2002@phones/n", "PJSIP/2002", {"crisis": 0}),
        Responder("r-cy", "Cy", "Local/1003@dev/n", "Local/1003@dev/n", {"crisis": 0}),
    ]
    assert roster_phones(responders) == {"2001": "r-ana", "2002": "r-ben"}
    assert [endpoint_of(i) for i in ("PJSIP/", "PJSIP/a/b", "SIP/1", "PJSIP/partner")] == [
        None,
        None,
        None,
        "partner",
    ]
