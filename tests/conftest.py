"""Shared fixtures: the development PBX (a real Asterisk) for the whole session, and in-process
daemons wired to it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TextIO, cast

import pytest
import structlog

from hotline import daemon
from hotline.adapters import log as logging_setup
from hotline.config import Config, parse_config
from tests.fake_ami import FakeAmi
from tests.harness import AmiTestClient, ManualClock, Pbx, free_port, wait_for


@pytest.fixture(autouse=True)
def _process_logging_untouched(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """`hotline run` and the commands that reach Postgres configure the process's logging. Run
    in-process by a test, that would leave structlog caching every module's logger with that
    pipeline (`cache_logger_on_first_use`), and the `capture_logs` of any later test would see
    nothing. So in tests, outside the pipeline's own, it only sends structlog's lines to stderr
    (as the pipeline does, keeping stdout for the command's output), and is undone after."""
    if request.module.__name__ == "tests.unit.test_log":
        yield
        return
    configured = False

    def to_stderr(*_args: object, **_kwargs: object) -> None:
        nonlocal configured
        configured = True
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Stderr())))

    monkeypatch.setattr(logging_setup, "configure", to_stderr)
    yield
    if configured:
        structlog.reset_defaults()


class _Stderr:
    """sys.stderr as it is at each write (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(scope="session")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    """A PBX instance of this test session's own, beside any developer's PBX. Never skipped: if
    Asterisk cannot start, every test that needs it fails and says why."""
    instance = Pbx(
        name=f"pytest-{os.getpid()}",
        ami_port=free_port(),
        sip_port=free_port(),
        state_dir=tmp_path_factory.mktemp("pbx"),
    )
    try:
        instance.start()
    except Exception as exc:  # turned into a test failure with the reason
        pytest.fail(f"the development PBX could not start: {exc}", pytrace=False)
    yield instance
    instance.run("reset")


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmi]:
    """A scripted AMI server on loopback, for faults a real Asterisk cannot be made to produce."""
    fake = FakeAmi()
    await fake.start()
    yield fake
    fake.close()


@pytest.fixture
async def ami(pbx: Pbx) -> AsyncIterator[AmiTestClient]:
    """A test AMI session on a quiet PBX: no call left over from an earlier test (a stand-in
    responder still talking would be busy, and rightly kept), and no dynamic members."""
    async with AmiTestClient(pbx) as client:
        await client.link.send({"Action": "Hangup", "Channel": "/.*/"})

        async def channels() -> str:
            return await asyncio.to_thread(pbx.cli, "core show channels count")

        await wait_for(channels, lambda out: out.startswith("0 active channels"), 10, "no calls")
        for member in await client.members():
            if member.dynamic:
                await client.action(
                    {"Action": "QueueRemove", "Queue": member.queue, "Interface": member.interface}
                )
        yield client


StartDaemon = Callable[..., Awaitable[daemon.Daemon]]


async def launch(
    config: Config, clock: ManualClock
) -> tuple[daemon.Daemon, asyncio.Event, asyncio.Task[None]]:
    """Run an in-process daemon until it has started (its failure to start is raised here);
    setting the event stops it, and the task ends when it has."""
    stop = asyncio.Event()
    started: asyncio.Future[daemon.Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        daemon.run(config, daemon.read_secrets(config), clock, stop, started=started)
    )
    waiting: set[asyncio.Future[object]] = {started, task}  # type: ignore[arg-type]
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    return started.result(), stop, task


@pytest.fixture
async def start_daemon(pbx: Pbx, tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """Start in-process daemons on the test PBX with a roster and a clock the test drives."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        roster: str,
        clock: ManualClock,
        resync_interval: float = 60,
        ami_port: int | None = None,
        extra: str = "",
    ) -> daemon.Daemon:
        secret_file = tmp_path / "ami-secret"
        secret_file.write_text(pbx.secret)
        secret_file.chmod(0o600)  # credentials must be private to the daemon's user
        text = (
            f"ami: {{host: 127.0.0.1, port: {ami_port or pbx.ami_port}, username: hotline,"
            f" secret_file: {secret_file}, ping_interval: 1, ping_timeout: 1}}\n"
            f'http: {{listen: "127.0.0.1:{free_port()}"}}\n'
            f"reconcile: {{resync_interval: {resync_interval}}}\n" + extra + roster
        )
        config = parse_config(text, tmp_path / "hotline.yaml")
        hotline, stop, task = await launch(config, clock)
        running.append((stop, task))
        return hotline

    yield start
    for stop, task in running:
        stop.set()
        await task
