"""Same-run baselines for bench/recording.py: how fast this process, on this machine, at this
moment, reads the very stream the pipeline is measured on, without the pipeline.

Absolute rates move with the machine and its load (other processes, frequency, the neighbours of
a virtual machine); the ratio of the pipeline to a baseline measured beside it moves far less.
Two readers, each a fresh connection to the same fake AMI server (bench/ami_stream.py), which
replays the same bytes in the same chunks over loopback, timed the same way as the pipeline:

- `panoramisk`: panoramisk 1.4 as its users run it: a stock `Manager` (its own `AMIProtocol`:
  decode, split on the blank line, `Message.from_line`, its dispatch) logs in, and a callback
  registered for "*" counts the events. This is the library's parse rate and the reference of
  the ratio: what reading AMI costs with the library the daemon is built on, before anything
  is done with an event.
- `readuntil`: a bare `asyncio.StreamReader.readuntil(b"\\r\\n\\r\\n")` split into message
  blocks, bytes only (no decoding, no fields): the most any asyncio reader of this stream can
  do, set by the socket, the event loop and the stream reader before any parsing.

Rate: stream events / (the server's first byte of the stream -> the reader has the last event);
both instants are time.monotonic(), system-wide on Linux. CPU: time.process_time() of this
process over the same window (the server runs in its own process, as for the pipeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from panoramisk import Manager

from bench.ami_stream import Plan, Replayed

_EOM = b"\r\n\r\n"
_LOGIN = (
    b"Action: Login\r\nUsername: bench\r\nSecret: bench\r\nEvents: on\r\nActionID: baseline-1"
    + _EOM
)
BASELINE_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Reading:
    """One reader's pass over the stream."""

    events: int
    elapsed_s: float  # the server's first byte of the stream -> the last event read
    cpu_s: float  # this process, over the same window

    @property
    def rate(self) -> float:
        return self.events / self.elapsed_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.events * 1e6


@dataclass(frozen=True, slots=True)
class Baseline:
    """All passes of one reader in a run (before and after the pipeline)."""

    name: str
    readings: tuple[Reading, ...]

    @property
    def rate(self) -> float:
        return statistics.fmean(r.rate for r in self.readings)

    @property
    def cpu_us(self) -> float:
        return statistics.fmean(r.cpu_us for r in self.readings)

    def spread(self) -> str:
        """The passes' rates, as "a-b" or "a" (events/s)."""
        rates = sorted(r.rate for r in self.readings)
        if len(rates) == 1:
            return f"{rates[0]:,.0f}"
        return f"{rates[0]:,.0f}-{rates[-1]:,.0f}"


async def _next_replayed(conn: Connection) -> Replayed:
    """The fake server's report of its next finished replay (it sends one per connection)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Replayed] = loop.create_future()

    def on_message() -> None:
        message = conn.recv()
        if message[0] == "replayed" and not done.done():
            done.set_result(message[1])

    loop.add_reader(conn.fileno(), on_message)
    try:
        return await done
    finally:
        loop.remove_reader(conn.fileno())


async def _panoramisk(port: int, plan: Plan, conn: Connection) -> Reading:
    loop = asyncio.get_running_loop()
    replayed = asyncio.ensure_future(_next_replayed(conn))
    finished: asyncio.Future[float] = loop.create_future()
    target = plan.events + 1  # the stream, after the FullyBooted that answers the login
    seen = 0

    def count(_manager: Any, _message: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == target and not finished.done():
            finished.set_result(time.monotonic())

    manager = Manager(
        host="127.0.0.1", port=port, username="bench", secret="bench", loop=loop, ping_delay=60
    )
    manager.register_event("*", count)
    cpu = time.process_time()
    try:
        await manager.connect()
        last = await finished
        cpu = time.process_time() - cpu
        first = (await replayed).first_byte_at
    finally:
        replayed.cancel()
        manager.close()
    return Reading(plan.events, last - first, cpu)


async def _readuntil(port: int, plan: Plan, conn: Connection) -> Reading:
    replayed = asyncio.ensure_future(_next_replayed(conn))
    target = plan.events + 1
    cpu = time.process_time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_LOGIN)
        seen = 0
        while seen < target:
            block = await reader.readuntil(_EOM)
            if block.startswith(b"Event: "):
                seen += 1
        last = time.monotonic()
        cpu = time.process_time() - cpu
        first = (await replayed).first_byte_at
    finally:
        replayed.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return Reading(plan.events, last - first, cpu)


READERS = {"panoramisk": _panoramisk, "readuntil": _readuntil}


def read_once(name: str, port: int, plan: Plan, conn: Connection) -> Reading:
    """One pass of reader `name` over the stream, in an event loop of its own."""

    async def run() -> Reading:
        async with asyncio.timeout(BASELINE_TIMEOUT_S):
            return await READERS[name](port, plan, conn)

    return asyncio.run(run())
