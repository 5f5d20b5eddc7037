"""Adapter to Asterisk's manager interface (AMI) over panoramisk 1.4, its only importer.

One supervisor task owns the connection: connect, log in, wait for FullyBooted, watch liveness with
its own Ping, reconnect with capped backoff. Events go, in order, to one asyncio.Queue; actions
return plain values. panoramisk 1.4's traps (B1 to B10 below) and their workarounds:
docs/asterisk-ami.md, "panoramisk 1.4 traps". With `ami.tls` the connection is TLS, Asterisk's
certificate checked before the secret is sent, and no action with a line break in a header is
ever sent: docs/security.md, "AMI transport" and "AMI headers".
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import random
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import structlog
from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from hotline.config import AmiSettings, AmiTlsSettings, ConfigError
from hotline.core.ami import (
    ConnectResult,
    DisconnectReason,
    Event,
    Inbound,
    LinkDown,
    LinkState,
    LinkUp,
    RefusedReason,
    Reply,
    Result,
    Scrub,
    field_number,
)
from hotline.core.health import NotReady

log = structlog.get_logger("hotline.ami")

EOL = "\r\n"
# Every action we send, lower-cased: panoramisk must never replay one after a reconnect
# (docs/asterisk-ami.md, "panoramisk 1.4 traps", B3); the reconciler re-derives intent from
# fresh state instead.
_FORGETABLE = (
    "ping",
    "login",
    "logoff",
    "queueadd",
    "queueremove",
    "queuepause",
    "queuepenalty",
    "queuememberringinuse",
    "queuelog",
    "queuestatus",
    "queuesummary",
    "originate",
    "hangup",
)
# An event carrying an ActionID belongs to a list reply; Shutdown must reach panoramisk.
_FAST = EOL + "ActionID: "
_SHUTDOWN = "Event: Shutdown"
# Bytes read per loop turn. asyncio's default (256 KiB, about 400 events) holds the loop for
# ~20 ms per read under load, starving the store's round trips and the Ping watchdog.
_READ_BYTES = 32 * 1024
# A header name as Asterisk writes them; anything else in a malformed block is not logged.
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
# Characters that would end a header and start another one (docs/security.md, "AMI headers").
_BREAKS = re.compile(r"[\r\n\0]")
# Replies that mean "already as you want it" (docs/asterisk-ami.md, "Action replies").
_ALREADY = ("Unable to add interface: Already there", "Unable to remove interface: Not there")


class Observer(Protocol):
    """What the link reports; metrics implement it (adapters never import each other)."""

    def connect_attempt(self, result: ConnectResult) -> None: ...
    def disconnected(self, reason: DisconnectReason) -> None: ...
    def link_up(self, up: bool) -> None: ...
    def action_done(self, action: str, result: Result, seconds: float) -> None: ...
    def message_received(self) -> None: ...
    def malformed_message(self) -> None: ...
    def action_refused(self, reason: RefusedReason) -> None: ...
    def inbox_overflow(self) -> None: ...
    def ping_answered(self, seconds: float) -> None: ...
    def ami_version(self, version: str) -> None: ...


class _LinkLost(Exception):
    pass


class _Protocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with lossless UTF-8 decoding and counted malformed messages
    (docs/asterisk-ami.md, "panoramisk 1.4 traps", B7)."""

    link: AmiLink

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Any) -> None:
        super().connection_lost(exc)
        if not self.gone.done():
            self.gone.set_result(None)

    def data_received(self, data: bytes) -> None:
        # panoramisk decodes each read on its own with errors="ignore", dropping a character split
        # across two reads (docs/asterisk-ami.md, "panoramisk 1.4 traps", B7); an incremental
        # decoder keeps it whole.
        self._buffer += self._decoder.decode(data)
        *blocks, self._buffer = self._buffer.split(EOL + EOL)
        for block in blocks:
            text = block.strip()
            if not text:
                continue
            if text.startswith("Asterisk Call Manager/"):
                # The banner ends with a single EOL, so it heads the first message's block. Its
                # number is the AMI protocol's version (docs/asterisk-ami.md, "Framing").
                banner, _, text = text.partition(EOL)
                self.link.observer.ami_version(banner.partition("/")[2].strip())
                if not text:
                    continue
            if text.startswith("Event: ") and _FAST not in text and not text.startswith(_SHUTDOWN):
                # Most traffic: events no action waits for. Parsed straight into a dict, they
                # skip panoramisk's case-insensitive Message and its dispatch (a third of the
                # cost per event); list items and Shutdown still take panoramisk's path.
                self.link.observer.message_received()
                self.link.event(self.factory, _parse(text))
                continue
            message = Message.from_line(text)
            if message is None:
                self.link.malformed(text)
                continue
            self.link.observer.message_received()
            try:
                self.handle_message(message)
            except Exception:  # a reply panoramisk cannot match must not drop the link
                self.link.malformed(text)


