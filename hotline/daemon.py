"""Composition root: wires config, AMI link, membership keeper and HTTP into one asyncio process."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import AsyncExitStack

import structlog
from prometheus_client import CollectorRegistry

from hotline import http
from hotline import log as logging_setup
from hotline.ami import AmiLink, Event, Inbound, LinkDown, LinkSettings, LinkUp
from hotline.config import Config, ConfigError
from hotline.membership import Clock, MembershipKeeper, SystemClock
from hotline.metrics import Metrics

log = structlog.get_logger("hotline.daemon")

EXIT_CONFIG = 78
# Bound on events waiting for the consumer; overflow forces a resync instead of blocking the reader.
_INBOX_SIZE = 50_000


def main(config: Config) -> int:
    """`hotline run`: exit 0 after SIGTERM/SIGINT, 78 if the config's secret cannot be read."""
    logging_setup.configure()
    try:
        secret = config.ami.secret.read()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{config.path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    asyncio.run(_main(config, secret))
    return 0


async def _main(config: Config, secret: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(config, secret, SystemClock(), stop)


class Daemon:
    """The wired components, exposed so tests can look inside a running daemon."""

    def __init__(
        self, config: Config, secret: str, clock: Clock, registry: CollectorRegistry
    ) -> None:
        self.config = config
        self.metrics = Metrics(registry, config.roster.queues)
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=_INBOX_SIZE)
        self.link = AmiLink(
            LinkSettings(
                host=config.ami.host,
                port=config.ami.port,
                username=config.ami.username,
                secret=secret,
                action_timeout_s=config.ami.action_timeout_s,
                ping_interval_s=config.ami.ping_interval_s,
                ping_timeout_s=config.ami.ping_timeout_s,
            ),
            self.inbox,
            self.metrics,
        )
        self.keeper = MembershipKeeper(
            config.roster, self.link, clock, self.metrics, config.reconcile.resync_interval_s
        )

    def not_ready(self) -> list[str]:
        reasons = []
        if not self.link.up:
            reasons.append(f"AMI not live ({self.link.state}): {self.link.last_error}")
        elif not self.keeper.in_sync:
            reasons.append(f"membership not in sync: {self.keeper.last_problem}")
        return reasons

    async def consume(self) -> None:
        """The one consumer of AMI events, in arrival order."""
        while True:
            item = await self.inbox.get()
            if self.link.take_overflow():
                self.keeper.wake("overflow")
            if isinstance(item, Event):
                self.keeper.on_event(item)
            elif isinstance(item, LinkUp):
                self.keeper.wake("connect")
            elif isinstance(item, LinkDown):
                self.keeper.link_down()


async def run(
    config: Config,
    secret: str,
    clock: Clock,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    started: asyncio.Future[Daemon] | None = None,
) -> None:
    """Run until `stop` is set."""
    daemon = Daemon(config, secret, clock, registry or CollectorRegistry())
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            http.serve(
                config.http.host, config.http.port, daemon.metrics.registry, daemon.not_ready
            )
        )
        log.info(
            "daemon_started",
            config=str(config.path),
            queues=list(config.roster.queues),
            responders=len(config.roster.responders),
            http=f"{config.http.host}:{config.http.port}",
        )
        async with asyncio.TaskGroup() as tasks:
            running = [
                tasks.create_task(daemon.link.run(), name="ami-link"),
                tasks.create_task(daemon.consume(), name="event-consumer"),
                tasks.create_task(daemon.keeper.run_rounds(), name="reconcile"),
                tasks.create_task(daemon.keeper.run_timer(), name="shift-timer"),
            ]
            if started is not None:
                started.set_result(daemon)
            await stop.wait()
            log.info("daemon_stopping")
            for task in running:
                task.cancel()
    log.info("daemon_stopped")
