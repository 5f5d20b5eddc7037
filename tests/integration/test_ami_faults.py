"""Faults a real Asterisk cannot be made to produce, through a scripted AMI server on loopback:
a half-open link, garbage bytes, a UTF-8 character split across reads, a failed login."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from hotline.ami import AmiLink, Event, Inbound, LinkDown, LinkSettings, LinkUp, Result
from tests.harness import wait_for

EOL = b"\r\n"


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

    def inbox_overflow(self) -> None:
        self.counts["overflow"] += 1


class FakeAmi:
    """Speaks just enough AMI: a banner, Login, Ping, FullyBooted; `mute` stops all replies
    while keeping the socket open (a half-open link as the client sees it)."""

    def __init__(self, secret: str = "s3cret") -> None:
        self.secret = secret
        self.mute = False
        self.sessions = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0" + EOL)
        try:
            while True:
                block = await reader.readuntil(EOL + EOL)
                if self.mute:
                    continue
                headers = dict(line.split(": ", 1) for line in block.decode().strip().split("\r\n"))
                action = headers.get("Action", "")
                action_id = headers.get("ActionID", "")
                if action == "Login":
                    ok = headers.get("Secret") == self.secret
                    status = b"Success" if ok else b"Error"
                    text = b"Authentication accepted" if ok else b"Authentication failed"
                    writer.write(
                        b"Response: "
                        + status
                        + EOL
                        + b"ActionID: "
                        + action_id.encode()
                        + EOL
                        + b"Message: "
                        + text
                        + EOL
                        + EOL
                    )
                    if ok:
                        writer.write(
                            b"Event: FullyBooted"
                            + EOL
                            + b"Privilege: system,all"
                            + EOL
                            + b"Uptime: 42"
                            + EOL
                            + b"LastReload: 42"
                            + EOL
                            + b"Status: Fully Booted"
                            + EOL
                            + EOL
                        )
                elif action == "Ping":
                    writer.write(
                        b"Response: Success"
                        + EOL
                        + b"ActionID: "
                        + action_id.encode()
                        + EOL
                        + b"Ping: Pong"
                        + EOL
                        + EOL
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmi]:
    fake = FakeAmi()
    fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    yield fake
    fake.server.close()
    for writer in fake.writers:
        writer.close()


@pytest.fixture
async def link(
    fake_ami: FakeAmi,
) -> AsyncIterator[tuple[AmiLink, Recorder, asyncio.Queue[Inbound]]]:
    recorder = Recorder()
    inbox: asyncio.Queue[Inbound] = asyncio.Queue()
    ami = AmiLink(
        LinkSettings(
            "127.0.0.1",
            fake_ami.port,
            "hotline",
            "s3cret",
            ping_interval_s=0.2,
            ping_timeout_s=0.2,
            backoff_min_s=0.05,
            backoff_max_s=0.1,
        ),
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
        LinkSettings(
            "127.0.0.1", fake_ami.port, "hotline", "wrong", backoff_min_s=0.05, backoff_max_s=0.1
        ),
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
