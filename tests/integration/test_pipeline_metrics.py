"""The metrics of the AMI link's health and of the event pipeline: what Asterisk tells about itself
(its AMI version, when it last reloaded) and the watchdog Ping's round trip, against the real
PBX; what woke reconcile rounds; and, through the scripted AMI server, an event consumer that
raises: counted, logged without values, and the other consumers and later events unharmed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from hotline.core.queuestate import QueueBoard
from hotline.daemon import Daemon
from tests.conftest import StartDaemon
from tests.fake_ami import FakeAmi, message
from tests.harness import AmiTestClient, ManualClock, Pbx, local, wait_for

NY = ZoneInfo("America/New_York")
ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 1}}
responders:
  r-1: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-1]}}
"""
DAY = datetime(2026, 12, 2, 9, 0, tzinfo=NY)
# Nobody on duty: the scripted AMI server knows no QueueAdd.
NIGHT = datetime(2026, 12, 2, 23, 0, tzinfo=NY)


def sample(
    hotline: Daemon, name: str, labels: Mapping[str, str] | None = None
) -> Callable[[], Awaitable[float]]:
    """A probe for wait_for: the sample's current value, 0 while it does not exist."""

    async def probe() -> float:
        return hotline.metrics.registry.get_sample_value(name, dict(labels or {})) or 0.0

    return probe