class _Manager(Manager):  # type: ignore[misc]
    """A Manager that never reconnects or replays by itself: the supervisor decides
    (docs/asterisk-ami.md, "panoramisk 1.4 traps", B3 and B10)."""

    patterns: list[tuple[str, Any]]

    def __init__(self, link: AmiLink, **config: Any) -> None:
        super().__init__(**config)
        self.link = link

        # Its FullyBooted hook replays unanswered actions: stale intent must never be replayed
        # (docs/asterisk-ami.md, "panoramisk 1.4 traps", B3).
        self.callbacks.pop("FullyBooted", None)
        self.patterns = [p for p in self.patterns if p[0] != "FullyBooted"]

    def ping(self) -> None:
        # panoramisk's own Ping never checks the reply; AmiLink runs a checked one
        # (docs/asterisk-ami.md, "panoramisk 1.4 traps", B4).
        pass

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        reason: DisconnectReason = "shutdown_event" if isinstance(exc, Message) else "eof"
        self.link.connection_lost(self, reason)


class AmiLink:
    """One AMI session at a time, kept alive for the life of the daemon."""

    def __init__(
        self,
        settings: AmiSettings,
        secret: str,
        inbox: asyncio.Queue[Inbound],
        observer: Observer,
        scrub: Scrub = dict,
    ) -> None:
        self.settings = settings
        self._secret = secret  # the value settings.secret points to; never logged
        # Built once, so a CA file that cannot be used stops the start (exit 78).
        self._tls = tls_context(settings.tls) if settings.tls is not None else None
        self.scrub = scrub
        self.inbox = inbox
        self.observer = observer
        self.state: LinkState = "disconnected"
        self.last_error = "not connected yet"
        self._manager: _Manager | None = None
        self._lost: asyncio.Future[DisconnectReason] | None = None
        self._booted: asyncio.Future[float | None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._overflowed = False
        # Set at the first failed connection attempt: starting must not wait on a PBX that is down.
        self.failed_once = asyncio.Event()

    def __repr__(self) -> str:
        s = self.settings
        tls = "tls" if self._tls is not None else "tcp"
        return f"<AmiLink {s.username}@{s.host}:{s.port} {tls} {self.state}>"

    @property
    def up(self) -> bool:
        return self.state == "live"

    def readiness(self) -> list[NotReady]:
        """Why the link cannot carry actions now; empty while it is live. Public: the state and
        the last error are in the log (ami_connect_failed, ami_disconnected), not here."""
        return [] if self.up else [NotReady.AMI_NOT_LIVE]

    def take_overflow(self) -> bool:
        """True once after the inbox overflowed: events were lost and state must be re-read."""
        overflowed, self._overflowed = self._overflowed, False
        return overflowed

    async def run(self) -> None:
        """Connect, and reconnect for ever with capped, jittered backoff."""
        delay = self.settings.backoff_min_s
        while True:
            was_live = await self._session()
            if was_live:
                delay = self.settings.backoff_min_s
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter only
            delay = min(delay * 2, self.settings.backoff_max_s)

    async def send(self, action: Mapping[str, str]) -> Reply:
        """Send a single-reply action; never raises for AMI or link trouble."""
        return await self._send(action, as_list=False)

    async def send_list(self, action: Mapping[str, str]) -> Reply:
        """Send a list action (QueueStatus…): the reply's items are the events of the list."""
        return await self._send(action, as_list=None)

    # -- the session ------------------------------------------------------------------------

    async def _session(self) -> bool:
        """One connection from connect to loss. Returns whether it reached LIVE."""
        loop = asyncio.get_running_loop()
        s = self.settings
        self.state = "connecting"
        self._lost = loop.create_future()
        self._booted = loop.create_future()
        manager = _Manager(
            self,
            host=s.host,
            port=s.port,
            loop=loop,  # docs/asterisk-ami.md, "panoramisk 1.4 traps", B8
            events="on",
            protocol_factory=self._protocol_factory,
            forgetable_actions=_FORGETABLE,
        )
        manager.register_event("*", self._on_event)
        try:
            # asyncio.timeout, never wait_for: Python 3.11's wait_for loses a cancellation that
            # arrives as the attempt ends, and the daemon could then never stop this loop.
            async with asyncio.timeout(s.action_timeout_s):
                transport, protocol = await loop.create_connection(
                    self._protocol_factory,
                    s.host,
                    s.port,
                    ssl=self._tls,
                    server_hostname=s.tls.server_name if s.tls is not None else None,
                )
        except TimeoutError:
            return self._failed("timeout", "connect timed out")
        except ssl.SSLError as exc:
            # Not Asterisk's certificate, or not TLS at all: the secret was not sent
            # (docs/security.md, "AMI transport").
            reason = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
            return self._failed("tls_failed", f"TLS handshake failed: {reason}")
        except OSError as exc:
            return self._failed("refused", f"connect failed: {exc.strerror or exc}")
        _keepalive(transport.get_extra_info("socket"))
        if hasattr(transport, "max_size"):  # the selector transport's recv() size
            transport.max_size = _READ_BYTES
        connected: asyncio.Future[tuple[Any, Any]] = loop.create_future()
        connected.set_result((transport, protocol))
        manager.connection_made(connected)
        self._manager = manager
        try:
            return await self._login_and_watch(manager)
        finally:
            self._teardown(manager)
            # The socket closes on a later loop iteration; wait so none outlives the session.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(protocol.gone)

    async def _login_and_watch(self, manager: _Manager) -> bool:
        s = self.settings
        assert self._lost is not None
        assert self._booted is not None
        self.state = "authenticating"
        reply = await self._send(
            {"Action": "Login", "Username": s.username, "Secret": self._secret, "Events": "on"},
            as_list=False,
        )
        if reply.result is not Result.SUCCESS:
            kind: ConnectResult = (
                "timeout" if reply.result is Result.TIMEOUT
                else "disconnected" if reply.result is Result.DISCONNECTED
                else "auth_failed"
            )  # fmt: skip
            self._failed(kind, f"login failed: {reply.message or reply.result.value}")
            return False
        # The AMI port accepts logins before app_queue is loaded: wait for FullyBooted, which
        # Asterisk also sends right after login when it is already booted.
        if not self._booted.done():  # it may have come in the same read as the Login reply
            self.state = "waiting_fullybooted"
        waiting: set[asyncio.Future[Any]] = {self._booted, self._lost}
        done, _ = await asyncio.wait(
            waiting, timeout=s.boot_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if self._booted not in done:
            self._failed("timeout", "no FullyBooted after login")
            return False
        watchdog = asyncio.ensure_future(self._watchdog(manager))
        try:
            reason = await self._lost
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        self.last_error = f"connection lost ({reason})"
        return True

    async def _watchdog(self, manager: _Manager) -> None:
        """Own liveness check: two missed Pings in a row abort the transport
        (docs/asterisk-ami.md, "panoramisk 1.4 traps", B4)."""
        misses = 0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            sent = loop.time()
            reply = await self._send({"Action": "Ping"}, as_list=False, self_timeout=True)
            if reply.result is Result.SUCCESS:
                self.observer.ping_answered(loop.time() - sent)
            misses = 0 if reply.result is Result.SUCCESS else misses + 1
            if misses >= 2:
                log.warning("ami_ping_timeout", misses=misses)
                self._abort(manager, "ping_timeout")
                return

    def _abort(self, manager: _Manager, reason: DisconnectReason) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
        if manager.protocol is not None:
            manager.protocol.transport.abort()

    def connection_lost(self, manager: _Manager, reason: DisconnectReason) -> None:
        if manager is self._manager and self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _failed(self, kind: ConnectResult, message: str) -> bool:
        self.failed_once.set()
        self.observer.connect_attempt(kind)
        self.last_error = message
        log.warning("ami_connect_failed", kind=kind, error=message)
        return False

    def _teardown(self, manager: _Manager) -> None:
        lost = self._lost
        # Cancelled (daemon stopping) while awaited: the future itself is cancelled, not resolved.
        finished = lost is not None and lost.done() and not lost.cancelled()
        reason: DisconnectReason = lost.result() if finished and lost is not None else "local"
        was_live = self.state == "live"
        self.state = "disconnected"
        self._manager = None
        for fut in self._pending:
            if not fut.done():
                fut.set_exception(_LinkLost())
        self._pending.clear()
        manager.close()
        if was_live:
            self.observer.link_up(False)
            self.observer.disconnected(reason)
            # "local" is our own close, at shutdown: not a fault.
            (log.info if reason == "local" else log.warning)("ami_disconnected", reason=reason)
            self._deliver(LinkDown(reason))

    # -- actions and events -----------------------------------------------------------------

    async def _send(
        self, fields: Mapping[str, str], *, as_list: bool | None, self_timeout: bool = False
    ) -> Reply:
        name = fields["Action"]
        refused = _refusal(fields)
        if refused is not None:
            # Whatever its source (the roster, Asterisk's own replies), a value that would end
            # its header is never sent (docs/security.md, "AMI headers"). Neither it nor its
            # header's name, if that is not a plain name, reaches the log.
            header, reason = refused
            shown = header if _HEADER_NAME.fullmatch(header) else "[invalid name]"
            action = name if _HEADER_NAME.fullmatch(name) else "[invalid name]"
            self.observer.action_refused(reason)
            log.error("ami_action_refused", action=action, header=shown, reason=reason)
            what = "a line break or NUL" if reason == "crlf" else "text UTF-8 cannot encode"
            return Reply(Result.ERROR, f"refused, not sent: the {shown} header holds {what}")
        manager = self._manager
        if manager is None or manager.protocol is None:
            return Reply(Result.DISCONNECTED, self.last_error)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # as_list is given to send_action itself: it overwrites the Action's own
        # (docs/asterisk-ami.md, "panoramisk 1.4 traps", B1). False for single replies, so
        # QueueAdd's "Added interface to queue" is not mistaken for a list.
        action = Action(dict(fields), as_list=as_list)
        future = manager.send_action(action, as_list=as_list)
        self._pending.add(future)
        timeout = self.settings.ping_timeout_s if self_timeout else self.settings.action_timeout_s
        try:
            async with asyncio.timeout(timeout):
                message = await future
        except TimeoutError:
            # Else the late reply sits in panoramisk's table until the next disconnect
            # (docs/asterisk-ami.md, "panoramisk 1.4 traps", B5).
            manager.protocol.responses.pop(action.id, None)
            reply = Reply(Result.TIMEOUT, f"no reply within {timeout:g} s")
        except _LinkLost:
            reply = Reply(Result.DISCONNECTED, "connection lost")
        else:
            reply = _reply(message, self.scrub)
        finally:
            self._pending.discard(future)
        if name != "Login":
            self.observer.action_done(name, reply.result, loop.time() - started)
        return reply

    def _protocol_factory(self) -> _Protocol:
        protocol = _Protocol()
        protocol.link = self
        return protocol

    def _on_event(self, manager: _Manager, message: Message) -> None:
        # The one synchronous callback: it must not raise, and it only enqueues
        # (docs/asterisk-ami.md, "panoramisk 1.4 traps", B6).
        self.event(manager, _fields(message))

    def event(self, manager: _Manager, raw: dict[str, str]) -> None:
        if manager is not self._manager:
            return
        fields = self.scrub(raw)
        name = fields.get("Event", "")
        event = Event(name, fields, asyncio.get_running_loop().time())
        self._deliver(event)
        if name == "FullyBooted" and self._booted is not None and not self._booted.done():
            # Live now, before LinkUp reaches the consumer: a round it wakes must find the link up.
            uptime = field_number(fields, "Uptime")
            self._booted.set_result(uptime)
            self.state = "live"
            self.last_error = ""
            self.observer.connect_attempt("success")
            self.observer.link_up(True)
            log.info(
                "ami_live",
                host=self.settings.host,
                port=self.settings.port,
                tls=self._tls is not None,
            )
            self._deliver(LinkUp(uptime))

    def _deliver(self, item: Inbound) -> None:
        try:
            self.inbox.put_nowait(item)
        except asyncio.QueueFull:
            self._overflowed = True
            self.observer.inbox_overflow()

    def malformed(self, text: str) -> None:
        self.observer.malformed_message()
        # No text of the block at all: a line without a colon may be a caller's number or name.
        # Only the names of its first "Name: value" lines that look like header names, and sizes.
        lines = text.split(EOL)
        heads = [line.partition(": ") for line in lines[:8]]
        log.warning(
            "ami_malformed_message",
            header_names=[name for name, sep, _ in heads if sep and _HEADER_NAME.fullmatch(name)],
            lines=len(lines),
            size=len(text),
        )


def tls_context(tls: AmiTlsSettings) -> ssl.SSLContext:
    """A client context that trusts the CA in `tls.ca_file` alone and checks that Asterisk's
    certificate names `tls.server_name`; a ConfigError if the file cannot be used."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    except OSError as exc:  # ssl.SSLError included: not a PEM certificate
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise ConfigError([f"ami.tls.ca_file: cannot use {tls.ca_file}: {reason}"]) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _refusal(fields: Mapping[str, str]) -> tuple[str, RefusedReason] | None:
    """The first header whose name or value cannot be sent as it is, and why: panoramisk writes
    UTF-8, and logs the whole action, Secret included, when it cannot encode one."""
    for key, value in fields.items():
        for text in (key, value):
            if _BREAKS.search(text):
                return key, "crlf"
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return key, "unencodable"
    return None


def _reply(message: Message | list[Message], scrub: Scrub) -> Reply:
    if isinstance(message, list):
        head, items = message[0], message[1:]
        events = tuple(
            scrub(_fields(m)) for m in items if not str(m.get("Event", "")).endswith("Complete")
        )
        return Reply(Result.SUCCESS, str(head.get("Message", "")), events)
    text = str(message.get("Message", "")).strip()
    response = str(message.get("Response", ""))
    if response in ("Success", "Follows", "Goodbye"):
        return Reply(Result.SUCCESS, text)
    if text in _ALREADY:
        return Reply(Result.ALREADY, text)
    return Reply(Result.ERROR, text)


def _fields(message: Message) -> dict[str, str]:
    # panoramisk keeps the body of a "Follows" reply under "content"; repeated headers are lists.
    return {
        k: v if isinstance(v, str) else "\n".join(v) for k, v in message.items() if k != "content"
    }


def _parse(text: str) -> dict[str, str]:
    """A message block as panoramisk reads it: "Key: Value" lines, repeated keys joined."""
    fields: dict[str, str] = {}
    for line in text.split(EOL):
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        fields[key] = f"{fields[key]}\n{value}" if key in fields else value
    return fields


def _keepalive(sock: socket.socket | None) -> None:
    """TCP keepalive as a second line of defence against a half-open link."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
