"""Composition root: wires config, AMI link, membership keeper and HTTP into one asyncio process."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit, urlunsplit

import structlog
from prometheus_client import CollectorRegistry

from hotline.adapters import http
from hotline.adapters import log as logging_setup
from hotline.adapters.ami import AmiLink
from hotline.adapters.clock import SystemClock
from hotline.adapters.http import Readiness
from hotline.adapters.metrics import CallFlow, Metrics, QueueCollector, render_metrics
from hotline.adapters.store import SchemaError, Spool, Store, StoreUnavailable
from hotline.adapters.systemd import Notifier
from hotline.app.ledger import Ledger
from hotline.app.membership import MembershipKeeper
from hotline.config import EXIT_CONFIG, Config, ConfigError, load_config
from hotline.config.live import restart_only_changes
from hotline.core.ami import Event, Inbound, LinkDown, LinkUp
from hotline.core.calls import CallBook
from hotline.core.clock import Clock
from hotline.core.presence import Presence
from hotline.core.privacy import KeyFileError, Pseudonymiser, allow_listed, load_keys
from hotline.core.queuestate import QueueBoard
from hotline.core.reconcile import Trigger

log = structlog.get_logger("hotline.daemon")

Handler = Callable[[Event], None]

# Bound on events waiting for the consumer; overflow forces a resync instead of blocking the reader.
_INBOX_SIZE = 50_000
_RESTORE_TIMEOUT_S = 10.0
_LOOP_PROBE_S = 0.5
_RETENTION_EVERY_S = 24 * 3600.0
# A reconcile round still under way after this long is stuck (its actions time out far sooner):
# the watchdog pings stop, and systemd restarts the daemon.
_ROUND_STUCK_AFTER_S = 120.0


@dataclass(frozen=True)
class Secrets:
    """What the daemon reads from credentials at start; never logged."""

    ami: str
    pseudonymiser: Pseudonymiser | None = None
    database_dsn: str | None = None


class StartupError(Exception):
    """The daemon cannot run as configured (exit 78: restarting would not help)."""


def main(config: Config) -> int:
    """`hotline run`: exit 0 after SIGTERM/SIGINT, 78 for a secret that cannot be read or a
    database schema this version does not know."""
    logging_setup.configure()
    try:
        secrets = read_secrets(config)
        asyncio.run(_main(config, secrets))
    except (ConfigError, StartupError) as exc:
        for problem in getattr(exc, "problems", None) or [str(exc)]:
            print(f"{config.path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def read_secrets(config: Config) -> Secrets:
    ami = config.ami.secret.read()
    if config.database is None or config.privacy is None:
        return Secrets(ami)
    path = config.privacy.keys_file
    try:
        keys = load_keys(path.read_text(encoding="utf-8"), config.privacy.default_country_code)
    except OSError as exc:
        raise ConfigError([f"privacy.keys_file: cannot read {path}: {exc.strerror}"]) from None
    except (KeyFileError, UnicodeDecodeError) as exc:
        # Never the exception's own text for a decode error: it quotes the bytes.
        reason = str(exc) if isinstance(exc, KeyFileError) else "not UTF-8 text"
        raise ConfigError([f"privacy.keys_file: {path}: {reason}"]) from None
    return Secrets(ami, keys, database_dsn(config))


def database_dsn(config: Config) -> str | None:
    """The DSN with its password from the credential, for asyncpg; never logged."""
    if config.database is None:
        return None
    dsn = config.database.dsn
    if config.database.password is not None:
        dsn = _with_password(dsn, config.database.password.read())
    return dsn


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _main(config: Config, secrets: Secrets) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Daemon] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        if started.done():
            started.result().request_reload()
        else:
            log.warning("config_reload_ignored", reason="the daemon is still starting")

    loop.add_signal_handler(signal.SIGHUP, reload)
    await run(config, secrets, SystemClock(), stop, started=started)


class Daemon:
    """The wired components, exposed so tests can look inside a running daemon."""

    def __init__(
        self, config: Config, secrets: Secrets, clock: Clock, registry: CollectorRegistry
    ) -> None:
        self.config = config
        # When Asterisk last started (from FullyBooted's Uptime), and whether the latest
        # (re)connect found it restarted rather than merely reconnected.
        self._asterisk_started: float | None = None
        self._asterisk_restarted = False
        self.metrics = Metrics(registry, config.roster.queues)
        self.board = QueueBoard({q: s.wrapup_s for q, s in config.service.items()})
        rollover = config.calls.upstream_rollover_after_s
        self.flow = CallFlow(registry, config.service, [rollover] if rollover else [])
        registry.register(QueueCollector(self.board, self.flow, config.service, time.time))
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=_INBOX_SIZE)
        self.metrics.runtime.event_queue_depth.set_function(self.inbox.qsize)
        # Caller data is replaced or dropped in the AMI callback, before anything is queued.
        pseudonymiser = secrets.pseudonymiser
        self.link = AmiLink(
            config.ami,
            secrets.ami,
            self.inbox,
            self.metrics.link,
            scrub=pseudonymiser.scrub if pseudonymiser is not None else allow_listed,
        )
        self.store: Store | None = None
        self.ledger: Ledger | None = None
        if config.database is not None and secrets.database_dsn is not None:
            self.store = Store(
                secrets.database_dsn,
                Spool(config.database.spool_dir, config.database.spool_max_bytes),
                self.metrics.store,
            )
            calls = config.calls
            book = CallBook(
                abandon_grace_s=calls.abandon_grace_s,
                stale_after_s=calls.stale_after_s,
                keep_closed_s=calls.keep_closed_s,
                upstream_rollover_after_s=calls.upstream_rollover_after_s,
                upstream_tolerance_s=calls.upstream_tolerance_s,
            )
            # Call times are Asterisk's event timestamps, so their grace periods and stale bounds
            # run on the wall clock, whatever clock drives the roster (tests drive that one).
            self.ledger = Ledger(
                book, Presence(), self.store, SystemClock(), self.metrics.ledger, flow=self.flow
            )
            # Read at scrape time: the call book is the truth, no second count to keep in step.
            self.metrics.ledger.calls_open.set_function(lambda: book.open_count)
        self.keeper = MembershipKeeper(
            config.roster,
            self.link,
            clock,
            self.metrics.membership,
            config.reconcile.resync_interval_s,
            on_status=self.on_status,
            on_change=self.ledger.expect if self.ledger else None,
        )
        self.notifier = Notifier()
        self._reloads: set[asyncio.Task[bool]] = set()
        self._reload_lock = asyncio.Lock()

    def readiness(self) -> list[Readiness]:
        """Each component answers for itself; /readyz lists every reason."""
        providers: list[Readiness] = [self.link.readiness, self.keeper.readiness]
        if self.store is not None:
            store = self.store
            providers.append(lambda: [f"call records: {p}"] if (p := store.status()) else [])
        return providers

    async def watch_loop(self) -> None:
        """Measure how late the event loop wakes: a blocked loop delays every AMI event."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(_LOOP_PROBE_S)
            self.metrics.runtime.loop_lag.observe(max(0.0, loop.time() - started - _LOOP_PROBE_S))

    def _note_boot(self, uptime_s: float) -> None:
        started = time.time() - uptime_s
        previous = self._asterisk_started
        # Uptime has 1 s resolution: only a clear move of the start time is a restart, so a
        # reconnect never looks like one (changes() on the start-time series drives an alert).
        self._asterisk_restarted = previous is not None and abs(started - previous) > 5
        if previous is None or self._asterisk_restarted:
            self._asterisk_started = started
            self.metrics.runtime.asterisk_start.set(round(started))

    def exposition(self) -> bytes:
        return render_metrics(self.metrics.registry, self.flow)

    def on_status(self, items: list[Mapping[str, str]], triggers: set[Trigger]) -> None:
        """Every QueueStatus read rebuilds the live model; a reconnect's closes stale calls."""
        self.board.resync(items, time.time())
        if self.ledger is not None:
            self.ledger.on_status(items, triggers, asterisk_restarted=self._asterisk_restarted)

    async def restore(self) -> None:
        """Continue the calls and sessions that were open when the daemon last stopped. Postgres
        being away is not fatal (records spool); a schema this version does not know is."""
        if self.store is None or self.ledger is None:
            return
        try:
            async with asyncio.timeout(_RESTORE_TIMEOUT_S):
                calls, sessions, pauses = await self.store.load_open()
        except SchemaError as exc:
            raise StartupError(f"database: {exc}") from None
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("restore_skipped", reason=str(exc) or "postgres did not answer in time")
            return
        self.ledger.restore(calls, sessions, pauses)
        log.info("restored", calls=len(calls), sessions=len(sessions), pauses=len(pauses))

    async def run_retention(self) -> None:
        """Delete records past the retention period, once a day."""
        assert self.store is not None
        assert self.config.database is not None
        while True:
            days = self.config.database.retention_days
            try:
                deleted = await self.store.purge(days)
            except StoreUnavailable as exc:
                log.warning("retention_skipped", days=days, reason=str(exc))
            else:
                log.info("retention_purged", rows=deleted, days=days)
            await asyncio.sleep(_RETENTION_EVERY_S)

    def _routes(self) -> dict[str, tuple[Handler, ...]]:
        """Which consumers each event goes to: one table, so no consumer re-filters the stream."""
        board, now = self.board, time.time
        consumers: list[tuple[frozenset[str], Handler]] = [
            (QueueBoard.EVENTS, lambda event: board.feed(event.name, event.fields, now())),
            (MembershipKeeper.EVENTS, self.keeper.on_event),
        ]
        if self.ledger is not None:
            consumers.append((Ledger.EVENTS, self.ledger.on_event))
        routes: dict[str, tuple[Handler, ...]] = {}
        for names, handler in consumers:
            for name in names:
                routes[name] = (*routes.get(name, ()), handler)
        return routes

    async def consume(self) -> None:
        """The one consumer of AMI events, in arrival order."""
        routes = self._routes()
        count = self.metrics.ledger.event_received
        while True:
            item = await self.inbox.get()
            if self.link.take_overflow():
                self.keeper.wake("overflow")
            if isinstance(item, Event):
                count(item.name)
                for handler in routes.get(item.name, ()):
                    handler(item)
            elif isinstance(item, LinkUp):
                self.keeper.wake("connect")
                if item.uptime_s is not None:
                    self._note_boot(item.uptime_s)
            elif isinstance(item, LinkDown):
                self.keeper.link_down()

    async def announce_ready(self) -> None:
        """READY=1 once AMI is live and the first round ran, or at the first failed connection
        attempt, so that starting never hangs on a PBX that is down."""
        waiters = [
            asyncio.ensure_future(self.keeper.first_round.wait()),
            asyncio.ensure_future(self.link.failed_once.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self.notifier.ready(self._status())
        log.info("daemon_ready", ami=self.link.state, in_sync=self.keeper.in_sync)

    def _status(self) -> str:
        queues, members = len(self.config.roster.queues), len(self.config.roster.responders)
        if not self.link.up:
            return f"AMI {self.link.state}, retrying; {queues} queues, {members} responders"
        sync = "in sync" if self.keeper.in_sync else "not in sync"
        return f"AMI live, membership {sync}; {queues} queues, {members} responders"

    async def run_watchdog(self, reconcile: asyncio.Task[None], interval_s: float) -> None:
        """WATCHDOG=1 while the loop runs (a blocked loop runs no task, this one included) and the
        reconcile task is alive and not stuck in a round."""
        loop = asyncio.get_running_loop()
        while True:
            started = self.keeper.round_started
            stuck = started is not None and loop.time() - started > _ROUND_STUCK_AFTER_S
            if reconcile.done() or stuck:
                log.error("watchdog_withheld", reconcile_done=reconcile.done(), stuck=stuck)
            else:
                self.notifier.watchdog()
                self.metrics.runtime.watchdog_notifications.inc()
            await asyncio.sleep(interval_s)

    def request_reload(self) -> None:
        """SIGHUP: reload the configuration in a task of its own, one reload at a time."""
        task = asyncio.ensure_future(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Re-read and validate the configuration. A valid one takes effect at the next round
        on the same AMI session; an invalid one is refused with check-config's lines and the
        running one stays. Restart-only settings that changed are named and left as they run."""
        async with self._reload_lock:
            self.notifier.reloading()
            path = self.config.path
            try:
                new = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("config_reload_refused", problem=f"{path}: {problem}")
                self.metrics.runtime.config_reloads.labels("refused").inc()
                self.notifier.ready(f"reload refused, running the previous one; {self._status()}")
                return False
            waiting = restart_only_changes(self.config, new)
            self.config = replace(self.config, roster=new.roster, reconcile=new.reconcile)
            self.keeper.replace_roster(new.roster, new.reconcile.resync_interval_s)
            self.metrics.runtime.config_reloads.labels("ok").inc()
            log.info(
                "config_reloaded",
                queues=len(new.roster.queues),
                responders=len(new.roster.responders),
                shifts=len(new.roster.shifts),
                restart_only_changed=waiting,
            )
            self.notifier.ready(self._status())
            return True

    async def start(self) -> None:
        """Phase one: continue what was open when the daemon last stopped."""
        await self.restore()

    async def serve(self, stop: asyncio.Event, started: asyncio.Future[Daemon] | None) -> None:
        """Phase two: every long-running task, until `stop` is set or one of them fails."""
        async with asyncio.TaskGroup() as tasks:
            reconcile = tasks.create_task(self.keeper.run_rounds(), name="reconcile")
            running = [
                reconcile,
                tasks.create_task(self.link.run(), name="ami-link"),
                tasks.create_task(self.consume(), name="event-consumer"),
                tasks.create_task(self.keeper.run_timer(), name="shift-timer"),
                tasks.create_task(self.watch_loop(), name="loop-lag"),
            ]
            if self.store is not None and self.ledger is not None:
                running += [
                    tasks.create_task(self.store.run(), name="store-writer"),
                    tasks.create_task(self.ledger.run_ticks(), name="call-ticks"),
                    tasks.create_task(self.run_retention(), name="retention"),
                ]
            running.append(tasks.create_task(self.announce_ready(), name="ready"))
            if self.notifier.watchdog_s is not None:
                watchdog = self.run_watchdog(reconcile, self.notifier.watchdog_s / 2)
                running.append(tasks.create_task(watchdog, name="watchdog"))
            if started is not None:
                started.set_result(self)
            await stop.wait()
            log.info("daemon_stopping")
            for task in [*running, *self._reloads]:
                task.cancel()

    async def stop(self) -> None:
        """Phase three, whatever ended phase two: what is still in memory goes to Postgres
        within the configured budget or, failing that, to the spool."""
        self.notifier.stopping()
        try:
            if self.store is not None and self.config.database is not None:
                await self.store.close(self.config.database.flush_timeout_s)
        finally:
            self.notifier.close()


async def run(
    config: Config,
    secrets: Secrets,
    clock: Clock,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    started: asyncio.Future[Daemon] | None = None,
) -> None:
    """Run until `stop` is set: start, serve, and stop, the last in a `finally` so that a task
    that fails still has the records in memory flushed."""
    daemon = Daemon(config, secrets, clock, registry or CollectorRegistry())
    try:
        await daemon.start()
        http_at = f"{config.http.host}:{config.http.port}"
        async with http.serve(
            config.http.host, config.http.port, daemon.exposition, daemon.readiness()
        ):
            log.info(
                "daemon_started",
                config=str(config.path),
                queues=list(config.roster.queues),
                responders=len(config.roster.responders),
                http=http_at,
            )
            await daemon.serve(stop, started)
    finally:
        await daemon.stop()
    log.info("daemon_stopped")
