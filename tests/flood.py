"""A slow-header flood against an HTTP port on loopback, run as a process of its own so that its
sockets and its CPU are not the daemon's: `python -m tests.flood PORT --connections 2000
--seconds 30`.

Each of `connections` slots opens a connection, sends the start of a request head that never
ends, and holds it; when the server closes it, the slot opens another at once. It stops after
`seconds`, closing everything, and prints one JSON line: connections opened, closed by the
server, failed to open (by error), and the most held at once as this side sees them (a
connection the server has not accepted yet counts: its handshake is done). It raises its own
descriptor limit to fit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import json
import resource
import sys
from dataclasses import asdict, dataclass, field

# A request head that never ends: no blank line after the last header.
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: flood\r\nX-Wait: "
_CONNECT_TIMEOUT_S = 3.0
_RETRY_PAUSE_S = 0.05


@dataclass
class Figures:
    connections: int
    seconds: float
    opened: int = 0
    closed_by_server: int = 0
    open_failed: int = 0
    open_errors: dict[str, int] = field(default_factory=dict)
    held_max: int = 0


class _Slow(asyncio.Protocol):
    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.closed = closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(PARTIAL_HEAD)

    def data_received(self, data: bytes) -> None:
        pass  # an error response, if any: the close that follows is what counts

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def flood(host: str, port: int, connections: int, seconds: float) -> Figures:
    loop = asyncio.get_running_loop()
    figures = Figures(connections, seconds)
    held = 0
    end = loop.time() + seconds

    async def slot() -> None:
        nonlocal held
        while loop.time() < end:
            closed: asyncio.Future[None] = loop.create_future()
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                    transport, _ = await loop.create_connection(
                        functools.partial(_Slow, closed), host, port
                    )
            except (OSError, TimeoutError) as exc:
                figures.open_failed += 1
                name = errno.errorcode.get(getattr(exc, "errno", None) or 0, type(exc).__name__)
                figures.open_errors[name] = figures.open_errors.get(name, 0) + 1
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            figures.opened += 1
            held += 1
            figures.held_max = max(figures.held_max, held)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, end - loop.time())):
                        await closed
                        figures.closed_by_server += 1
            finally:
                held -= 1
                transport.abort()

    await asyncio.gather(*(slot() for _ in range(connections)))
    return figures


def _raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.flood")
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    if not 0 < args.connections <= 10_000 or not 0 < args.seconds <= 120:
        parser.error("at most 10,000 connections for at most 120 s")
    _raise_descriptor_limit(args.connections + 256)
    figures = asyncio.run(flood(args.host, args.port, args.connections, args.seconds))
    print(json.dumps(asdict(figures)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
