"""The API's gate, route by route over the route table of its OpenAPI document: no credentials 401,
a role too low or a cross-site write 403, a bad parameter or body 400 naming the field, an unknown
responder, queue, reason or override 404. A route added to the table without its cases fails
here. The supervisor behind the gate is a stand-in that records what reaches it: these requests
must be answered before it is asked anything (the acting side runs for real in
tests/integration/test_api.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hotline.adapters.api import Api, Sources
from hotline.adapters.api.openapi import ROUTES, Route, document
from hotline.config import Config, parse_config
from hotline.core.access import AuthFailure, token_hash
from hotline.core.board import build_board, schedule
from hotline.core.roster import Override, Roster
from hotline.core.supervision import ROLES, Actor, AuditEntry, NotFound, Role

TOKENS: dict[Role, str] = {
    role: secrets.token_urlsafe(24) for role in ("viewer", "supervisor", "admin")
}
TOKEN_LINES = "".join(
    f'    - {{name: {role}-owner, role: {role}, sha256: "{token_hash(t).hex()}"}}\n'
    for role, t in TOKENS.items()
)
CONFIG = f"""
timezone: UTC
ami: {{username: hotline, secret_env: UNUSED}}
http:
  tokens:
{TOKEN_LINES}
  auth_failures_per_minute: 1000
queues:
  crisis: {{min_responders: 1}}
  spanish: {{}}
responders:
  r-ana: {{name: Ana, interface: PJSIP/1001, queues: {{crisis: 0}}}}
"""
FUTURE = (datetime.now(UTC) + timedelta(hours=2)).isoformat()


class StandIn:
    """Records every call; answers an unknown override with NotFound as the service does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def pause(
        self, actor: Actor, responder: str, queue: str | None, reason: str, request_id: str
    ) -> Mapping[str, object]:
        self.calls.append("pause")
        return {"responder": responder}

    async def unpause(
        self, actor: Actor, responder: str, queue: str | None, request_id: str
    ) -> Mapping[str, object]:
        self.calls.append("unpause")
        return {"responder": responder}

    async def add_override(  # noqa: PLR0917 - the service's signature
        self,
        actor: Actor,
        responder: str,
        on: bool,
        queues: list[str] | None,
        until: datetime,
        reason: str | None,
        request_id: str,
    ) -> Override:
        raise AssertionError("add_override reached")

    async def cancel_override(
        self, actor: Actor, override_id: int, reason: str | None, request_id: str
    ) -> None:
        self.calls.append("cancel_override")
        raise NotFound("override", str(override_id))

    async def resync(self, actor: Actor, request_id: str) -> None:
        self.calls.append("resync")

    async def audit(self, limit: int, full: bool) -> list[AuditEntry]:
        self.calls.append("audit")
        return []

    def overrides(self) -> list[Override]:
        return []


class Refusals:
    def __init__(self) -> None:
        self.seen: list[AuthFailure] = []

    def auth_failed(self, reason: AuthFailure) -> None:
        self.seen.append(reason)


STAND_IN = web.AppKey("stand_in", StandIn)


def _calls(client: TestClient[web.Request, web.Application]) -> list[str]:
    assert client.app is not None
    return client.app[STAND_IN].calls


def _board(roster: Roster) -> dict[str, object]:
    now = datetime.now(UTC)
    return build_board({}, schedule(roster, now, frozenset()), now, pause_limits={}, wall=0.0)


def _config() -> Config:
    return parse_config(CONFIG, Path("api.yaml"))


def _app(
    config: Config | None = None,
    board: Callable[[], dict[str, object]] | None = None,
    observer: Refusals | None = None,
) -> web.Application:
    """The API alone, in front of a stand-in supervisor (app[STAND_IN]) and the config's roster."""
    config = config or _config()
    roster = config.roster
    stand_in = StandIn()
    sources = Sources(
        supervisor=stand_in,
        board=board or (lambda: _board(roster)),
        plan=lambda at: {"at": at.isoformat(), "queues": {}},
        roster=lambda: roster,
        now=lambda: datetime.now(UTC),
        pause_reasons=config.pauses.reasons,
        observer=observer or Refusals(),
    )
    app = web.Application()
    Api(config.http, sources).install(app)
    app[STAND_IN] = stand_in
    return app


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(_app())) as test_client:
        yield test_client


def _path(route: Route, **values: str) -> str:
    defaults = {"responder": "r-ana", "queue": "crisis", "override_id": "7"}
    return route.path.format(**(defaults | values))


