"""AMI framing in the adapter's protocol, fed bytes directly: split reads, bad bytes, banner."""

from __future__ import annotations

from typing import Any

from hotline.adapters.ami import _Protocol


class Sink:
    """Stands in for the manager (dispatch) and the link (event, observer, malformed)."""

    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []
        self.malformed_count = 0
        self.versions: list[str] = []
        self.observer = self

    def dispatch(self, message: Any) -> None:
        self.events.append(dict(message.items()))

    def event(self, _manager: Any, fields: dict[str, str]) -> None:
        self.events.append(fields)

    def message_received(self) -> None:
        pass

    def ami_version(self, version: str) -> None:
        self.versions.append(version)

    def malformed(self, _text: str) -> None:
        self.malformed_count += 1


def protocol() -> tuple[_Protocol, Sink]:
    sink = Sink()
    p = _Protocol()
    p.link = sink  # type: ignore[assignment]
    p.connection_made(None)
    p.factory = sink
    return p, sink


async def test_a_utf8_character_split_across_two_reads_arrives_whole() -> None:
    p, sink = protocol()
    p.data_received(
        b"Asterisk Call Manager/11.0.0\r\nEvent: QueueMemberAdded\r\nMemberName: Zo\xc3"
    )
    assert sink.events == []
    p.data_received(b"\xab M\xc3\xbcller\r\n\r\n")
    assert [e["MemberName"] for e in sink.events] == ["Zoë Müller"]
    assert sink.versions == ["11.0.0"]  # the banner's AMI version, reported once


async def test_invalid_utf8_is_replaced_not_dropped_and_the_message_still_counts() -> None:
    p, sink = protocol()
    p.data_received(b"Event: QueueMemberAdded\r\nMemberName: caf\xff\r\n\r\n")
    assert [e["MemberName"] for e in sink.events] == ["caf\ufffd"]
    assert sink.malformed_count == 0


async def test_a_block_without_event_or_response_is_counted_as_malformed() -> None:
    p, sink = protocol()
    p.data_received(b"\x00\x01garbage\r\n\r\nFoo: bar\r\n\r\nEvent: Reload\r\nModule: All\r\n\r\n")
    assert sink.malformed_count == 2
    assert [e["Event"] for e in sink.events] == ["Reload"]


async def test_list_items_and_shutdown_go_through_panoramisk_and_events_do_not() -> None:
    p, sink = protocol()
    p.responses = {}
    p.data_received(
        b"Event: QueueMember\r\nActionID: a/1\r\nName: r-1\r\n\r\n"
        b"Event: QueueMemberAdded\r\nMemberName: r-2\r\nChanVariable: A=1\r\nChanVariable: B=2\r\n"
        b"\r\n"
    )
    # No action waits for a/1 here, so panoramisk dispatches it; the plain event comes parsed,
    # its repeated header joined as panoramisk's Message would have it.
    assert sink.events[0]["Name"] == "r-1"
    assert sink.events[1] == {
        "Event": "QueueMemberAdded", "MemberName": "r-2", "ChanVariable": "A=1\nB=2",
    }  # fmt: skip