async def banner(pbx: Pbx) -> str:
    """The first line Asterisk sends on its AMI port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", pbx.ami_port)
    try:
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


# -- against the real PBX -------------------------------------------------------------------


async def test_asterisk_s_ami_version_and_the_watchdog_ping_round_trip_are_exported(
    pbx: Pbx, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(DAY))
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-1"]}, 5, "the day shift")

    prefix, _, version = (await banner(pbx)).partition("/")
    assert prefix == "Asterisk Call Manager"
    info = sample(hotline, "hotline_asterisk_info", {"ami_version": version})
    assert await info() == 1.0
    # ping_interval is 1 s in these tests: a loopback round trip is well under 0.5 s.
    rtt = await wait_for(sample(hotline, "hotline_ami_ping_rtt_seconds"), bool, 5, "a Ping")
    assert 0 < rtt < 0.5
    assert await sample(hotline, "hotline_reconcile_triggers_total", {"trigger": "connect"})() >= 1


async def test_the_last_reload_comes_from_fullybooted_and_from_each_reload_event(
    pbx: Pbx, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(DAY))
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-1"]}, 5, "the day shift")
    reloaded = sample(hotline, "hotline_asterisk_reload_timestamp_seconds")
    started = await sample(hotline, "hotline_asterisk_start_timestamp_seconds")()
    # FullyBooted's LastReload: Asterisk's start if it never reloaded, a later reload otherwise.
    first = await reloaded()
    assert started - 1.5 <= first <= time.time()
    reload_rounds = sample(hotline, "hotline_reconcile_triggers_total", {"trigger": "reload"})
    rounds_before = await reload_rounds()

    await asyncio.to_thread(pbx.cli, "module reload app_queue")
    asked = time.time()
    moved = await wait_for(reloaded, lambda at: at > first, 5, "the Reload event")
    assert asked - 2 <= moved <= time.time()
    await wait_for(reload_rounds, lambda n: n == rounds_before + 1, 5, "a round woken by it")

    # Another session learns the same instant from its FullyBooted (whole seconds ago).
    other = await start_daemon(ROSTER, ManualClock(DAY))
    learnt = await wait_for(
        sample(other, "hotline_asterisk_reload_timestamp_seconds"), bool, 5, "FullyBooted"
    )
    assert abs(learnt - moved) < 1.5


# -- through the scripted AMI server --------------------------------------------------------


@pytest.fixture
def fake_pbx(fake_ami: FakeAmi, pbx: Pbx) -> FakeAmi:
    fake_ami.secret = pbx.secret  # start_daemon logs in with the development PBX's secret
    return fake_ami


def member_added(interface: str, name: str) -> bytes:
    return message(
        ("Event", "QueueMemberAdded"), ("Privilege", "agent,all"), ("Queue", "crisis"),
        ("MemberName", name), ("Interface", interface), ("StateInterface", interface),
        ("Membership", "dynamic"), ("Penalty", "0"), ("Status", "1"), ("Paused", "0"),
        ("InCall", "0"),
    )  # fmt: skip


async def test_a_consumer_that_raises_is_counted_and_logged_without_values_and_others_go_on(
    fake_pbx: FakeAmi, start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_name = "r-zz-name-that-must-not-be-logged"
    feed = QueueBoard.feed
    fed: list[str] = []

    def broken(board: QueueBoard, name: str, fields: Mapping[str, str], at: float) -> None:
        fed.append(fields.get("MemberName", ""))
        if fields.get("MemberName") == secret_name:
            raise ValueError(f"cannot take {fields['MemberName']} at {fields['Interface']}")
        feed(board, name, fields, at)

    monkeypatch.setattr(QueueBoard, "feed", broken)
    hotline = await start_daemon(ROSTER, ManualClock(NIGHT), ami_port=fake_pbx.port)

    async def live() -> bool:
        return hotline.link.up

    async def fed_so_far() -> list[str]:
        return list(fed)

    await wait_for(live, bool, 10, "the daemon logged in to the scripted AMI")
    drift = sample(hotline, "hotline_reconcile_triggers_total", {"trigger": "drift"})
    drift_before = await drift()
    errors = sample(hotline, "hotline_event_handler_errors_total", {"consumer": "queues"})
    writer = fake_pbx.writers[-1]
    with capture_logs() as logs:
        # The live queue model raises on the first; the keeper still sees it (as drift), and
        # the live model takes the next one.
        writer.write(member_added("PJSIP/7001", secret_name) + member_added("PJSIP/7002", "r-2"))
        await writer.drain()
        await wait_for(errors, lambda n: n == 1, 5, "the failure counted")
        await wait_for(drift, lambda n: n > drift_before, 5, "the keeper woken by the same event")
        await wait_for(fed_so_far, lambda names: "r-2" in names, 5, "the next event")

    for consumer in ("membership", "ledger", "asterisk"):
        counted = sample(hotline, "hotline_event_handler_errors_total", {"consumer": consumer})
        assert await counted() == 0
    assert hotline.link.up
    (failed,) = [line for line in logs if line["event"] == "event_handler_failed"]
    where = failed.pop("where")
    assert failed == {
        "event": "event_handler_failed",
        "log_level": "error",
        "consumer": "queues",
        "ami_event": "QueueMemberAdded",
        "error": "ValueError",
        "field_names": [
            "Event", "InCall", "Interface", "MemberName", "Membership", "Paused", "Penalty",
            "Queue", "StateInterface", "Status",
        ],
        "repeats": 0,
    }  # fmt: skip
    # Code places only, from the handler to where it raised.
    assert where[0].startswith("daemon.py:")
    assert where[-1].startswith("test_pipeline_metrics.py:")
    assert all(secret_name not in str(line) and "7001" not in str(line) for line in logs)


async def test_one_event_in_sixty_four_is_timed(
    fake_pbx: FakeAmi, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(NIGHT), ami_port=fake_pbx.port)

    async def live() -> bool:
        return hotline.link.up

    await wait_for(live, bool, 10, "the daemon logged in to the scripted AMI")
    received = sample(hotline, "hotline_events_received_total", {"event": "QueueMemberStatus"})
    status = message(
        ("Event", "QueueMemberStatus"), ("Privilege", "agent,all"), ("Queue", "elsewhere"),
        ("MemberName", "x"), ("Interface", "PJSIP/1"), ("Status", "1"),
    )  # fmt: skip
    fake_pbx.writers[-1].write(status * 640)
    await wait_for(received, lambda n: n == 640, 5, "640 events consumed")
    timed = await sample(hotline, "hotline_event_processing_seconds_count")()
    # FullyBooted came first, so the tenth timed event is among these.
    assert timed == 10
    spent = await sample(hotline, "hotline_event_processing_seconds_sum")()
    assert 0 < spent < 0.1


async def test_a_reload_that_did_not_run_leaves_the_last_reload_where_it_was(
    fake_pbx: FakeAmi, start_daemon: StartDaemon
) -> None:
    hotline = await start_daemon(ROSTER, ManualClock(NIGHT), ami_port=fake_pbx.port)

    async def live() -> bool:
        return hotline.link.up

    await wait_for(live, bool, 10, "the daemon logged in to the scripted AMI")
    reloaded = sample(hotline, "hotline_asterisk_reload_timestamp_seconds")
    # The scripted FullyBooted says LastReload: 42.
    assert abs(await reloaded() - (time.time() - 42)) < 2

    def reload(status: str, at: float) -> bytes:
        return message(
            ("Event", "Reload"), ("Privilege", "system,all"), ("Timestamp", f"{at:.6f}"),
            ("Module", "All"), ("Status", status),
        )  # fmt: skip

    ran = time.time() - 10
    # Queued until boot completes (1) and refused while another runs (4): no reload happened.
    fake_pbx.writers[-1].write(reload("0", ran) + reload("4", ran + 5) + reload("1", ran + 6))
    received = sample(hotline, "hotline_events_received_total", {"event": "Reload"})
    await wait_for(received, lambda n: n == 3, 5, "three Reload events consumed")
    assert await reloaded() == pytest.approx(ran, abs=1e-6)