def _bearer(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


# Per operation: requests (path values, query, body, field) the gate must refuse with 400.
BAD: dict[str, list[tuple[dict[str, str], dict[str, str], Any, str]]] = {
    "get_queue": [({"queue": "no way"}, {}, None, "queue")],
    "get_plan": [
        ({}, {"at": "tomorrow"}, None, "at"),
        ({}, {"at": "0999-01-01T00:00"}, None, "at"),
    ],
    "get_audit": [({}, {"limit": "0"}, None, "limit"), ({}, {"limit": "x"}, None, "limit")],
    "pause": [
        ({}, {}, {}, "reason"),
        ({}, {}, {"reason": 5}, "reason"),
        ({}, {}, {"reason": "break", "extra": 1}, "extra"),
        ({}, {}, {"reason": "break", "queue": "spanish"}, "queue"),
        ({}, {}, "not an object", "body"),
        ({"responder": "r ana"}, {}, {"reason": "break"}, "responder"),
    ],
    "unpause": [({}, {}, {"queue": ""}, "queue"), ({}, {}, [], "body")],
    "add_override": [
        ({}, {}, {"on": True, "until": FUTURE}, "responder"),
        ({}, {}, {"responder": "r-ana", "on": "yes", "until": FUTURE}, "on"),
        ({}, {}, {"responder": "r-ana", "on": True, "until": "2026-01-01T00:00"}, "until"),
        ({}, {}, {"responder": "r-ana", "on": True, "until": "2020-01-01T00:00Z"}, "until"),
        ({}, {}, {"responder": "r-ana", "on": True, "until": FUTURE, "queues": []}, "queues"),
        (
            {},
            {},
            {"responder": "r-ana", "on": True, "until": FUTURE, "queues": ["spanish"]},
            "queues[0]",
        ),
    ],
    "cancel_override": [({"override_id": "x"}, {}, {}, "override_id"), ({}, {}, {"r": 1}, "r")],
    "resync": [({}, {}, {"now": True}, "now")],
    "sign_in": [({}, {}, {}, "token"), ({}, {}, {"token": ""}, "token")],
}
# Per operation: requests the gate (or, for an override, the service) answers with 404.
UNKNOWN: dict[str, list[tuple[dict[str, str], Any]]] = {
    "get_queue": [({"queue": "nosuch"}, None)],
    "pause": [({"responder": "r-nobody"}, {"reason": "break"}), ({}, {"reason": "nap"})],
    "unpause": [({"responder": "r-nobody"}, {}), ({}, {"queue": "nosuch"})],
    "add_override": [({}, {"responder": "r-nobody", "on": False, "until": FUTURE})],
    "cancel_override": [({"override_id": "9999"}, {})],
}
PROTECTED = [r for r in ROUTES if r.role is not None]


def test_every_route_with_a_parameter_or_body_has_its_400_and_404_cases() -> None:
    with_input = {r.operation for r in ROUTES if r.body is not None or r.params}
    assert set(BAD) == with_input
    documented_404 = {r.operation for r in ROUTES if any(s == 404 for s, _ in r.responses)}
    assert set(UNKNOWN) == documented_404
    served = document()["paths"]
    assert isinstance(served, dict)
    assert sum(len(methods) for methods in served.values()) == len(ROUTES)


def test_every_api_route_served_is_in_the_table_and_the_document() -> None:
    app = _app()
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }  # fmt: skip
    table = {(route.method, route.path) for route in ROUTES}
    assert served == table | {("GET", "/api/v1/openapi.json")}


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: r.operation)
async def test_no_credentials_or_a_bad_token_is_401(
    client: TestClient[web.Request, web.Application], route: Route
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        response = await client.request(route.method, _path(route), headers=headers, json={})
        assert response.status == 401, headers
        assert (await response.json())["error"] in ("no_credentials", "bad_token")
    assert _calls(client) == []


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: r.operation)
async def test_a_role_too_low_or_a_cross_site_write_is_403(
    client: TestClient[web.Request, web.Application], route: Route
) -> None:
    assert route.role is not None
    for role in ROLES[: ROLES.index(route.role)]:
        response = await client.request(route.method, _path(route), headers=_bearer(role), json={})
        assert response.status == 403, role
        assert (await response.json())["error"] == "no_role"
    # A session cookie with a forged Origin, or without the CSRF header, writes nothing.
    signed = await client.post("/api/v1/session", json={"token": TOKENS["admin"]})
    csrf = (await signed.json())["csrf"]
    if route.method != "GET":
        forged = {"Origin": "http://evil.example", "X-CSRF-Token": csrf}
        for headers in (forged, {"Origin": str(client.make_url("")).rstrip("/")}):
            response = await client.request(route.method, _path(route), headers=headers, json={})
            assert response.status == 403, headers
            assert (await response.json())["error"] == "cross_site"
    else:
        response = await client.request(route.method, _path(route), headers={}, json=None)
        assert response.status != 403
    assert _calls(client) in ([], ["audit"])


@pytest.mark.parametrize("operation", sorted(BAD))
async def test_a_bad_parameter_or_body_is_400_naming_the_field(
    client: TestClient[web.Request, web.Application], operation: str
) -> None:
    route = next(r for r in ROUTES if r.operation == operation)
    for values, query, body, field in BAD[operation]:
        response = await client.request(
            route.method,
            _path(route, **values),
            params=query,
            headers=_bearer("admin"),
            data=json.dumps(body) if body is not None else None,
        )
        answer = await response.json()
        assert (response.status, answer.get("field")) == (400, field), (values, query, body)
    assert _calls(client) == []
    if route.body is not None:
        garbage = await client.request(
            route.method, _path(route), headers=_bearer("admin"), data=b"{not json"
        )
        assert garbage.status == 400
        assert (await garbage.json())["field"] == "body"
        assert _calls(client) == []


