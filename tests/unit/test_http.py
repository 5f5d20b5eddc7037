"""The HTTP listener on loopback: the connection limit, the header, idle and stalled-write
timeouts, bounded request heads, failed accepts, /readyz's fixed reasons, and the settings."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from hotline.adapters import http
from hotline.adapters.metrics import HttpMetrics
from hotline.config import ConfigError, HttpSettings, parse_config
from hotline.core.health import AcceptFailure, NotReady, ShedReason
from hotline.daemon import raise_open_files_limit
from tests.harness import free_port, wait_for

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Wait: "
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def http_settings(**section: object) -> HttpSettings:
    """The HTTP settings a configuration file with this `http:` section gives."""
    document = {
        "timezone": "UTC",
        "ami": {"username": "hotline", "secret_env": "UNUSED"},
        "http": section,
        "queues": {"q": {}},
        "responders": {},
    }
    return parse_config(json.dumps(document), Path("http.yaml")).http  # JSON is YAML


class Recorder:
    def __init__(self) -> None:
        self.open_now = 0
        self.peak = 0
        self.shed_by: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def connections(self, open_now: int, limit: int) -> None:
        self.open_now = open_now
        self.peak = max(self.peak, open_now)

    def shed(self, reason: ShedReason) -> None:
        self.shed_by[reason] += 1

    def accept_failed(self, kind: AcceptFailure) -> None:
        self.failed[kind] += 1


@asynccontextmanager
async def serving(
    observer: http.Observer,
    readiness: Sequence[http.Readiness] = (),
    exposition: http.Exposition = lambda: b"",
    **section: object,
) -> AsyncIterator[int]:
    port = free_port()
    settings = http_settings(listen=f"127.0.0.1:{port}", **section)
    async with http.serve(settings, exposition, readiness, observer):
        yield port


class Client:
    """A raw connection: what it sends, and whether and when the server closes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, first: bytes = PARTIAL_HEAD) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first)
        await writer.drain()
        return cls(reader, writer)

    async def response(self) -> bytes:
        """One response's head; the test only ever asks for small ones."""
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)

    async def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within `seconds` (anything it sends first,
        such as an error response, is read and dropped)."""
        try:
            async with asyncio.timeout(seconds):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


async def until(condition: Callable[[], bool], what: str, within: float = 5) -> None:
    async def probe() -> bool:
        return condition()

    await wait_for(probe, bool, within, what)


async def get(port: int, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def test_the_settings_default_to_a_small_limit_and_short_timeouts() -> None:
    settings = http_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 9470)
    assert settings.max_connections == 64
    assert settings.header_timeout_s == 5.0
    assert settings.idle_timeout_s == 15.0
    tuned = http_settings(max_connections=8, header_timeout=2, idle_timeout=30.5)
    assert (tuned.max_connections, tuned.header_timeout_s, tuned.idle_timeout_s) == (8, 2, 30.5)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"max_connections": 0}, "http.max_connections"),
        ({"max_connections": "64"}, "http.max_connections"),
        ({"header_timeout": 0}, "http.header_timeout"),
        ({"idle_timeout": -1}, "http.idle_timeout"),
        ({"read_timeout": 5}, "http.read_timeout"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    section: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        http_settings(**section)
    assert any(problem in line for line in caught.value.problems), caught.value.problems


async def test_connections_beyond_the_limit_are_closed_at_once_and_counted() -> None:
    recorder = Recorder()
    async with serving(recorder, max_connections=2, header_timeout=30) as port:
        held = [await Client.open(port), await Client.open(port)]
        await until(lambda: recorder.open_now == 2, "two connections served")

        extra = await Client.open(port)
        assert await extra.closed_within(2)
        assert recorder.shed_by == {"limit": 1}
        assert recorder.peak == 2

        # A slot freed is a slot served.
        await held.pop().close()
        await until(lambda: recorder.open_now == 1, "one connection left")
        assert await get(port, "/healthz") == (200, '{"status": "ok"}')
        for client in [*held, extra]:
            await client.close()
    assert recorder.open_now == 0


async def test_a_request_head_not_complete_in_time_is_closed() -> None:
    recorder = Recorder()
    async with serving(recorder, header_timeout=0.3) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = await Client.open(port)
        assert await slow.closed_within(3)
        assert loop.time() - started >= 0.25
        assert recorder.shed_by == {"header_timeout": 1}

        # A complete head disarms the deadline: the connection outlives it, kept alive.
        prompt = await Client.open(port, REQUEST)
        assert (await prompt.response()).startswith(b"HTTP/1.1 200")
        assert not await prompt.closed_within(0.6)
        prompt.writer.write(REQUEST)
        assert (await prompt.response()).startswith(b"HTTP/1.1 200")
        await prompt.close()
        await slow.close()
    assert recorder.shed_by == {"header_timeout": 1}


async def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    recorder = Recorder()
    async with serving(recorder, header_timeout=30, idle_timeout=0.3) as port:
        idle = await Client.open(port, REQUEST)
        assert (await idle.response()).startswith(b"HTTP/1.1 200")
        assert await idle.closed_within(3)

        # A second head started and never finished is bounded by the idle timeout too.
        again = await Client.open(port, REQUEST)
        assert (await again.response()).startswith(b"HTTP/1.1 200")
        again.writer.write(PARTIAL_HEAD)
        assert await again.closed_within(3)
        await idle.close()
        await again.close()
    # Ordinary closes, not shedding.
    assert recorder.shed_by == {}


async def test_a_response_the_client_stops_reading_is_abandoned_after_the_idle_timeout() -> None:
    recorder = Recorder()
    big = b"# a metric line of an exposition\n" * 500_000  # 16 MB: more than socket buffers
    async with serving(recorder, exposition=lambda: big, idle_timeout=0.5) as port:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await until(lambda: recorder.shed_by["write_stalled"] == 1, "the stalled write", 5)
        await until(lambda: recorder.open_now == 0, "the connection closed")
        sock.close()


async def test_request_heads_beyond_the_bounds_are_refused_and_counted_not_logged() -> None:
    headers = b"".join(b"X-%d: 1\r\n" % n for n in range(40))
    heads = [
        b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n",  # the request line
        b"GET /healthz HTTP/1.1\r\n" + headers + b"\r\n",  # the number of headers
        b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n",  # one header
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # not HTTP at all
    ]
    with capture_logs() as logs:
        async with serving(Recorder()) as port:
            for head in heads:
                client = await Client.open(port, head)
                assert status(await client.response()) == 400
                await client.close()
    # Summary lines (the first at once, the rest at the stop), never a line or a traceback per
    # request.
    assert {entry["event"] for entry in logs} == {"http_overload"}
    assert len(logs) <= 2
    assert sum(entry["bad_request"] for entry in logs) == 4


async def test_a_failing_handler_is_logged_once_with_its_traceback_then_counted() -> None:
    def broken() -> bytes:
        raise RuntimeError("a bug in the exposition")

    with capture_logs() as logs:
        async with serving(Recorder(), exposition=broken) as port:
            for _ in range(5):
                assert (await get(port, "/metrics"))[0] == 500
    failed = [entry for entry in logs if entry["event"] == "http_handler_failed"]
    assert len(failed) == 1
    assert failed[0]["exc_info"][0] is RuntimeError
    overloads = [entry for entry in logs if entry["event"] == "http_overload"]
    assert sum(entry["handler_error"] for entry in overloads) == 5
    assert len(logs) == 1 + len(overloads) <= 3


async def test_readyz_lists_each_reason_once_as_a_code_and_a_fixed_sentence() -> None:
    reasons: list[list[NotReady]] = [[NotReady.AMI_NOT_LIVE], [NotReady.SPOOL_FULL]]
    providers: list[http.Readiness] = [
        lambda: reasons[0],
        lambda: reasons[1],
        lambda: reasons[0],
    ]
    async with serving(Recorder(), readiness=providers) as port:
        status, text = await get(port, "/readyz")
        assert status == 503
        assert json.loads(text) == {
            "ready": False,
            "reasons": [
                {"code": "ami_not_live", "text": NotReady.AMI_NOT_LIVE.text},
                {"code": "spool_full", "text": NotReady.SPOOL_FULL.text},
            ],
        }
        reasons[:] = [[], []]
        assert await get(port, "/readyz") == (200, '{"ready": true, "reasons": []}')


def test_every_reason_has_a_distinct_code_and_a_sentence() -> None:
    codes = [reason.code for reason in NotReady]
    assert len(set(codes)) == len(codes)
    for reason in NotReady:
        assert reason.code.isidentifier()
        assert reason.code.islower()
        assert reason.text[0].isupper()
        assert reason.text.endswith(".")


async def test_out_of_descriptors_pauses_accepting_logs_one_line_and_then_serves() -> None:
    recorder = Recorder()
    async with serving(recorder) as port:
        loop = asyncio.get_running_loop()
        clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
        for client in clients:
            client.setblocking(False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers: list[int] = []
        with capture_logs() as logs:
            try:
                # No descriptor left: the limit just above the highest in use, every gap filled.
                highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
                resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
                with pytest.raises(OSError, match="Too many open files"):  # noqa: PT012
                    while True:
                        fillers.append(os.open(os.devnull, os.O_RDONLY))
                for client in clients:
                    assert client.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
                await until(lambda: recorder.failed["descriptors"] >= 1, "a failed accept")
                # Paused, not spinning on the readable socket: one failure per pause.
                await asyncio.sleep(0.3)
                assert recorder.failed == {"descriptors": 1}
            finally:
                for fd in fillers:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for client in clients:
                await loop.sock_sendall(client, REQUEST)
                head = await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
                assert head.startswith(b"HTTP/1.1 200")
                client.close()
        overloads = [entry for entry in logs if entry["event"] == "http_overload"]
        assert len(overloads) == 1
        assert overloads[0]["log_level"] == "error"
        assert overloads[0]["accept_failed_descriptors"] == 1
        assert overloads[0]["open_files_limit"] == highest + 1


async def test_the_metrics_observer_counts_what_the_listener_reports() -> None:
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    async with serving(metrics, max_connections=1, header_timeout=30) as port:
        held = await Client.open(port)
        await until(
            lambda: registry.get_sample_value("hotline_http_connections") == 1, "one served"
        )
        refused = await Client.open(port)
        assert await refused.closed_within(2)
        await held.close()
        await refused.close()
    assert registry.get_sample_value("hotline_http_connections_max") == 1
    shed = registry.get_sample_value("hotline_http_connections_shed_total", {"reason": "limit"})
    assert shed == 1
    assert (
        registry.get_sample_value("hotline_http_accept_errors_total", {"kind": "descriptors"}) == 0
    )


def test_the_daemon_raises_its_soft_descriptor_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
