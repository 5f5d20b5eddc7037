"""Faults a real Asterisk cannot be made to produce, through the scripted AMI server: a
half-open link, garbage bytes, a failed login."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from hotline.adapters.ami import AmiLink
from hotline.core.ami import Event, Inbound, LinkDown, LinkUp, Result
from tests.fake_ami import EOL, FakeAmi
from tests.harness import ami_settings, wait_for


class Recorder:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def connect_attempt(self, result: str) -> None:
        self.counts[f"connect:{result}"] += 1

    def disconnected(self, reason: str) -> None:
        self.counts[f"disconnect:{reason}"] += 1

    def link_up(self, up: bool) -> None:
        self.counts[f"up:{up}"] += 1

    def action_done(self, action: str, result: Result, seconds: float) -> None:
        self.counts[f"{action}:{result.value}"] += 1

    def message_received(self) -> None:
        self.counts["received"] += 1

    def malformed_message(self) -> None:
        self.counts["malformed"] += 1

    def action_refused(self, reason: str) -> None:
        self.counts[f"refused:{reason}"] += 1

    def inbox_overflow(self) -> None:
        self.counts["overflow"] += 1

    def ping_answered(self, seconds: float) -> None:
        self.counts["ping_answered"] += 1

    def ami_version(self, version: str) -> None:
        self.counts[f"ami_version:{version}"] += 1


@pytest.fixture
async def link(
    fake_ami: FakeAmi,
) -> AsyncIterator[tuple[AmiLink, Recorder, asyncio.Queue[Inbound]]]:
    recorder = Recorder()
    inbox: asyncio.Queue[Inbound] = asyncio.Queue()
    ami = AmiLink(
        ami_settings(
            fake_ami.port,
            "hotline",
            ping_interval=0.2,
            ping_timeout=0.2,
            backoff_min=0.05,
            backoff_max=0.1,
        ),
        "s3cret",
        inbox,
        recorder,
    )
    task = asyncio.create_task(ami.run())
    yield ami, recorder, inbox
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def drain_until(
    inbox: asyncio.Queue[Inbound], kind: type, within: float = 5
) -> list[Inbound]:
    seen: list[Inbound] = []
    async with asyncio.timeout(within):
        while not seen or not isinstance(seen[-1], kind):
            seen.append(await inbox.get())
    return seen


async def test_a_half_open_link_is_dropped_by_the_ping_watchdog_and_reconnected(
    fake_ami: FakeAmi, link: tuple[AmiLink, Recorder, asyncio.Queue[Inbound]]
) -> None:
    ami, recorder, inbox = link
    await drain_until(inbox, LinkUp)
    fake_ami.mute = True
    down = await drain_until(inbox, LinkDown)
    assert down[-1] == LinkDown("ping_timeout")
    assert recorder.counts["Ping:timeout"] >= 2
    fake_ami.mute = False
    await drain_until(inbox, LinkUp)
    assert fake_ami.sessions >= 2
    assert ami.up


async def test_actions_in_flight_when_the_link_drops_return_disconnected_and_are_not_replayed(
    fake_ami: FakeAmi, link: tuple[AmiLink, Recorder, asyncio.Queue[Inbound]]
) -> None:
    ami, _recorder, inbox = link
    await drain_until(inbox, LinkUp)
    fake_ami.mute = True  # QueueAdd gets no reply
    pending = asyncio.create_task(
        ami.send({"Action": "QueueAdd", "Queue": "crisis", "Interface": "PJSIP/1001"})
    )
    await drain_until(inbox, LinkDown)
    reply = await pending
    assert reply.result in (Result.DISCONNECTED, Result.TIMEOUT)
    fake_ami.mute = False
    await drain_until(inbox, LinkUp)


async def test_garbage_bytes_are_counted_and_the_link_stays_up(
    fake_ami: FakeAmi, link: tuple[AmiLink, Recorder, asyncio.Queue[Inbound]]
) -> None:
    ami, recorder, inbox = link
    await drain_until(inbox, LinkUp)
    writer = fake_ami.writers[-1]
    writer.write(b"\xff\xfe\x00garbage without a header" + EOL + EOL)
    writer.write(b"NoColonHere" + EOL + b"Another line" + EOL + EOL)
    writer.write(b"Event: QueueMemberAdded" + EOL + b"MemberName: Zo\xc3\xab M\xc3\xbcller" + EOL)
    writer.write(b"Queue: crisis" + EOL + EOL)
    await writer.drain()
    seen = await drain_until(inbox, Event)
    event = seen[-1]
    assert isinstance(event, Event)
    assert event.fields["MemberName"] == "Zoë Müller"
    assert recorder.counts["malformed"] == 2
    assert ami.up
    assert (await ami.send({"Action": "Ping"})).result is Result.SUCCESS


async def test_a_wrong_secret_is_reported_and_retried_without_going_live(fake_ami: FakeAmi) -> None:
    recorder = Recorder()
    ami = AmiLink(
        ami_settings(fake_ami.port, "hotline", backoff_min=0.05, backoff_max=0.1),
        "wrong",
        asyncio.Queue(),
        recorder,
    )
    task = asyncio.create_task(ami.run())
    try:

        async def failures() -> int:
            return recorder.counts["connect:auth_failed"]

        await wait_for(failures, lambda n: n >= 2, 5, "two failed logins")
        assert not ami.up
        assert "Authentication failed" in ami.last_error
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
