"""The AMI adapter's guards, without a PBX: an action whose header would carry a line break (or
NUL, or text UTF-8 cannot encode) is refused before anything is sent, whatever the
value's source, and counted; a malformed block is logged without any of its text."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from hotline.adapters.ami import AmiLink
from hotline.adapters.metrics import Metrics
from hotline.core.ami import Inbound, Result
from tests.harness import ami_settings

INJECTED = "Local/1001@hotline-dev-responders/n\r\nAction: Logoff"


def link() -> tuple[AmiLink, CollectorRegistry]:
    registry = CollectorRegistry()
    inbox: asyncio.Queue[Inbound] = asyncio.Queue()
    metrics = Metrics(registry, ["crisis"])
    return AmiLink(ami_settings(5038, "hotline"), "s3cret", inbox, metrics.link), registry


def refused(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("hotline_ami_actions_refused_total", {"reason": reason})


@pytest.mark.parametrize(
    ("fields", "header", "reason"),
    [
        ({"Interface": INJECTED}, "Interface", "crlf"),
        ({"Interface": "Local/1001\n"}, "Interface", "crlf"),
        ({"Interface": "Local/1001\rx"}, "Interface", "crlf"),
        ({"MemberName": "r-ana\x00"}, "MemberName", "crlf"),
        ({"MemberName": "Zo\ud800"}, "MemberName", "unencodable"),
        ({"Queue\r\nAction: Logoff\r\nX": "crisis"}, "[invalid name]", "crlf"),
    ],
)
async def test_a_header_that_would_break_the_framing_is_refused_counted_and_not_quoted(
    fields: dict[str, str], header: str, reason: str
) -> None:
    ami, registry = link()
    action = {"Action": "QueueAdd", "Queue": "crisis", **fields}
    with capture_logs() as logs:
        reply = await ami.send(action)
    assert reply.result is Result.ERROR
    assert reply.message.startswith(f"refused, not sent: the {header} header holds ")
    assert refused(registry, reason) == 1.0
    assert logs == [
        {
            "event": "ami_action_refused",
            "log_level": "error",
            "action": "QueueAdd",
            "header": header,
            "reason": reason,
        }
    ]
    assert "Logoff" not in reply.message + str(logs)
    assert "Zo" not in reply.message + str(logs)


async def test_a_clean_action_is_not_refused() -> None:
    ami, registry = link()
    for name in ("r-ana", "Zoë Müller"):  # UTF-8 is what panoramisk writes
        action = {"Action": "QueueAdd", "Queue": "crisis", "Interface": "PJSIP/1001"}
        reply = await ami.send(action | {"MemberName": name})
        assert reply.result is Result.DISCONNECTED  # not connected: nothing refused
    assert refused(registry, "crlf") == 0.0
    assert refused(registry, "unencodable") == 0.0


async def test_the_link_repr_names_the_endpoint_never_the_secret() -> None:
    ami, _ = link()
    assert repr(ami) == "<AmiLink hotline@127.0.0.1:5038 tcp disconnected>"


async def test_a_malformed_block_is_logged_by_its_header_names_and_size_only() -> None:
    ami, registry = link()
    block = (
        "+1 555 0199 999\r\nCallerIDNum: +15550199999\r\nQueue crisis 5550199\r\nAnaRuiz\r\n"
        "Foo: bar"
    )
    with capture_logs() as logs:
        ami.malformed(block)
    assert logs == [
        {
            "event": "ami_malformed_message",
            "log_level": "warning",
            "header_names": ["CallerIDNum", "Foo"],
            "lines": 5,
            "size": len(block),
        }
    ]
    assert registry.get_sample_value("hotline_ami_malformed_messages_total") == 1.0
