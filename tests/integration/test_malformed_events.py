"""Malformed and unexpected AMI events reach the whole daemon through the scripted AMI server:
each is counted and logged, none crashes it, and no caller data reaches the log."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from hotline.daemon import Daemon
from tests.conftest import StartDaemon
from tests.fake_ami import EOL, FakeAmi, message
from tests.harness import ManualClock, Pbx, free_port, wait_for

ROSTER = """
timezone: UTC
queues: {crisis: {min_responders: 0}}
responders: {}
"""


async def test_malformed_and_unknown_events_are_counted_and_logged_without_a_crash(
    fake_ami: FakeAmi,
    pbx: Pbx,
    start_daemon: StartDaemon,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "caller-keys"
    keys.write_text(f"1:{secrets.token_hex(32)}\n")
    keys.chmod(0o600)
    # Recording on, with Postgres nowhere: records spool, events are still judged.
    recording = (
        f'database: {{dsn: "postgresql://hotline@127.0.0.1:{free_port()}/hotline",'
        f" spool_dir: {tmp_path / 'spool'}}}\n"
        f"privacy: {{keys_file: {keys}}}\n"
    )
    fake_ami.secret = pbx.secret  # start_daemon logs in with the development PBX's secret
    hotline = await start_daemon(
        ROSTER, ManualClock(datetime(2026, 12, 1, tzinfo=UTC)), ami_port=fake_ami.port,
        extra=recording,
    )  # fmt: skip

    async def live() -> bool:
        return hotline.link.up

    await wait_for(live, bool, 10, "the daemon logged in to the scripted AMI")
    writer = fake_ami.writers[-1]
    writer.write(
        # A caller event without its Uniqueid, carrying a number that must not be logged.
        message(("Event", "QueueCallerJoin"), ("Privilege", "agent,all"), ("Queue", "crisis"),
                ("CallerIDNum", "+15550999999"), ("Position", "1"))
        # An event nobody knows.
        + message(("Event", "SomethingNew"), ("Privilege", "call,all"), ("Foo", "bar"))
        # An AgentComplete published after both channels were gone: it names no call.
        + message(("Event", "AgentComplete"), ("Privilege", "agent,all"), ("Queue", "crisis"),
                  ("MemberName", "r-ana"), ("Interface", "PJSIP/2001"), ("HoldTime", "3"),
                  ("TalkTime", "40"), ("Reason", "agent"))
        # Garbage: no Event or Response header, then bytes that are not UTF-8.
        + b"\x00\x01\x02 not a message" + EOL + EOL
        + b"Event: AgentConnect" + EOL + b"Queue: crisis" + EOL + b"Uniqueid: 17.1" + EOL
        + b"MemberName: r-\xff\xfe" + EOL + b"HoldTime: soon" + EOL + EOL
    )  # fmt: skip
    await writer.drain()

    metrics = await wait_for(
        lambda: _metrics(hotline),
        lambda text: 'hotline_events_dropped_total{reason="invalid"} 1.0' in text,
        5,
        "the invalid event counted",
    )
    assert "hotline_ami_malformed_messages_total 1.0" in metrics
    # Counted apart, not as a drop: no record needs it.
    assert 'hotline_events_unattributed_total{event="AgentComplete"} 1.0' in metrics
    assert 'hotline_events_received_total{event="other"} 1.0' in metrics
    assert 'hotline_events_received_total{event="AgentConnect"} 1.0' in metrics
    assert hotline.link.up
    logs = "".join(capfd.readouterr())
    assert "ami_event_invalid" in logs
    assert "ami_malformed_message" in logs
    assert "5550999999" not in logs


async def _metrics(hotline: Daemon) -> str:
    url = f"http://127.0.0.1:{hotline.config.http.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.text()
