"""Test harness: the development PBX as a test instance, a clock the test drives, an AMI test
client, and waiting on conditions with deadlines."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import aiohttp

from hotline.adapters.ami import AmiLink
from hotline.config import AmiSettings, parse_config
from hotline.core.ami import Event, Inbound, LinkUp, Reply, Result

REPO = Path(__file__).resolve().parent.parent
PBX_SCRIPT = REPO / "deploy" / "pbx.sh"
T = TypeVar("T")


def local(extension: int) -> str:
    """The queue interface of a stand-in responder on the development PBX (1xxx answer,
    8xxx never do; see asterisk-config/dev/extensions.conf)."""
    return f"Local/{extension}@hotline-dev-responders/n"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ami_settings(port: int, username: str, **timings: float) -> AmiSettings:
    """The AMI settings a configuration file with only these values gives, for a link to `port`
    on loopback: `timings` by their key in the file (ping_interval=0.2), defaults for the rest.
    The secret is handed to AmiLink itself, so the file names a variable that is never read."""
    ami = {"host": "127.0.0.1", "port": port, "username": username, "secret_env": "UNUSED"}
    document = {"timezone": "UTC", "ami": {**ami, **timings}, "queues": {"q": {}}, "responders": {}}
    return parse_config(json.dumps(document), Path("ami-settings.yaml")).ami  # JSON is YAML


@dataclass
class Pbx:
    """A development-PBX instance of its own, on free loopback ports."""

    name: str
    ami_port: int
    sip_port: int
    state_dir: Path
    ami_tls_port: int = field(default_factory=free_port)
    # SIP over TLS for the phones, on an address of its own (deploy/pbx.sh, docs/phones.md).
    sip_tls_port: int = field(default_factory=free_port)
    phone_address: str = "127.0.1.1"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOTLINE_PBX_NAME": self.name,
            "HOTLINE_PBX_STATE": str(self.state_dir),
            "HOTLINE_AMI_PORT": str(self.ami_port),
            "HOTLINE_AMI_TLS_PORT": str(self.ami_tls_port),
            "HOTLINE_SIP_PORT": str(self.sip_port),
            "HOTLINE_SIP_TLS_PORT": str(self.sip_tls_port),
            "HOTLINE_SIP_PHONE_ADDR": self.phone_address,
        }

    def run(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [str(PBX_SCRIPT), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"deploy/pbx.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc.stdout

    def start(self) -> None:
        self.run("start")

    def stop(self) -> None:
        self.run("stop")

    def cli(self, command: str) -> str:
        return self.run("cli", command, timeout=30)

    def wipe_astdb(self) -> None:
        """Forget the persistent queue members, as a PBX rebuilt from scratch would."""
        root = Path(os.environ.get("HOTLINE_PBX_ROOT", "/var/cache/hotline/pbx-root"))
        (root / "srv" / "hotline" / self.name / "lib" / "astdb.sqlite3").unlink(missing_ok=True)

    @property
    def secret(self) -> str:
        return (self.state_dir / "ami-secret").read_text().strip()

    @property
    def ca_file(self) -> Path:
        """The CA that signed the instance's AMI TLS certificate (deploy/pbx.sh)."""
        return self.state_dir / "ami-ca.pem"

    @property
    def test_secret(self) -> str:
        return (self.state_dir / "ami-test-secret").read_text().strip()


class ManualClock:
    """A clock that moves only when the test says so; sleepers wake when it passes their time."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        self._now = at
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep_until(self, at: datetime) -> None:
        while self._now < at:
            await self._moved.wait()


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    within: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll `probe` until `accept` holds; fail with the last value after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}; last: {value!r}")
        await asyncio.sleep(interval)


class SilentObserver:
    def connect_attempt(self, result: str) -> None:
        pass

    def disconnected(self, reason: str) -> None:
        pass

    def link_up(self, up: bool) -> None:
        pass

    def action_done(self, action: str, result: Result, seconds: float) -> None:
        pass

    def message_received(self) -> None:
        pass

    def malformed_message(self) -> None:
        pass

    def action_refused(self, reason: str) -> None:
        pass

    def inbox_overflow(self) -> None:
        pass

    def ping_answered(self, seconds: float) -> None:
        pass

    def ami_version(self, version: str) -> None:
        pass


@dataclass(frozen=True)
class Member:
    queue: str
    interface: str
    name: str
    penalty: int
    paused: bool
    paused_reason: str
    in_call: bool
    dynamic: bool


class AmiTestClient:
    """The test harness's own AMI session (account hotline-test): reads what Asterisk reports
    and meddles by hand."""

    def __init__(self, pbx: Pbx) -> None:
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self.link = AmiLink(
            ami_settings(pbx.ami_port, "hotline-test"),
            pbx.test_secret,
            self.inbox,
            SilentObserver(),
        )
        self.events: list[Event] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> AmiTestClient:
        self._tasks.append(asyncio.create_task(self.link.run()))
        self._tasks.append(asyncio.create_task(self._collect()))
        await wait_for(self._up, bool, 30, "the test AMI session")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _up(self) -> bool:
        return self.link.up

    async def _collect(self) -> None:
        while True:
            item = await self.inbox.get()
            if isinstance(item, Event):
                self.events.append(item)
            elif isinstance(item, LinkUp):
                self.events.clear()

    async def action(self, fields: Mapping[str, str]) -> Reply:
        reply = await self.link.send(fields)
        assert reply.ok, f"{fields['Action']} failed: {reply}"
        return reply

    async def members(self, queue: str | None = None) -> list[Member]:
        request = {"Action": "QueueStatus"} | ({"Queue": queue} if queue else {})
        reply = await self.link.send_list(request)
        assert reply.ok, f"QueueStatus failed: {reply}"
        return sorted(
            (
                Member(
                    queue=i["Queue"],
                    interface=i["Location"],
                    name=i["Name"],
                    penalty=int(i["Penalty"]),
                    paused=i["Paused"] == "1",
                    paused_reason=i.get("PausedReason", ""),
                    in_call=i["InCall"] == "1",
                    dynamic=i["Membership"] == "dynamic",
                )
                for i in reply.items
                if i.get("Event") == "QueueMember"
            ),
            key=lambda m: (m.queue, m.name, m.interface),
        )

    async def names(self) -> dict[str, list[str]]:
        """Member names per queue, as Asterisk reports them."""
        result: dict[str, list[str]] = {}
        for m in await self.members():
            result.setdefault(m.queue, []).append(m.name)
        return result

    async def call(self, dialled: str, caller: str, hold_s: int, talk_s: int = 30) -> Reply:
        """Place a call into the crisis line's inbound context, as a caller who stays on the
        line `hold_s` seconds; an answering stand-in responder talks `talk_s` seconds."""
        return await self.action(
            {
                "Action": "Originate",
                "Channel": f"Local/{dialled}@hotline-inbound/n",
                "Application": "Wait",
                "Data": str(hold_s),
                "CallerID": f'"Test Caller" <{caller}>',
                "Variable": f"__HOTLINE_TEST_TALK={talk_s}",
                "Async": "true",
            }
        )


async def wait_ready(port: int, within: float) -> None:
    """Until the daemon listening on `port` answers /readyz with 200."""
    async with aiohttp.ClientSession() as http:

        async def ready() -> int:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    return response.status
            except aiohttp.ClientConnectionError:
                return 0

        await wait_for(ready, lambda status: status == 200, within, "/readyz to say ready")
