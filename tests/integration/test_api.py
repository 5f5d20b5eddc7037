"""The supervision API over HTTP against a real Asterisk and a real Postgres, the daemon in-process:
a pause with a reason reaches Asterisk and the audit trail names the token's owner; overrides
and their refusals; the served OpenAPI document fuzzed by schemathesis (no 500, no response
outside the document); the listener over TLS."""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from hotline import daemon
from hotline.adapters.api.openapi import ROUTES
from hotline.config import parse_config
from hotline.core.access import token_hash
from tests.conftest import launch
from tests.harness import AmiTestClient, ManualClock, Pbx, free_port, local, wait_for
from tests.integration.conftest import Recorded

NY = ZoneInfo("America/New_York")
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=NY)
ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 2}}
  spanish: {{min_responders: 0}}
responders:
  r-ana: {{name: Ana Ruiz, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-ben: {{name: Ben Ode, interface: "{local(1002)}", queues: {{crisis: 0, spanish: 1}}}}
  r-cai: {{name: Cai Lin, interface: "{local(1003)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-ana, r-ben]}}
"""
ON_DUTY = {"crisis": ["r-ana", "r-ben"], "spanish": ["r-ben"]}


@dataclass(frozen=True)
class Tokens:
    viewer: str
    supervisor: str
    admin: str

    def lines(self) -> str:
        owners = (("vic", "viewer"), ("sam", "supervisor"), ("ada", "admin"))
        return "".join(
            f'    - {{name: {name}, role: {role}, sha256: "{_hash(getattr(self, role))}"}}\n'
            for name, role in owners
        )


@dataclass(frozen=True)
class Running:
    daemon: daemon.Daemon
    base: str  # http(s)://127.0.0.1:port
    tokens: Tokens

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self.tokens, role)}"}


def _hash(token: str) -> str:
    return token_hash(token).hex()


ApiDaemon = Callable[..., Awaitable[Running]]


@pytest.fixture
async def api_daemon(pbx: Pbx, tmp_path: Path) -> AsyncIterator[ApiDaemon]:
    """In-process daemons on the test PBX whose listener serves the API with three tokens (and
    TLS when asked)."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        clock: ManualClock,
        extra: str = "",
        tls: tuple[Path, Path] | None = None,
        http: str = "",
        roster: str = ROSTER,
    ) -> Running:
        secret_file = tmp_path / "ami-secret"
        secret_file.write_text(pbx.secret)
        secret_file.chmod(0o600)
        tokens = Tokens(*(secrets.token_urlsafe(32) for _ in range(3)))
        port = free_port()
        tls_line = f"  tls: {{cert_file: {tls[0]}, key_file: {tls[1]}}}\n" if tls else ""
        text = (
            f"ami: {{host: 127.0.0.1, port: {pbx.ami_port}, username: hotline,"
            f" secret_file: {secret_file}, ping_interval: 1, ping_timeout: 1}}\n"
            f'http:\n  listen: "127.0.0.1:{port}"\n{tls_line}{http}  tokens:\n{tokens.lines()}'
            + extra
            + roster
        )
        config = parse_config(text, tmp_path / "hotline.yaml")
        hotline, stop, task = await launch(config, clock)
        running.append((stop, task))
        scheme = "https" if tls else "http"
        return Running(hotline, f"{scheme}://127.0.0.1:{port}", tokens)

    yield start
    for stop, task in running:
        stop.set()
        await task


async def _paused_reasons(ami: AmiTestClient) -> dict[tuple[str, str], str | None]:
    """(queue, member name) -> the pause reason Asterisk shows, None when not paused."""
    return {(m.queue, m.name): m.paused_reason if m.paused else None for m in await ami.members()}


async def test_a_pause_with_a_reason_reaches_asterisk_and_the_audit_names_the_token_owner(
    recorded: Recorded, ami: AmiTestClient, api_daemon: ApiDaemon
) -> None:
    hotline = await api_daemon(ManualClock(NOON), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == ON_DUTY, 10, "the day shift in Asterisk")
    async with aiohttp.ClientSession(base_url=hotline.base) as http:
        url = "/api/v1/responders/r-ana/pause"
        body = {"reason": "break", "queue": "crisis"}
        headers = hotline.bearer("supervisor") | {"X-Request-Id": "req-pause-1"}
        async with http.post(url, json=body, headers=headers) as response:
            answer = await response.json()
            assert response.status == 200, answer
            assert response.headers["X-Request-Id"] == "req-pause-1"
        assert answer["result"]["paused"] is True

        reasons = await _paused_reasons(ami)
        assert reasons[("crisis", "r-ana")] == "break"
        assert reasons[("crisis", "r-ben")] is None

        # The board shows it, with the reason and its limit.
        async def member() -> dict[str, object]:
            async with http.get("/api/v1/queues/crisis", headers=hotline.bearer("viewer")) as r:
                queue = await r.json()
            return next(m for m in queue["members"] if m["responder"] == "r-ana")

        shown = await wait_for(member, lambda m: m["state"] == "paused", 5, "paused on the board")
        assert shown["paused_reason"] == "break"
        assert isinstance(shown["paused_for_s"], int)
        assert shown["over_limit"] is False

        # The audit row, in Postgres, names the token's owner and the request.
        audit = recorded.select(
            "SELECT row_to_json(a) FROM (SELECT actor, role, action, target, reason, request_id "
            "FROM hotline.audit) a"
        )
        assert audit == [
            {
                "actor": "sam",
                "role": "supervisor",
                "action": "pause",
                "target": "responder r-ana in crisis",
                "reason": "break",
                "request_id": "req-pause-1",
            }
        ]
        # And a hotline.pauses row has the reason.
        pauses = await wait_for(
            lambda: asyncio.to_thread(
                recorded.cluster.psql,
                "SELECT responder || ':' || reason FROM hotline.pauses",
                recorded.database,
            ),
            lambda out: "r-ana:break" in out,
            10,
            "the pause recorded",
        )
        assert "r-ana:break" in pauses

        # Admin reads the audit trail in full; a supervisor without before and after; a viewer not.
        async with http.get("/api/v1/audit", headers=hotline.bearer("admin")) as response:
            full = (await response.json())["entries"]
        assert full[0]["actor"] == "sam"
        assert full[0]["after"] == {"crisis": {"paused": True, "reason": "break"}}
        async with http.get("/api/v1/audit", headers=hotline.bearer("supervisor")) as response:
            brief = (await response.json())["entries"]
        assert brief[0]["actor"] == "sam"
        assert "after" not in brief[0]
        async with http.get("/api/v1/audit", headers=hotline.bearer("viewer")) as response:
            assert response.status == 403

        # Unpause in all queues: Asterisk shows nobody paused.
        url = "/api/v1/responders/r-ana/unpause"
        async with http.post(url, json={}, headers=hotline.bearer("admin")) as response:
            assert response.status == 200
        assert (await _paused_reasons(ami))[("crisis", "r-ana")] is None


async def test_overrides_through_the_api_and_the_refusals_of_the_service(
    recorded: Recorded, ami: AmiTestClient, api_daemon: ApiDaemon
) -> None:
    hotline = await api_daemon(ManualClock(NOON), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == ON_DUTY, 10, "the day shift in Asterisk")
    supervisor = hotline.bearer("supervisor")
    async with aiohttp.ClientSession(base_url=hotline.base) as http:
        until = (NOON + timedelta(hours=2)).isoformat()
        body = {"responder": "r-ben", "on": False, "until": until, "reason": "unwell"}
        async with http.post("/api/v1/overrides", json=body, headers=supervisor) as response:
            created = await response.json()
            assert response.status == 201, created
        assert created["responder"] == "r-ben"
        assert created["on"] is False
        await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 5, "r-ben taken off")
        async with http.get("/api/v1/overrides", headers=hotline.bearer("viewer")) as response:
            listed = (await response.json())["overrides"]
        assert [o["id"] for o in listed] == [created["id"]]
        async with http.get("/api/v1/board", headers=hotline.bearer("viewer")) as response:
            board = await response.json()
        assert [o["id"] for o in board["overrides"]] == [created["id"]]
        crisis = next(q for q in board["queues"] if q["name"] == "crisis")
        assert crisis["covered"] is False  # one present, two needed

        cancel = f"/api/v1/overrides/{created['id']}/cancel"
        async with http.post(cancel, json={"reason": "better"}, headers=supervisor) as response:
            assert response.status == 200
        await wait_for(ami.names, lambda n: n == ON_DUTY, 5, "r-ben back")
        async with http.post(cancel, json={}, headers=supervisor) as response:
            assert response.status == 409
            assert (await response.json())["error"] == "conflict"
        async with http.post("/api/v1/overrides/424242/cancel", headers=supervisor) as response:
            assert response.status == 404
        # Asterisk refuses to pause a responder who is not a member: the reason is passed on.
        url = "/api/v1/responders/r-cai/pause"
        async with http.post(url, json={"reason": "admin"}, headers=supervisor) as response:
            refused = await response.json()
            assert response.status == 409, refused
        assert refused["error"] == "pbx_refused"
        assert refused["message"]
        async with http.get("/api/v1/plan?at=2026-12-02T21:00", headers=supervisor) as response:
            plan = await response.json()
        assert plan["queues"]["crisis"] == []
        async with http.post("/api/v1/resync", headers=supervisor) as response:
            assert response.status == 200


async def test_the_served_openapi_document_survives_a_fuzz_run_without_a_500_or_a_violation(
    recorded: Recorded, ami: AmiTestClient, api_daemon: ApiDaemon, tmp_path: Path
) -> None:
    hotline = await api_daemon(
        ManualClock(NOON), extra=recorded.config, http="  auth_failures_per_minute: 10000\n"
    )
    await wait_for(ami.names, lambda n: n == ON_DUTY, 10, "the day shift in Asterisk")
    st = Path(sys.executable).parent / "st"
    command = [
        str(st), "run", f"{hotline.base}/api/v1/openapi.json",
        "--url", hotline.base,
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,negative_data_rejection",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "25",
        "--seed", "10",
        "--workers", "1",
        "--exclude-path", "/api/v1/board/events",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--no-color",
        "-H", f"Authorization: Bearer {hotline.tokens.admin}",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    try:
        async with asyncio.timeout(170):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
    # Every operation of the document but the endless event stream was run.
    assert f"Tested: {len(ROUTES) - 1}" in text, text[-3000:]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "http.crt", directory / "http.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


async def test_the_listener_serves_tls_with_a_secure_session_cookie(
    ami: AmiTestClient, api_daemon: ApiDaemon, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    hotline = await api_daemon(ManualClock(NOON), tls=(cert, key), http="  header_timeout: 1\n")
    context = ssl.create_default_context(cafile=str(cert))
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(base_url=hotline.base, connector=connector) as http:
        async with http.get("/healthz") as response:
            assert response.status == 200
        async with http.get("/api/v1/board", headers=hotline.bearer("viewer")) as response:
            assert response.status == 200
            assert {q["name"] for q in (await response.json())["queues"]} == {"crisis", "spanish"}
        async with http.post("/api/v1/session", json={"token": hotline.tokens.viewer}) as response:
            assert response.status == 200
            cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie
        assert "HttpOnly" in cookie
    # Plain HTTP to the TLS port gets no answer; a client that never completes the handshake
    # is closed after header_timeout (1 s here), and its slot is free again.
    port = int(hotline.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    assert not data.startswith(b"HTTP/1.1 200")
    writer.close()
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(silent_reader.read(), 10) == b""
    assert asyncio.get_running_loop().time() - started < 5
    silent.close()
    registry = hotline.daemon.metrics.registry

    async def serving() -> float | None:
        return registry.get_sample_value("hotline_http_connections")

    await wait_for(serving, lambda n: n == 0, 5, "every slot free")
