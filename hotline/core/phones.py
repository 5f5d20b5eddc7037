"""Responders' phones, pure: whether each can be reached (PJSIP's qualify, and the device state
app_queue reports for members), whether it refuses the calls it is offered, and so whether any
on-shift phone can take a call (docs/phones.md, "Reachability").

Two facts a queue alone does not show. A phone that does not answer qualify is UNAVAILABLE, and
the queue skips it: callers are refused or wait for nobody. A phone that registers over TLS but
offers no SRTP answers every INVITE with 488 (Asterisk: hangup cause 58), immediately, so the queue
rings it again every retry while the caller waits; only its refusals tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from hotline.core.ami import EventName, field_count, field_text
from hotline.core.health import NotReady
from hotline.core.roster import Responder

# A phone's state for metrics and readiness, first match wins: it cannot be reached; it can be
# reached but refused the last call it was offered; it can take a call; nothing known yet.
PhoneState = Literal["unreachable", "refusing", "reachable", "unknown"]
PHONE_STATES: Final[tuple[PhoneState, ...]] = ("unreachable", "refusing", "reachable", "unknown")

# ContactStatus values (res_pjsip): Unreachable and Removed leave no way to the phone; Created,
# Reachable and NonQualified (registered, qualify off or not yet run) leave one. Updated and
# Unknown (qualify not yet answered) say nothing new.
_CONTACT_REACHABLE: Final = {
    "Reachable": True, "NonQualified": True, "Created": True,
    "Unreachable": False, "Removed": False,
}  # fmt: skip
# app_queue's member Status (Asterisk's device states): INVALID and UNAVAILABLE cannot be rung;
# UNKNOWN says nothing; the others (not in use, in use, busy, ringing, on hold) can be.
_DEVICE_UNKNOWN = 0
_DEVICE_UNREACHABLE: Final = frozenset({4, 5})
# Hangup cause of a call a phone refused for its media: 58, "bearer capability not available",
# which chan_pjsip gives a 488 Not Acceptable Here (no SRTP, no common codec).
REFUSED_MEDIA_CAUSE: Final = 58
# Call attempts whose end is awaited; an attempt whose Hangup was lost is forgotten past this many.
_MAX_RINGING = 4096
_PJSIP = "PJSIP/"


def endpoint_of(interface: str) -> str | None:
    """The PJSIP endpoint an interface dials ("PJSIP/1001" -> "1001"), or None for any other."""
    if interface.startswith(_PJSIP):
        endpoint = interface[len(_PJSIP) :]
        return endpoint if endpoint and "/" not in endpoint else None
    return None


def roster_phones(responders: Iterable[Responder]) -> dict[str, str]:
    """PJSIP endpoint -> responder id, for each responder whose phone is one (the interface, or
    the device whose state the queue watches, is PJSIP/<endpoint>)."""
    phones: dict[str, str] = {}
    for responder in responders:
        for interface in (responder.interface, responder.state_interface):
            if (endpoint := endpoint_of(interface)) is not None:
                phones[endpoint] = responder.id
    return phones


@dataclass(frozen=True, slots=True)
class Refusal:
    """A phone refused a call it was offered, for its media."""

    endpoint: str
    responder: str


class PhoneBook:
    """Folds ContactStatus, member and call-attempt events into each phone's state.

    `phones` maps each PJSIP endpoint in the roster to its responder; `queues` are the queues
    whose members are on shift. A member is known by its interface (PJSIP/<endpoint>); a member on
    another technology (a Local channel) counts as a phone that can be reached unless Asterisk
    reports its device unavailable.
    """

    # The events `on_event` reads.
    EVENTS: frozenset[EventName] = frozenset(
        {"ContactStatus", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberStatus",
         "AgentCalled", "AgentConnect", "Hangup"}
    )  # fmt: skip

    def __init__(self, phones: Mapping[str, str], queues: Iterable[str]) -> None:
        self._phones = dict(phones)
        self._queues = frozenset(queues)
        self._reachable: dict[str, bool] = {}  # interface -> the latest word on it
        self._refusing: set[str] = set()  # interfaces whose last offered call they refused
        self._members: dict[str, set[str]] = {}  # interface -> the queues it is a member of
        self._ringing: dict[str, str] = {}  # a call attempt's uniqueid -> the interface rung

    def replace_phones(self, phones: Mapping[str, str]) -> None:
        """A reloaded roster's phones; what is known of each phone is kept."""
        self._phones = dict(phones)

    def on_event(self, name: str, fields: Mapping[str, str]) -> Refusal | None:
        """Apply one event; return the refusal it shows, if any."""
        if name == "ContactStatus":
            endpoint = field_text(fields, "EndpointName")
            reachable = _CONTACT_REACHABLE.get(field_text(fields, "ContactStatus") or "")
            if endpoint is not None and reachable is not None:
                self._reachable[_PJSIP + endpoint] = reachable
                if field_text(fields, "ContactStatus") == "Created":
                    # A phone registered anew, perhaps set up again: offer it calls again.
                    self._refusing.discard(_PJSIP + endpoint)
            return None
        if name == "Hangup":
            return self._hangup(fields)
        interface = field_text(fields, "Interface")
        if interface is None:
            return None
        if name == "AgentCalled":
            if (uid := field_text(fields, "DestUniqueid")) is not None:
                if len(self._ringing) >= _MAX_RINGING:
                    del self._ringing[next(iter(self._ringing))]
                self._ringing[uid] = interface
        elif name == "AgentConnect":
            self._refusing.discard(interface)
        elif field_text(fields, "Queue") in self._queues:
            self._member(name, interface, fields)
        return None

    def resync(self, items: Iterable[Mapping[str, str]]) -> None:
        """Rebuild the members and their device states from a QueueStatus reply, whole."""
        self._members = {}
        for item in items:
            interface = field_text(item, "Location")
            queue = field_text(item, "Queue")
            if item.get("Event") == "QueueMember" and interface and queue in self._queues:
                self._members.setdefault(interface, set()).add(queue)
                self._device(interface, field_count(item, "Status"))

    def state(self, interface: str) -> PhoneState:
        reachable = self._reachable.get(interface)
        if reachable is False:
            return "unreachable"
        if interface in self._refusing:
            return "refusing"
        return "unknown" if reachable is None else "reachable"

    def phones(self) -> dict[str, PhoneState]:
        """Each roster responder's phone state, by responder id."""
        return {
            responder: self.state(_PJSIP + endpoint) for endpoint, responder in self._phones.items()
        }

    def on_shift(self) -> dict[PhoneState, int]:
        """How many on-shift members' phones are in each state."""
        counts = dict.fromkeys(PHONE_STATES, 0)
        for interface in self._members:
            counts[self.state(interface)] += 1
        return counts

    def readiness(self) -> list[NotReady]:
        """A reason when responders are on shift and not one of their phones can take a call:
        none can be reached, or every one that can refuses the calls it is offered."""
        counts = self.on_shift()
        if counts["reachable"] or counts["unknown"] or not self._members:
            return []
        if counts["refusing"]:
            return [NotReady.PHONES_REFUSE_CALLS]
        return [NotReady.NO_PHONE_REACHABLE]

    # -- helpers -------------------------------------------------------------------------------

    def _member(self, name: str, interface: str, fields: Mapping[str, str]) -> None:
        queue = field_text(fields, "Queue") or ""
        if name == "QueueMemberRemoved":
            queues = self._members.get(interface, set())
            queues.discard(queue)
            if not queues:
                self._members.pop(interface, None)
            return
        if name == "QueueMemberAdded":
            self._members.setdefault(interface, set()).add(queue)
        self._device(interface, field_count(fields, "Status"))

    def _device(self, interface: str, status: int | None) -> None:
        if status is not None and status != _DEVICE_UNKNOWN:
            self._reachable[interface] = status not in _DEVICE_UNREACHABLE

    def _hangup(self, fields: Mapping[str, str]) -> Refusal | None:
        interface = self._ringing.pop(field_text(fields, "Uniqueid") or "", None)
        if interface is None:
            return None
        if field_count(fields, "Cause") != REFUSED_MEDIA_CAUSE:
            return None
        self._refusing.add(interface)
        endpoint = endpoint_of(interface)
        if endpoint is None:
            return None
        return Refusal(endpoint, self._phones.get(endpoint, endpoint))
