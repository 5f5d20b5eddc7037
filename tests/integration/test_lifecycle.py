"""The daemon's phases: a task that fails still has the records in memory flushed on the way out.

The scripted AMI server stands in for Asterisk and Postgres is nowhere, so the only way a record
can reach the spool is the stop phase's flush: the store's own writer is the task made to fail."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hotline import daemon
from hotline.adapters.store.writer import Store
from hotline.config import parse_config
from tests.fake_ami import FakeAmi, message
from tests.harness import ManualClock, free_port, wait_for


async def test_a_failing_task_still_flushes_the_records_in_memory(
    fake_ami: FakeAmi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = asyncio.Event()

    async def failing_writer(_store: Store) -> None:
        await boom.wait()
        raise RuntimeError("the writer failed")

    monkeypatch.setattr(Store, "run", failing_writer)
    (tmp_path / "ami-secret").write_text(fake_ami.secret)
    (tmp_path / "caller-keys").write_text(f"1:{secrets.token_hex(32)}\n")
    (tmp_path / "ami-secret").chmod(0o600)
    (tmp_path / "caller-keys").chmod(0o600)
    spool = tmp_path / "spool"
    config = parse_config(
        f"ami: {{port: {fake_ami.port}, username: hotline, secret_file: ami-secret}}\n"
        f'http: {{listen: "127.0.0.1:{free_port()}"}}\n'
        f'database: {{dsn: "postgresql://hotline@127.0.0.1:{free_port()}/hotline",'
        f" spool_dir: {spool}, flush_timeout: 0.5}}\n"
        "privacy: {keys_file: caller-keys}\n"
        "timezone: UTC\nqueues: {crisis: {min_responders: 0}}\nresponders: {}\n",
        tmp_path / "hotline.yaml",
    )
    started: asyncio.Future[daemon.Daemon] = asyncio.get_running_loop().create_future()
    clock = ManualClock(datetime(2026, 12, 1, tzinfo=UTC))
    running = asyncio.create_task(
        daemon.run(config, daemon.read_secrets(config), clock, asyncio.Event(), started=started)
    )
    hotline = await asyncio.wait_for(started, 10)
    assert hotline.ledger is not None
    ledger = hotline.ledger

    async def live() -> bool:
        return hotline.link.up

    await wait_for(live, bool, 10, "the daemon logged in to the scripted AMI")
    fake_ami.writers[-1].write(
        message(("Event", "QueueCallerJoin"), ("Privilege", "agent,all"), ("Queue", "crisis"),
                ("Uniqueid", "1764547200.42"), ("CallerIDNum", "+15550142987"),
                ("Position", "1"), ("Count", "1"))
    )  # fmt: skip

    async def open_calls() -> int:
        return ledger.book.open_count

    await wait_for(open_calls, lambda n: n == 1, 5, "the call folded and handed to the store")
    assert not any(spool.glob("*.jsonl")), "nothing may reach the spool before the stop phase"

    boom.set()
    with pytest.raises(ExceptionGroup) as failure:
        await asyncio.wait_for(running, 10)
    assert failure.group_contains(RuntimeError, match="the writer failed")
    spooled = "".join(path.read_text() for path in spool.glob("*.jsonl"))
    assert "1764547200.42" in spooled
    assert "5550142987" not in spooled
