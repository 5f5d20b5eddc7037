"""Composition root: wires config, AMI link, membership keeper and HTTP into one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import resource
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from urllib.parse import quote, urlsplit, urlunsplit

import structlog
from prometheus_client import CollectorRegistry

from hotline.adapters import http
from hotline.adapters import log as logging_setup
from hotline.adapters.ami import AmiLink
from hotline.adapters.api import Api, Sources
from hotline.adapters.clock import SystemClock
from hotline.adapters.http import Readiness
from hotline.adapters.metrics import (
    CallFlow,
    Metrics,
    PauseMetrics,
    QueueCollector,
    SurgeMetrics,
    WellbeingMetrics,
    render_metrics,
)
from hotline.adapters.metrics.api import ApiMetrics
from hotline.adapters.metrics.consumer import SAMPLE_EVERY, EventConsumer
from hotline.adapters.metrics.coverage import CoverageMetrics
from hotline.adapters.metrics.partner import PartnerCollector
from hotline.adapters.metrics.phones import PhoneMetrics
from hotline.adapters.store import SchemaError, Spool, Store, StoreUnavailable, load_forecast
from hotline.adapters.store.supervision import SupervisionStore
from hotline.adapters.systemd import Notifier
from hotline.app.coverage import CoverageWatch
from hotline.app.ledger import Ledger
from hotline.app.membership import MembershipKeeper
from hotline.app.supervisor import Supervisor
from hotline.app.surge import AuditTrail, SurgeWatch
from hotline.app.wellbeing import WellbeingKeeper
from hotline.config import EXIT_CONFIG, Config, ConfigError, load_config, read_private_file
from hotline.config.live import restart_only_changes
from hotline.config.problems import LINE_CHARS, printable
from hotline.core.ami import Event, EventName, Inbound, LinkDown, LinkUp, Reply, field_number
from hotline.core.board import Schedule, build_board, schedule
from hotline.core.calls import CallBook
from hotline.core.clock import Clock
from hotline.core.phones import PhoneBook, roster_phones
from hotline.core.plan import plan_json
from hotline.core.presence import Presence
from hotline.core.privacy import KeyFileError, Pseudonymiser, allow_listed, load_keys
from hotline.core.queuestate import QueueBoard
from hotline.core.reconcile import Trigger
from hotline.core.supervision import ActionRefused
from hotline.core.surge import Load, load_of
from hotline.core.wellbeing import Guards

log = structlog.get_logger("hotline.daemon")

Handler = Callable[[Event], None]
Routes = dict[str, tuple[tuple[EventConsumer, Handler], ...]]

# Bound on events waiting for the consumer; overflow forces a resync instead of blocking the reader.
_INBOX_SIZE = 50_000
_RESTORE_TIMEOUT_S = 10.0
_LOOP_PROBE_S = 0.5
_RETENTION_EVERY_S = 24 * 3600.0
# Allocations before a young collection (CPython's default is 700).
_GC_YOUNG_THRESHOLD = 10_000
# A reconcile round still under way after this long is stuck (its actions time out far sooner):
# the watchdog pings stop, and systemd restarts the daemon.
_ROUND_STUCK_AFTER_S = 120.0
# How long the AMI host's name may take to resolve at start before the link is left to retry it.
_RESOLVE_TIMEOUT_S = 10.0
# Resolver answers that mean the name has no address: a configuration error, not an outage.
_NO_SUCH_NAME = (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
# The events that tell when Asterisk last reloaded (docs/asterisk-ami.md, "Reload and Shutdown"),
# and the Reload statuses of a reload that did not run: queued until boot completes (1), or
# refused because another was under way (4).
_RELOAD_EVENTS: frozenset[EventName] = frozenset({"FullyBooted", "Reload"})
_RELOAD_NOT_RUN = frozenset({"1", "4"})
# The same failure of an event consumer is logged at most this often; every one is counted.
_FAILURE_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Secrets:
    """What the daemon reads from credentials at start; never logged, never in a repr (the
    pseudonymiser's key is not in its own)."""

    ami: str = field(repr=False)
    pseudonymiser: Pseudonymiser | None = None
    database_dsn: str | None = field(default=None, repr=False)


class _AnnouncedPauses:
    """The AMI link for what hotline pauses by itself: a QueuePause that starts a pause is first
    announced to `announce` (the ledger), so the pause is filed as hotline's, not external."""

    def __init__(
        self, link: AmiLink, announce: Callable[[str, str | None, str], None] | None
    ) -> None:
        self._link = link
        self._announce = announce

    @property
    def up(self) -> bool:
        return self._link.up

    async def send(self, action: Mapping[str, str]) -> Reply:
        starts = action.get("Action") == "QueuePause" and action.get("Paused") == "true"
        if starts and self._announce is not None:
            self._announce(action["Interface"], action.get("Queue"), action.get("Reason", ""))
        return await self._link.send(action)


class StartupError(Exception):
    """The daemon cannot run as configured (exit 78: restarting would not help)."""


def main(config: Config) -> int:
    """`hotline run`: exit 0 after SIGTERM/SIGINT; 78, with one line each, for what the
    configuration or the host makes impossible at start: a secret that cannot be read, an AMI
    host name that does not exist, an HTTP address that is in use or not this host's, a spool
    directory that cannot be made, a database schema this version does not know."""
    logging_setup.configure()
    raise_open_files_limit()
    try:
        secrets = read_secrets(config)
        asyncio.run(_main(config, secrets))
    except (ConfigError, StartupError) as exc:
        for problem in getattr(exc, "problems", None) or [str(exc)]:
            print(f"{config.path}: {printable(problem, LINE_CHARS)}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, as far as the kernel allows; daemon_started logs
    what it got (docs/http.md, "Descriptors")."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def read_secrets(config: Config) -> Secrets:
    """Every secret, each from a source private to the daemon (ConfigError, exit 78, otherwise);
    from here on the log scrubs each of them out of whatever it writes."""
    ami = config.ami.secret.read()
    logging_setup.conceal(ami)
    if config.database is None or config.privacy is None:
        return Secrets(ami)
    path = config.privacy.keys_file
    try:
        text = read_private_file(path, "privacy.keys_file").decode("utf-8")
        keys = load_keys(text, config.privacy.default_country_code)
    except (KeyFileError, UnicodeDecodeError) as exc:
        # Never the exception's own text for a decode error: it quotes the bytes.
        reason = str(exc) if isinstance(exc, KeyFileError) else "not UTF-8 text"
        raise ConfigError([f"privacy.keys_file: {path}: {reason}"]) from None
    logging_setup.conceal(keys.key.hex())
    return Secrets(ami, keys, database_dsn(config))


def database_dsn(config: Config) -> str | None:
    """The DSN with its password from the credential, for asyncpg; never logged."""
    if config.database is None:
        return None
    dsn = config.database.dsn
    if config.database.password is not None:
        password = config.database.password.read()
        logging_setup.conceal(password)
        dsn = _with_password(dsn, password)
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
        self._asterisk_reloaded: float | None = None
        # Per (consumer, exception, place): when it was last logged, and failures since.
        self._failures: dict[tuple[str, str, str], tuple[float, int]] = {}
        self.metrics = Metrics(registry, config.roster.queues)
        self.board = QueueBoard({q: s.wrapup_s for q, s in config.service.items()})
        rollover = config.calls.upstream_rollover_after_s
        self.flow = CallFlow(registry, config.service, [rollover] if rollover else [])
        registry.register(QueueCollector(self.board, self.flow, config.service, time.time))
        # Responders' phones: reachability and refused calls, for metrics and /readyz.
        phones = roster_phones(config.roster.responders.values())
        self.phones = PhoneBook(phones, config.roster.queues)
        self.phone_metrics = PhoneMetrics(registry, self.phones)
        # The partner centre's trunk is a PJSIP endpoint like a phone: its qualify, for alerts.
        registry.register(PartnerCollector(self.phones))
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
            try:
                spool = Spool(config.database.spool_dir, config.database.spool_max_bytes)
            except OSError as exc:
                raise StartupError(
                    f"database.spool_dir: {config.database.spool_dir} cannot be made private "
                    f"to the daemon's user (mode 0700): {exc.strerror or exc}"
                ) from None
            self.store = Store(secrets.database_dsn, spool, self.metrics.store)
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
        # The acting side of the supervisor API: pauses, overrides (stored with the records'
        # database, in a pool of their own), the audit trail and the pause limits.
        self.supervision_store = (
            SupervisionStore(secrets.database_dsn) if secrets.database_dsn is not None else None
        )
        self.pause_metrics = PauseMetrics(
            registry,
            config.roster.queues,
            {n: r.lift_at_limit for n, r in config.pauses.reasons.items() if r.max_s is not None},
        )
        # What pauses: a supervisor's and the wellbeing guard's, each announced to the ledger
        # first so that its record says hotline paused the member.
        pausing = _AnnouncedPauses(self.link, self.ledger.expect_pause if self.ledger else None)
        self.supervisor = Supervisor(
            self.keeper,
            pausing,
            self.supervision_store,
            config.pauses,
            clock,
            observer=self.pause_metrics,
        )
        self.pause_metrics.watch(self.supervisor.over_limit_pauses)
        # The coverage look-ahead on the roster in force (reloads and overrides included), on
        # the roster's clock; the forecast from the records when there is a database.
        dsn = secrets.database_dsn
        self.coverage = CoverageWatch(
            config,
            lambda: self.keeper.roster,
            clock,
            CoverageMetrics(
                registry,
                clock.now,
                lambda: self.keeper.roster,
                timedelta(days=config.roster_checks.certification_warn_days),
            ),
            functools.partial(load_forecast, dsn, config) if dsn is not None else None,
        )
        self.api = Api(config.http, self._api_sources(clock, registry))
        # The surge pool and the wellbeing guardrails (docs/staffing.md), on the wall clock:
        # their durations are real time, whatever clock drives the roster.
        self.surge_metrics = SurgeMetrics(registry, config.surge)
        self.surge = SurgeWatch(
            config.surge,
            self._surge_load,
            self.keeper,
            clock=SystemClock(),
            observer=self.surge_metrics,
            audit=AuditTrail(self.supervision_store, self.surge_metrics),
        )
        self.wellbeing_metrics = WellbeingMetrics(registry, config.wellbeing)
        self.wellbeing = WellbeingKeeper(
            Guards(config.wellbeing, config.pauses.hard_call_reason),
            pausing,
            SystemClock(),
            self.wellbeing_metrics,
            AuditTrail(self.supervision_store, self.wellbeing_metrics),
        )
        self.notifier = Notifier()
        self._gc_threshold = gc.get_threshold()
        self._reloads: set[asyncio.Task[bool]] = set()
        self._reload_lock = asyncio.Lock()

    def _api_sources(self, clock: Clock, registry: CollectorRegistry) -> Sources:
        """What the supervisors' API and console read and act on (docs/api.md)."""
        keeper, queues = self.keeper, self.board
        limits = {name: reason.max_s for name, reason in self.config.pauses.reasons.items()}

        # The roster's part of the board changes only at the plan's next change.
        plans: list[Schedule] = []

        def board() -> dict[str, object]:
            wall, now = time.time(), clock.now()
            roster, surging = keeper.roster, keeper.surging
            if not plans or not plans[0].holds(roster, surging, now):
                plans[:] = [schedule(roster, now, surging)]
            details = queues.detail(wall)
            return build_board(details, plans[0], now, pause_limits=limits, wall=wall)

        return Sources(
            supervisor=self.supervisor,
            board=board,
            plan=lambda at: plan_json(keeper.roster, at, keeper.surging),
            roster=lambda: keeper.roster,
            now=clock.now,
            pause_reasons=self.config.pauses.reasons,
            observer=ApiMetrics(registry),
        )

    def readiness(self) -> list[Readiness]:
        """Each component answers for itself; /readyz lists every reason."""
        providers: list[Readiness] = [
            self.link.readiness,
            self.keeper.readiness,
            self.supervisor.readiness,
        ]
        if self.store is not None:
            providers.append(self.store.readiness)
        providers.append(self.phones.readiness)
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

    def _note_reload(self, event: Event) -> None:
        """When Asterisk last reloaded: a Reload that ran, at its Timestamp; or FullyBooted's
        LastReload, whole seconds ago, so that only a move of more than 5 s counts (a reconnect
        must not move it)."""
        fields = event.fields
        if event.name == "Reload":
            if fields.get("Status") in _RELOAD_NOT_RUN:
                return
            at = field_number(fields, "Timestamp") or time.time()
        else:
            ago = field_number(fields, "LastReload")
            if ago is None:
                return
            at = time.time() - ago
            if self._asterisk_reloaded is not None and abs(at - self._asterisk_reloaded) <= 5:
                return
        self._asterisk_reloaded = at
        self.metrics.runtime.asterisk_reload.set(at)

    def exposition(self) -> bytes:
        return render_metrics(self.metrics.registry, self.flow)

    def on_status(self, items: list[Mapping[str, str]], triggers: set[Trigger]) -> None:
        """Every QueueStatus read rebuilds the live model; a reconnect's closes stale calls."""
        self.board.resync(items, time.time())
        self.phones.resync(items)
        self.supervisor.on_status(items)
        self.wellbeing.on_status(items)
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
            await self.purge_audit()
            await asyncio.sleep(_RETENTION_EVERY_S)

    async def purge_audit(self) -> None:
        """The audit trail's own retention (database.audit_retention_days), apart from the
        records'."""
        if self.supervision_store is None or self.config.database is None:
            return
        days = self.config.database.audit_retention_days
        try:
            deleted = await self.supervision_store.purge_audit(days)
        except ActionRefused as exc:
            log.warning("audit_retention_skipped", days=days, reason=str(exc))
        else:
            log.info("audit_retention_purged", rows=deleted, days=days)

    def _surge_load(self) -> dict[str, Load] | None:
        """Each queue's load for the surge rules; none while AMI is down (the board is stale)."""
        if not self.link.up:
            return None
        return {queue: load_of(view) for queue, view in self.board.view(time.time()).items()}

    def _on_phone_event(self, event: Event) -> None:
        refusal = self.phones.on_event(event.name, event.fields)
        if refusal is not None:
            self.phone_metrics.refusal(refusal)
            log.warning("phone_refused_call", responder=refusal.responder, cause="media")

    def _routes(self) -> Routes:
        """Which consumers each event goes to: one table, so no consumer re-filters the stream."""
        board, now = self.board, time.time

        def feed(event: Event) -> None:
            board.feed(event.name, event.fields, now())

        consumers: list[tuple[EventConsumer, frozenset[str], Handler]] = [
            ("queues", QueueBoard.EVENTS, feed),
            ("membership", MembershipKeeper.EVENTS, self.keeper.on_event),
        ]
        if self.ledger is not None:
            consumers.append(("ledger", Ledger.EVENTS, self.ledger.on_event))
        consumers.append(("asterisk", _RELOAD_EVENTS, self._note_reload))
        consumers.append(("phones", PhoneBook.EVENTS, self._on_phone_event))
        consumers.append(("pauses", Supervisor.EVENTS, self.supervisor.on_event))
        if self.config.wellbeing:
            consumers.append(("wellbeing", WellbeingKeeper.EVENTS, self.wellbeing.on_event))
        routes: Routes = {}
        for consumer, names, handler in consumers:
            for name in names:
                routes[name] = (*routes.get(name, ()), (consumer, handler))
        return routes

    async def consume(self) -> None:
        """The one consumer of AMI events, in arrival order. A consumer that raises is counted
        and logged, and the event still goes to the others; one event in SAMPLE_EVERY is timed."""
        routes = self._routes()
        count = self.metrics.ledger.event_received
        timed, clock, untimed = self.metrics.consumer.processing_seconds, time.perf_counter, 0
        while True:
            item = await self.inbox.get()
            if self.link.take_overflow():
                self.keeper.wake("overflow")
            if isinstance(item, Event):
                untimed += 1
                started = clock() if untimed == SAMPLE_EVERY else None
                count(item.name)
                for consumer, handler in routes.get(item.name, ()):
                    try:
                        handler(item)
                    except Exception as exc:  # one consumer's bug must stop no other
                        self._handler_failed(consumer, item, exc)
                if started is not None:
                    timed.observe(clock() - started)
                    untimed = 0
            elif isinstance(item, LinkUp):
                self.keeper.wake("connect")
                if item.uptime_s is not None:
                    self._note_boot(item.uptime_s)
            elif isinstance(item, LinkDown):
                self.keeper.link_down()

    def _handler_failed(self, consumer: EventConsumer, event: Event, exc: Exception) -> None:
        """Counted, and logged by names and code places only: neither the exception's text nor
        a traceback, which may quote the event's values. The same failure is logged at most once
        a minute, with the number of repeats since its last line."""
        self.metrics.consumer.handler_failed(consumer)
        # From the handler inwards (the first frame is this loop's), without reading sources.
        stack = list(traceback.walk_tb(exc.__traceback__))[1:]
        where = [
            f"{os.path.basename(frame.f_code.co_filename)}:{line} in {frame.f_code.co_name}"
            for frame, line in stack[-6:]
        ]
        key = (consumer, type(exc).__name__, where[-1] if where else "")
        now = time.monotonic()
        logged, repeats = self._failures.get(key, (None, 0))
        if logged is not None and now - logged < _FAILURE_LOG_EVERY_S:
            self._failures[key] = (logged, repeats + 1)
            return
        self._failures[key] = (now, 0)
        log.error(
            "event_handler_failed",
            consumer=consumer,
            ami_event=event.name,
            error=type(exc).__name__,
            where=where,
            field_names=sorted(event.fields),
            repeats=repeats,
        )

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
            self.phones.replace_phones(roster_phones(new.roster.responders.values()))
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
        """Phase one: continue what was open when the daemon last stopped. Then what start-up
        built (modules, config, restored records) is frozen out of the garbage collector's
        reach, and young collections run less often: the event path allocates many short-lived
        objects, and full collections over everything held cost ~130 ms each under load."""
        await self.restore()
        # The stored overrides reach the keeper before its first round; if Postgres cannot
        # give them now, the supervisor's task retries and /readyz says so meanwhile.
        await self.supervisor.load()
        self._gc_threshold = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(_GC_YOUNG_THRESHOLD, 10, 10)

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
                tasks.create_task(self.coverage.run(), name="coverage"),
                tasks.create_task(self.supervisor.run(), name="overrides"),
                tasks.create_task(self.supervisor.run_pause_limits(), name="pause-limits"),
            ]
            if self.store is not None and self.ledger is not None:
                running += [
                    tasks.create_task(self.store.run(), name="store-writer"),
                    tasks.create_task(self.ledger.run_ticks(), name="call-ticks"),
                    tasks.create_task(self.run_retention(), name="retention"),
                ]
            if self.config.surge:
                running += [
                    tasks.create_task(self.surge.run(), name="surge"),
                    tasks.create_task(self.surge.audit.run(), name="surge-audit"),
                ]
            if self.config.wellbeing:
                running += [
                    tasks.create_task(self.wellbeing.run(), name="wellbeing"),
                    tasks.create_task(self.wellbeing.audit.run(), name="wellbeing-audit"),
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
            if self.supervision_store is not None:
                await self.supervision_store.close()
        finally:
            self.notifier.close()
            # The process is left as it was found (tests run daemons one after another in it).
            gc.unfreeze()
            gc.set_threshold(*self._gc_threshold)


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
    await resolve_ami_host(config)
    daemon = Daemon(config, secrets, clock, registry or CollectorRegistry())
    try:
        await daemon.start()
        http_at = f"{config.http.host}:{config.http.port}"
        async with contextlib.AsyncExitStack() as serving:
            try:
                await serving.enter_async_context(
                    http.serve(
                        config.http,
                        daemon.exposition,
                        daemon.readiness(),
                        daemon.metrics.http,
                        install=daemon.api.install,
                        tls=_http_tls(config),
                    )
                )
            except OSError as exc:  # in use, not an address of this host, a name that is not
                raise StartupError(
                    f"http.listen: cannot listen on {http_at}: {_reason(exc)}"
                ) from None
            log.info(
                "daemon_started",
                config=str(config.path),
                queues=list(config.roster.queues),
                responders=len(config.roster.responders),
                http=http_at,
                open_files_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
            await daemon.serve(stop, started)
    finally:
        await daemon.stop()
    log.info("daemon_stopped")


def _http_tls(config: Config) -> ssl.SSLContext | None:
    """The listener's TLS context; StartupError (exit 78) for a pair that cannot be used."""
    try:
        return http.tls_context(config.http)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        if isinstance(exc, ssl.SSLError):
            reason = exc.reason or "not a certificate and key that match"
        raise StartupError(f"http.tls: cannot use the certificate and key: {reason}") from None


async def resolve_ami_host(config: Config) -> None:
    """At start, an AMI host name that does not exist is a configuration error (StartupError,
    exit 78). A resolver that does not answer, or a host that does not, is an outage: the link
    retries it."""
    host = config.ami.host
    try:
        async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
            await asyncio.get_running_loop().getaddrinfo(
                host, config.ami.port, type=socket.SOCK_STREAM
            )
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            raise StartupError(f"ami.host: cannot resolve {host!r}: {_reason(exc)}") from None
        log.warning("ami_host_unresolved", host=host, error=_reason(exc))
    except UnicodeError:  # an empty or overlong label
        raise StartupError(f"ami.host: {host!r} is not a valid host name") from None
    except TimeoutError:
        log.warning("ami_host_unresolved", host=host, error="the resolver did not answer")


def _reason(exc: OSError) -> str:
    """An OSError in words, without the address or path it may repeat."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return exc.strerror or type(exc).__name__
    return os.strerror(exc.errno)