@pytest.mark.parametrize("operation", sorted(UNKNOWN))
async def test_an_unknown_responder_queue_reason_or_override_is_404(
    client: TestClient[web.Request, web.Application], operation: str
) -> None:
    route = next(r for r in ROUTES if r.operation == operation)
    for values, body in UNKNOWN[operation]:
        response = await client.request(
            route.method, _path(route, **values), headers=_bearer("supervisor"), json=body
        )
        assert response.status == 404, (values, body)
        assert (await response.json())["error"].startswith("unknown_")
    expected = ["cancel_override"] if operation == "cancel_override" else []
    assert _calls(client) == expected


async def test_failed_attempts_are_limited_per_source_with_retry_after() -> None:
    config = parse_config(
        CONFIG.replace("auth_failures_per_minute: 1000", "auth_failures_per_minute: 3"),
        Path("api.yaml"),
    )
    refusals = Refusals()
    async with TestClient(TestServer(_app(config, observer=refusals))) as test_client:
        for _ in range(3):
            response = await test_client.get("/api/v1/board", headers={"Authorization": "Bearer x"})
            assert response.status == 401
        # Over the limit, even the right token is refused until the minute is over.
        response = await test_client.get("/api/v1/board", headers=_bearer("admin"))
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        signed = await test_client.post("/api/v1/session", json={"token": TOKENS["admin"]})
        assert signed.status == 429
    assert refusals.seen == ["bad_token"] * 3 + ["rate_limited"] * 2


async def test_a_session_cookie_is_httponly_strict_and_reads_and_writes_with_its_csrf_token(
    client: TestClient[web.Request, web.Application],
) -> None:
    signed = await client.post("/api/v1/session", json={"token": TOKENS["supervisor"]})
    assert signed.status == 200
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure (test_api.py)
    session = await signed.json()
    assert session["name"] == "supervisor-owner"
    assert (await client.get("/api/v1/board")).status == 200
    origin = str(client.make_url("")).rstrip("/")
    headers = {"Origin": origin, "X-CSRF-Token": session["csrf"]}
    response = await client.post("/api/v1/resync", headers=headers, json={})
    assert response.status == 200
    assert _calls(client) == ["resync"]
    out = await client.delete("/api/v1/session", headers=headers)
    assert out.status == 200
    client.session.cookie_jar.update_cookies(signed.cookies)  # the old cookie, kept by a thief
    assert (await client.get("/api/v1/board")).status == 401


async def test_request_ids_are_echoed_or_made_and_errors_never_carry_a_traceback(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/api/v1/board", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    response = await client.get("/api/v1/board", headers={"X-Request-Id": "bad id\u00e9"})
    assert len(response.headers["X-Request-Id"]) == 32
    body = await response.text()
    assert "Traceback" not in body
    assert json.loads(body)["error"] == "no_credentials"


async def test_a_body_larger_than_16_kib_is_refused_in_whatever_pieces_it_comes(
    client: TestClient[web.Request, web.Application],
) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"reason": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    response = await client.post(
        "/api/v1/overrides/1/cancel", headers=_bearer("supervisor"), data=pieces()
    )
    assert response.status == 400
    assert (await response.json())["field"] == "body"
    small = b'{"reason": "' + b"y" * 150 + b'"}'

    async def slow() -> AsyncIterator[bytes]:
        for start in range(0, len(small), 7):
            yield small[start : start + 7]

    response = await client.post(
        "/api/v1/overrides/1/cancel", headers=_bearer("supervisor"), data=slow()
    )
    assert response.status == 404  # read whole, valid, and the stand-in knows no override 1
    assert _calls(client) == ["cancel_override"]


async def test_the_event_stream_sends_the_board_and_ends_when_the_listener_stops() -> None:
    test_client = TestClient(TestServer(_app()))
    await test_client.start_server()
    response = await test_client.get("/api/v1/board/events", headers=_bearer("viewer"))
    assert response.headers["Content-Type"] == "text/event-stream"
    first = await response.content.readuntil(b"\n\n")
    event, data = first.decode().strip().split("\n")
    assert event == "event: board"
    assert [q["name"] for q in json.loads(data.removeprefix("data: "))["queues"]] == [
        "crisis",
        "spanish",
    ]
    second = await response.content.readuntil(b"\n\n")
    assert second.startswith(b"event: board\n")
    loop = asyncio.get_running_loop()
    started = loop.time()
    # The server stops while the client still listens: the stream ends at once, rather than
    # hold the shutdown until its timeout cancels the handler.
    await test_client.server.close()
    assert loop.time() - started < 1.0
    await test_client.close()


async def test_an_unforeseen_failure_never_shows_its_traceback_or_its_text() -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("secret detail of a bug")

    async with TestClient(TestServer(_app(board=broken))) as test_client:
        response = await test_client.get("/api/v1/board", headers=_bearer("viewer"))
        body = await response.text()
    assert response.status == 500
    assert "Traceback" not in body
    assert "secret detail" not in body
