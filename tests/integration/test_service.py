"""`hotline run` as systemd runs it, with a notification socket of the test's own: READY once AMI
is live and the first round ran (or the first attempt failed), WATCHDOG pings, SIGHUP reloads on
the same AMI session, an invalid reload refused, STOPPING on the way out."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from hotline.adapters.systemd import Notifier
from tests.fake_ami import FakeAmi
from tests.harness import AmiTestClient, ManualClock, Pbx, free_port, local, wait_for

ROSTER = """timezone: UTC
queues: {{crisis: {{min_responders: 0}}}}
responders:
  r-1: {{name: Ana, interface: "{one}", queues: {{crisis: 0}}}}
  r-2: {{name: Ben, interface: "{two}", queues: {{crisis: 0}}}}
shifts:
  - {{name: all-day, days: [daily], start: "00:00", end: "00:00", responders: [{on}]}}
"""


@dataclass
class NotifySocket:
    """A datagram socket standing in for systemd's: every message, with when it arrived."""

    path: Path
    sock: socket.socket
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    async def receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((loop.time(), fields))

    def count(self, key: str) -> int:
        return sum(1 for _, fields in self.messages if key in fields)

    def keys(self) -> list[str]:
        """The message kinds in order, WATCHDOG pings left out."""
        return [k for _, fields in self.messages for k in fields if k not in ("WATCHDOG",)]


@pytest.fixture
async def notify_socket(tmp_path: Path) -> AsyncIterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    listener = NotifySocket(tmp_path / "notify", sock)
    task = asyncio.create_task(listener.receive())
    yield listener
    task.cancel()
    sock.close()


def test_notifier_sends_one_datagram_per_message_and_reads_the_watchdog_interval(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "6000000"})
        notifier.ready("AMI live\nsecond line")
        notifier.watchdog()
        assert sock.recv(4096) == b"READY=1\nSTATUS=AMI live second line"
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.watchdog_s == 6.0
        notifier.close()
    elsewhere = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "6000000", "WATCHDOG_PID": "1"})
    assert elsewhere.watchdog_s is None  # the interval is meant for another process
    elsewhere.close()
    assert not Notifier({}).enabled


async def test_the_service_protocol_and_reload_against_a_real_asterisk(
    pbx: Pbx, ami: AmiTestClient, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    (tmp_path / "ami-secret").write_text(pbx.secret + "\n")
    (tmp_path / "ami-secret").chmod(0o600)
    port = free_port()
    head = (
        f"ami: {{port: {pbx.ami_port}, username: hotline, secret_file: ami-secret}}\n"
        f'http: {{listen: "127.0.0.1:{port}"}}\n'
    )
    config = tmp_path / "hotline.yaml"

    def roster(on: str) -> str:
        return head + ROSTER.format(one=local(1001), two=local(1002), on=on)

    config.write_text(roster("r-1"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline", "run", "-c", str(config),
        stderr=asyncio.subprocess.PIPE,
        env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000",
             "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        await wait_for(
            lambda: _value(notify_socket.count("READY")), lambda n: n == 1, 15, "READY=1"
        )
        # READY came after the first round: the roster's member is already there.
        assert (await ami.names()).get("crisis") == ["r-1"]
        status = next(f["STATUS"] for _, f in notify_socket.messages if "READY" in f)
        assert "AMI live" in status
        await wait_for(
            lambda: _value(notify_socket.count("WATCHDOG")), lambda n: n >= 3, 5, "pings"
        )

        config.write_text(roster("r-1, r-2"))
        proc.send_signal(signal.SIGHUP)
        reloaded = asyncio.get_running_loop().time()
        await wait_for(
            ami.names, lambda m: m.get("crisis") == ["r-1", "r-2"], 2, "the reloaded roster"
        )
        assert asyncio.get_running_loop().time() - reloaded < 2
        metrics = await _metrics(port)
        # One login for the whole run: the reload kept the AMI session.
        assert 'hotline_ami_connect_attempts_total{result="success"} 1.0' in metrics
        assert 'hotline_config_reloads_total{result="ok"} 1.0' in metrics

        config.write_text(roster("r-1") + "  - {name: broken, days: [someday]}\n")
        proc.send_signal(signal.SIGHUP)
        await wait_for(
            lambda: _metrics(port),
            lambda text: 'hotline_config_reloads_total{result="refused"} 1.0' in text,
            5,
            "the broken configuration refused",
        )
        assert (await ami.names()).get("crisis") == ["r-1", "r-2"]

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert notify_socket.keys()[:2] == ["READY", "STATUS"]
    assert notify_socket.keys().count("RELOADING") == 2
    assert notify_socket.keys()[-2:] == ["STOPPING", "STATUS"]
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    refused = [line["problem"] for line in lines if line["event"] == "config_reload_refused"]
    assert refused
    assert all(p.startswith(f"{config}: shifts[1]") for p in refused)
    assert any(line["event"] == "config_reloaded" for line in lines)


async def test_the_watchdog_is_withheld_while_the_reconcile_round_is_stuck(
    fake_ami: FakeAmi, notify_socket: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hotline import daemon
    from hotline.config import parse_config

    fake = fake_ami
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    (tmp_path / "ami-secret").write_text(fake.secret)
    (tmp_path / "ami-secret").chmod(0o600)
    config = parse_config(
        f"ami: {{port: {fake.port}, username: hotline, secret_file: ami-secret}}\n"
        f'http: {{listen: "127.0.0.1:{free_port()}"}}\n'
        "timezone: UTC\nqueues: {crisis: {min_responders: 0}}\nresponders: {}\n",
        tmp_path / "hotline.yaml",
    )
    stop = asyncio.Event()
    started: asyncio.Future[daemon.Daemon] = asyncio.get_running_loop().create_future()
    clock = ManualClock(datetime(2026, 12, 1, tzinfo=UTC))
    task = asyncio.create_task(
        daemon.run(config, daemon.read_secrets(config), clock, stop, started=started)
    )
    try:
        hotline = await asyncio.wait_for(started, 10)
        await wait_for(lambda: _value(notify_socket.count("READY")), bool, 10, "READY=1")
        before = notify_socket.count("WATCHDOG")
        await wait_for(lambda: _value(notify_socket.count("WATCHDOG")), lambda n: n > before, 2, "")
        # A round that started long ago and never ended: the fault a test cannot get from a
        # real server, whose actions all time out far sooner.
        loop = asyncio.get_running_loop()
        hotline.keeper.round_started = loop.time() - 3600
        await asyncio.sleep(0.15)  # let a ping already on its way arrive
        stuck = notify_socket.count("WATCHDOG")
        await asyncio.sleep(1.0)  # five intervals: the pings must stay away
        assert notify_socket.count("WATCHDOG") == stuck
        hotline.keeper.round_started = None
        await wait_for(lambda: _value(notify_socket.count("WATCHDOG")), lambda n: n > stuck, 2, "")
    finally:
        stop.set()
        await task


async def _value(n: int) -> int:
    return n


async def _metrics(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()
