"""systemd's service notification protocol: one datagram per message to $NOTIFY_SOCKET.

A message is newline-separated KEY=VALUE assignments (READY=1, STATUS=..., STOPPING=1,
RELOADING=1, WATCHDOG=1). The socket is a path, or an abstract-namespace name when it starts with
"@". Outside systemd (no $NOTIFY_SOCKET) every call does nothing, so the daemon runs the same way
under a terminal, a test or the unit. The watchdog interval comes from $WATCHDOG_USEC, meant for
this process only when $WATCHDOG_PID is unset or names it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("hotline.systemd")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self, status: str) -> None:
        self._send(READY="1", STATUS=status)

    def status(self, status: str) -> None:
        self._send(STATUS=status)

    def reloading(self) -> None:
        self._send(RELOADING="1", STATUS="reloading the configuration")

    def stopping(self) -> None:
        self._send(STOPPING="1", STATUS="stopping: flushing records")

    def watchdog(self) -> None:
        self._send(WATCHDOG="1")

    def _send(self, **fields: str) -> None:
        if self._socket is None:
            return
        # A newline in a value would start a new assignment: status texts are one line.
        text = "\n".join(f"{k}={v.replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            self._socket.sendto(text.encode(), self._address)
        except OSError as exc:  # systemd gone or the socket full: never fatal to the daemon
            log.warning("sd_notify_failed", error=exc.strerror or type(exc).__name__)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
