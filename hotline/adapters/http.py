"""The daemon's small HTTP surface on aiohttp: /healthz, /readyz and /metrics, behind a listener of
its own that cannot take the daemon down (docs/http.md).

The listener accepts connections itself rather than through asyncio's server: it serves at most
`max_connections` at once and closes any further one as soon as it is accepted (a descriptor for
a moment, never for long); it closes a connection whose request head is not complete
`header_timeout` after the accept, one idle between requests for `idle_timeout` (aiohttp's
keep-alive timeout), and one whose client has not read a paused response for `idle_timeout`.
Failed accepts (out of descriptors or memory) pause accepting for a second instead of spinning.
Every shed connection, failed accept and bad request is counted (the observer for the first two)
and summed up in one log line at most every 10 s, never a line or a traceback per connection;
aiohttp's own per-request log goes to a logger of the listener's, outside logging's tree.
With `http.tls`, each accepted socket is wrapped in TLS here, its handshake bounded by
`header_timeout`; other components (the supervision API) add their routes through `install`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from hotline.config import HttpSettings
from hotline.core.health import AcceptFailure, NotReady, ShedReason

log = structlog.get_logger("hotline.http")

# A component's reasons for not being ready; empty when it is. /readyz asks each one.
Readiness = Callable[[], Sequence[NotReady]]
# Renders the metrics in Prometheus' text format, from memory only: it runs on the event loop.
Exposition = Callable[[], bytes]
_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

# Bounds on a request head: the request line, each header line, and the number of headers (larger
# is refused with 400). aiohttp's defaults are 8190, 8190 and 128; Prometheus and curl send a
# request line of a few dozen bytes and fewer than ten headers.
_MAX_LINE = 2048
_MAX_FIELD = 4096
_MAX_HEADERS = 32
_BACKLOG = 128
# Accepts per wake-up of the listening socket: bounded, so a flood cannot hold the event loop.
_ACCEPT_BATCH = 64
# After an accept failed for want of descriptors or memory. The pending connection stays in the
# kernel's queue, so the socket stays readable: without a pause the loop would spin on it.
_ACCEPT_PAUSE_S = 1.0
_REPORT_EVERY_S = 10.0
# At stop, requests under way get this long to finish.
_SHUTDOWN_S = 2.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
_OUT_OF_MEMORY = (errno.ENOBUFS, errno.ENOMEM)


class Observer(Protocol):
    """What the listener reports; metrics implement it (adapters never import each other)."""

    def connections(self, open_now: int, limit: int) -> None: ...
    def shed(self, reason: ShedReason) -> None: ...
    def accept_failed(self, kind: AcceptFailure) -> None: ...


# Adds routes of other components (the supervision API and console) to the application.
Install = Callable[[web.Application], None]


def make_app(
    exposition: Exposition,
    readiness: Sequence[Readiness],
    on_request: Callable[[web.Request], None] | None = None,
    install: Install | None = None,
) -> web.Application:
    """The routes; `on_request` is told of every request whose head is complete, before its
    handler runs."""

    @web.middleware
    async def noticed(request: web.Request, handler: Handler) -> web.StreamResponse:
        if on_request is not None:
            on_request(request)
        return await handler(request)

    async def healthz(_request: web.Request) -> web.Response:
        # The process and its event loop answer: that is all liveness means.
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        # Fixed codes and sentences only: the details are in the log (hotline/core/health.py).
        reasons = list(dict.fromkeys(reason for provider in readiness for reason in provider()))
        body = {
            "ready": not reasons,
            "reasons": [{"code": reason.code, "text": reason.text} for reason in reasons],
        }
        return web.json_response(body, status=503 if reasons else 200)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": _TEXT_FORMAT})

    app = web.Application(middlewares=[noticed] if on_request is not None else [])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if install is not None:
        install(app)
    return app


def tls_context(settings: HttpSettings) -> ssl.SSLContext | None:
    """The listener's TLS context from its certificate and key, or None for plain HTTP; OSError
    (ssl.SSLError among them) for files that cannot be read or do not match."""
    if settings.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls.cert_file, settings.tls.key_file)
    return context


@asynccontextmanager
async def serve(
    settings: HttpSettings,
    exposition: Exposition,
    readiness: Sequence[Readiness],
    observer: Observer,
    *,
    install: Install | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Listener]:
    """Serve until the block exits; then stop accepting and close every connection. With `tls`,
    every connection is TLS; its handshake must end within header_timeout."""
    sockets = await _bind(settings.host, settings.port)
    listener = Listener(settings, observer, tls)
    runner = web.AppRunner(
        make_app(exposition, readiness, listener.head_complete, install),
        access_log=None,
        logger=listener.request_log,
        shutdown_timeout=_SHUTDOWN_S,
        keepalive_timeout=settings.idle_timeout_s,
        max_line_size=_MAX_LINE,
        max_field_size=_MAX_FIELD,
        max_headers=_MAX_HEADERS,
    )
    try:
        await runner.setup()
        assert runner.server is not None
        listener.start(sockets, runner.server)
        yield listener
    finally:
        listener.close()
        for sock in sockets:
            sock.close()
        await runner.cleanup()


async def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to, as asyncio's server makes them."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None
            sock.listen(_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts connections and hands at most `max_connections` at once to aiohttp."""

    def __init__(
        self, settings: HttpSettings, observer: Observer, tls: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self._observer = observer
        self._sockets: list[socket.socket] = []
        self._factory: Callable[[], web.RequestHandler] | None = None
        self._paused: dict[socket.socket, asyncio.TimerHandle] = {}
        self._starting: set[asyncio.Task[object]] = set()
        self._awaiting_head: dict[web.RequestHandler, _Guarded] = {}
        self._report = _Report(self)
        # aiohttp's logger for this listener's requests: not in logging's tree, so nothing it
        # writes reaches stderr one line per request.
        self.request_log = logging.Logger("hotline.http.requests", logging.DEBUG)
        self.request_log.addHandler(_RequestLog(self._report))
        self.open = 0  # connections being served now
        self.closed = False
        observer.connections(0, settings.max_connections)

    @property
    def limit(self) -> int:
        return self.settings.max_connections

    def start(
        self, sockets: list[socket.socket], factory: Callable[[], web.RequestHandler]
    ) -> None:
        self._sockets = sockets
        self._factory = factory
        for sock in sockets:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting; the connections being served are aiohttp's to close."""
        if self.closed:
            return
        self.closed = True
        for sock in self._sockets:
            if sock in self._paused:
                self._paused.pop(sock).cancel()
            else:
                self.loop.remove_reader(sock.fileno())
        for task in self._starting:
            task.cancel()
        for guarded in list(self._awaiting_head.values()):
            guarded.head_received()
        self._report.close()

    # -- accepting --------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                kind = _failure(exc)
                self._observer.accept_failed(kind)
                self._report.note(f"accept_failed_{kind}")
                if kind != "aborted":
                    self._pause(sock)
                    return
                continue
            if self.open >= self.limit:
                conn.close()
                self.shed("limit")
                continue
            self._serve(conn)

    def _pause(self, sock: socket.socket) -> None:
        self.loop.remove_reader(sock.fileno())
        self._paused[sock] = self.loop.call_later(_ACCEPT_PAUSE_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        del self._paused[sock]
        self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _serve(self, conn: socket.socket) -> None:
        assert self._factory is not None
        conn.setblocking(False)
        guarded = _Guarded(self, self._factory())
        self.open += 1
        self._observer.connections(self.open, self.limit)
        # A TLS handshake counts against the connection's slot like a request head does: it must
        # end within header_timeout (the head's own timer starts once it has).
        handshake_s = self.settings.header_timeout_s if self.tls is not None else None
        task: asyncio.Task[object] = self.loop.create_task(
            self.loop.connect_accepted_socket(
                lambda: guarded, conn, ssl=self.tls, ssl_handshake_timeout=handshake_s
            )
        )
        self._starting.add(task)

        def started(task: asyncio.Task[object]) -> None:
            self._starting.discard(task)
            failed = task.cancelled() or task.exception() is not None
            if failed and not guarded.made:
                # No transport took the socket (once one has, it closes it and tells `guarded`).
                conn.close()
                self.released(guarded)

        task.add_done_callback(started)

    # -- the guarded connections ------------------------------------------------------------

    def head_complete(self, request: web.Request) -> None:
        """A request reached its handler: its connection's head came in time."""
        guarded = self._awaiting_head.pop(request.protocol, None)
        if guarded is not None:
            guarded.head_received()

    # Called by each connection's protocol:

    def made(self, guarded: _Guarded) -> None:
        self._awaiting_head[guarded.inner] = guarded

    def released(self, guarded: _Guarded) -> None:
        self._awaiting_head.pop(guarded.inner, None)
        self.open -= 1
        self._observer.connections(self.open, self.limit)

    def shed(self, reason: ShedReason) -> None:
        self._observer.shed(reason)
        self._report.note("refused_at_limit" if reason == "limit" else reason)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted against the limit and closed when its
    request head or the client's reading of a response is late."""

    def __init__(self, listener: Listener, inner: web.RequestHandler) -> None:
        self.listener = listener
        self.inner = inner
        self.made = False
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.made = True
        self._transport = transport
        listener = self.listener
        self._timer = listener.loop.call_later(
            listener.settings.header_timeout_s, self._late, "header_timeout"
        )
        listener.made(self)
        self.inner.connection_made(transport)

    def head_received(self) -> None:
        self._cancel_timer()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None  # as aiohttp's: the transport closes

    def pause_writing(self) -> None:
        # The client does not read what it asked for: it gets idle_timeout to start again.
        self._cancel_timer()
        listener = self.listener
        self._timer = listener.loop.call_later(
            listener.settings.idle_timeout_s, self._late, "write_stalled"
        )
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._cancel_timer()
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.listener.released(self)
        self.inner.connection_lost(exc)

    def _late(self, reason: ShedReason) -> None:
        self._timer = None
        self.listener.shed(reason)
        if self._transport is not None:
            self._transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Report:
    """Shed connections and failed accepts, summed up in one log line when the first comes and
    then at most once every _REPORT_EVERY_S while they go on."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._counts: Counter[str] = Counter()
        self._since = 0.0  # loop time of the first count in this line
        self._next = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def note(self, what: str) -> None:
        if not self._counts:
            self._since = self._listener.loop.time()
        self._counts[what] += 1
        if self._handle is None and not self._listener.closed:
            loop = self._listener.loop
            self._handle = loop.call_at(max(self._next, loop.time()), self._flush)

    def now(self) -> float:
        return self._listener.loop.time()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._counts:
            self._flush()

    def _flush(self) -> None:
        self._handle = None
        now = self._listener.loop.time()
        self._next = now + _REPORT_EVERY_S
        counts, self._counts = dict(self._counts), Counter()
        failed = any(key.startswith("accept_failed_") for key in counts)
        fields: dict[str, object] = {
            **counts,
            "within_s": round(now - self._since, 1),
            "open": self._listener.open,
            "max_connections": self._listener.limit,
        }
        if failed:
            fields["open_files_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        (log.error if failed else log.warning)("http_overload", **fields)


class _RequestLog(logging.Handler):
    """aiohttp's per-request records: a request head it could not parse (too long, malformed,
    not HTTP at all) is counted; a handler that failed is counted, and the first of every report
    line is logged with its traceback."""

    def __init__(self, report: _Report) -> None:
        super().__init__(logging.DEBUG)
        self._report = report
        self._next_traceback = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            self._report.note("bad_request")
        elif record.levelno >= logging.ERROR:
            self._report.note("handler_error")
            now = self._report.now()
            if now >= self._next_traceback:
                self._next_traceback = now + _REPORT_EVERY_S
                log.error("http_handler_failed", exc_info=record.exc_info or False)


def _failure(exc: OSError) -> AcceptFailure:
    if exc.errno in _OUT_OF_DESCRIPTORS:
        return "descriptors"
    if exc.errno in _OUT_OF_MEMORY:
        return "memory"
    # ECONNABORTED, EPERM (a firewall), EPROTO and the network errors accept(2) passes on.
    return "aborted"
