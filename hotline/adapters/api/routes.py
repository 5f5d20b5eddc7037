"""The handlers of the API and the console, each behind the route table of the OpenAPI document:
one wrapper per route gives the request its id, checks who is asking and their role, validates
the parameters and body against the document, and turns each refusal of the supervisor into its
status. Unknown responders, queues and reasons are found here from the configuration, so a 404
never depends on what Asterisk says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Final, Protocol

import structlog
from aiohttp import web

from hotline.adapters.api import openapi
from hotline.adapters.api.auth import COOKIE, AuthObserver, Gate, Principal, Refused
from hotline.adapters.api.openapi import ROUTES, Route
from hotline.adapters.api.validate import Invalid, check, instant
from hotline.config import HttpSettings, PauseReason
from hotline.core.access import allows
from hotline.core.board import override_json
from hotline.core.roster import Override, Roster, resolve_local
from hotline.core.supervision import (
    ActionRefused,
    Actor,
    AuditEntry,
    Conflict,
    NotFound,
    PbxRefused,
    Unavailable,
)

log = structlog.get_logger("hotline.api")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_MAX_BODY = 16 * 1024
_EVENTS_EVERY_S = 1.0
_AUDIT_DEFAULT = 50
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
# The console's files, served from the package: nothing from anywhere else.
_STATIC: Final = {
    "console.css": "text/css",
    "console.js": "text/javascript",
}
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Supervising(Protocol):
    """What the API asks of the supervision service (hotline/app/supervisor.py)."""

    async def pause(
        self, actor: Actor, responder: str, queue: str | None, reason: str, request_id: str
    ) -> Mapping[str, object]: ...

    async def unpause(
        self, actor: Actor, responder: str, queue: str | None, request_id: str
    ) -> Mapping[str, object]: ...

    async def add_override(  # noqa: PLR0917 - the service's call, one argument per field
        self,
        actor: Actor,
        responder: str,
        on: bool,
        queues: list[str] | None,
        until: datetime,
        reason: str | None,
        request_id: str,
    ) -> Override: ...

    async def cancel_override(
        self, actor: Actor, override_id: int, reason: str | None, request_id: str
    ) -> None: ...

    async def resync(self, actor: Actor, request_id: str) -> None: ...

    async def audit(self, limit: int, full: bool) -> list[AuditEntry]: ...

    def overrides(self) -> list[Override]: ...


@dataclass(frozen=True)
class Sources:
    """What the API reads and acts on, wired by the daemon."""

    supervisor: Supervising
    board: Callable[[], dict[str, object]]  # the live board now, JSON-ready
    plan: Callable[[datetime], Mapping[str, object]]  # `hotline plan --json` at an instant
    roster: Callable[[], Roster]  # the roster in force
    now: Callable[[], datetime]  # the roster's clock
    pause_reasons: Mapping[str, PauseReason]
    observer: AuthObserver


Handler = Callable[["Call"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Call:
    """One request, past the gate: who asks, its id, and its validated body."""

    request: web.Request
    principal: Principal
    request_id: str
    body: dict[str, object]

    @property
    def actor(self) -> Actor:
        return Actor(self.principal.name, self.principal.role)


class Api:
    def __init__(self, settings: HttpSettings, sources: Sources) -> None:
        self.sources = sources
        self.secure = settings.tls is not None
        self.gate = Gate(
            settings.tokens,
            settings.auth_failures_per_minute,
            settings.session_idle_s,
            sources.observer,
        )
        self._document = json.dumps(openapi.document()).encode()
        self._stopping = asyncio.Event()

    def install(self, app: web.Application) -> None:
        """Add every route of the table, the document and the console to `app`."""
        handlers: Mapping[str, Handler] = {
            "get_board": self.get_board,
            "board_events": self.board_events,
            "get_queue": self.get_queue,
            "get_plan": self.get_plan,
            "get_pause_reasons": self.get_pause_reasons,
            "get_responders": self.get_responders,
            "get_overrides": self.get_overrides,
            "get_audit": self.get_audit,
            "pause": self.pause,
            "unpause": self.unpause,
            "add_override": self.add_override,
            "cancel_override": self.cancel_override,
            "resync": self.resync,
            "sign_in": self.sign_in,
            "get_session": self.get_session,
            "sign_out": self.sign_out,
        }
        for route in ROUTES:
            app.router.add_route(
                route.method, route.path, self._wrap(route, handlers[route.operation])
            )
        app.router.add_get("/api/v1/openapi.json", self.openapi_document)
        app.router.add_get("/console", self.console_page)
        app.router.add_get("/console/{file}", self.console_file)
        app.on_shutdown.append(self._stop_streams)

    # -- the gate ------------------------------------------------------------------------------

    def _wrap(
        self, route: Route, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            presented = request.headers.get("X-Request-Id", "")
            request_id = presented if _REQUEST_ID.fullmatch(presented) else uuid.uuid4().hex
            try:
                response = await self._handle(route, handler, request, request_id)
            except Refused as refused:
                response = _error(refused.status, refused.code, refused.message)
                if refused.retry_after is not None:
                    response.headers["Retry-After"] = str(refused.retry_after)
            except Invalid as invalid:
                response = _error(400, "bad_request", invalid.message, invalid.field)
            except NotFound as missing:
                response = _error(404, f"unknown_{missing.kind}", str(missing))
            except Conflict as conflict:
                response = _error(409, "conflict", str(conflict))
            except PbxRefused as refused_by_pbx:
                # Asterisk refuses what its state does not allow (e.g. "Interface not found":
                # not a member now); its own words say why.
                response = _error(409, "pbx_refused", str(refused_by_pbx))
            except Unavailable as unavailable:
                response = _error(503, "unavailable", str(unavailable))
            except ActionRefused as other:
                response = _error(409, "refused", str(other))
            if not response.prepared:
                response.headers["X-Request-Id"] = request_id
                response.headers.update(_SECURITY_HEADERS)
            return response

        handle.__name__ = route.operation
        return handle

    async def _handle(
        self, route: Route, handler: Handler, request: web.Request, request_id: str
    ) -> web.StreamResponse:
        write = route.method != "GET"
        if route.role is None:
            # The one open route of the table is the sign-in: nobody is known yet.
            principal = Principal("", "viewer")
        else:
            principal = self.gate.principal(request, write=write)
            if not allows(principal.role, route.role):
                self.sources.observer.auth_failed("no_role")
                raise Refused(403, "no_role", f"the {principal.role} role may not do this")
        for param in route.params:
            name = str(param["name"])
            raw = request.match_info.get(name) if param["in"] == "path" else request.query.get(name)
            if raw is not None:
                schema = param["schema"]
                assert isinstance(schema, dict)
                check(_typed(raw, schema, name), schema, name)
        body: dict[str, object] = {}
        if route.body is not None:
            body = await _json_body(request, route.body)
        return await handler(Call(request, principal, request_id, body))

    # -- reads ----------------------------------------------------------------------------------

    async def get_board(self, _call: Call) -> web.StreamResponse:
        return _json(self.sources.board())

    async def board_events(self, call: Call) -> web.StreamResponse:
        """`board` events until the client goes away or the listener stops; each is the whole
        board (a wall screen that missed one needs nothing but the next)."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "X-Request-Id": call.request_id,
                **_SECURITY_HEADERS,
            }
        )
        await response.prepare(call.request)
        with contextlib.suppress(ConnectionResetError):
            while not self._stopping.is_set():
                data = _encode(self.sources.board())
                await response.write(f"event: board\ndata: {data}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _EVENTS_EVERY_S)
        return response

    async def _stop_streams(self, _app: web.Application) -> None:
        # At stop the event streams end at once rather than hold the listener's shutdown.
        self._stopping.set()

    async def get_queue(self, call: Call) -> web.StreamResponse:
        name = call.request.match_info["queue"]
        queues = self.sources.board()["queues"]
        assert isinstance(queues, list)
        for queue in queues:
            if queue["name"] == name:
                return _json(queue)
        raise NotFound("queue", name)

    async def get_plan(self, call: Call) -> web.StreamResponse:
        text = call.request.query.get("at")
        roster = self.sources.roster()
        if text is None:
            at = self.sources.now()
        else:
            at = instant(text, "at", aware=False)
            if at.utcoffset() is None:
                at = resolve_local(at.date(), at.time(), roster.tz)
        return _json(dict(self.sources.plan(at)))

    async def get_pause_reasons(self, _call: Call) -> web.StreamResponse:
        reasons = [
            {"name": r.name, "max_s": r.max_s, "lift_at_limit": r.lift_at_limit}
            for r in self.sources.pause_reasons.values()
        ]
        return _json({"reasons": reasons})

    async def get_responders(self, _call: Call) -> web.StreamResponse:
        responders = [
            {"id": r.id, "name": r.name, "queues": list(r.queues)}
            for r in self.sources.roster().responders.values()
        ]
        return _json({"responders": responders})

    async def get_overrides(self, _call: Call) -> web.StreamResponse:
        now = self.sources.now()
        tz = self.sources.roster().tz
        overrides = sorted(self.sources.supervisor.overrides(), key=lambda o: (o.end, o.id))
        return _json({"overrides": [override_json(o, tz) for o in overrides if o.end > now]})

    async def get_audit(self, call: Call) -> web.StreamResponse:
        limit = int(call.request.query.get("limit", _AUDIT_DEFAULT))
        # Supervisors see who did what and why; the before and after states are the admin's.
        full = call.principal.role == "admin"
        entries = await self.sources.supervisor.audit(limit, full)
        return _json({"entries": [_audit_json(entry, full) for entry in entries]})

    # -- actions --------------------------------------------------------------------------------

    async def pause(self, call: Call) -> web.StreamResponse:
        responder = self._responder(call)
        queue = self._queue(call.body.get("queue"), responder)
        reason = str(call.body["reason"])
        if reason not in self.sources.pause_reasons:
            raise NotFound("reason", reason)
        result = await self.sources.supervisor.pause(
            call.actor, responder, queue, reason, call.request_id
        )
        return _json({"ok": True, "result": dict(result)})

    async def unpause(self, call: Call) -> web.StreamResponse:
        responder = self._responder(call)
        queue = self._queue(call.body.get("queue"), responder)
        result = await self.sources.supervisor.unpause(
            call.actor, responder, queue, call.request_id
        )
        return _json({"ok": True, "result": dict(result)})

    async def add_override(self, call: Call) -> web.StreamResponse:
        body = call.body
        responder = str(body["responder"])
        roster = self.sources.roster()
        if responder not in roster.responders:
            raise NotFound("responder", responder)
        queues = body.get("queues")
        names: list[str] | None = None
        if isinstance(queues, list):
            names = [str(q) for q in queues]
            for index, name in enumerate(names):
                if name not in roster.queues:
                    raise NotFound("queue", name)
                if name not in roster.responders[responder].queues:
                    raise Invalid(f"queues[{index}]", f"{responder} does not serve {name}")
        until = instant(str(body["until"]), "until", aware=True)
        if until <= self.sources.now():
            raise Invalid("until", "must be in the future")
        reason = body.get("reason")
        override = await self.sources.supervisor.add_override(
            call.actor,
            responder,
            body["on"] is True,
            names,
            until,
            str(reason) if reason is not None else None,
            call.request_id,
        )
        return _json(override_json(override, roster.tz), status=201)

    async def cancel_override(self, call: Call) -> web.StreamResponse:
        override_id = int(call.request.match_info["override_id"])
        reason = call.body.get("reason")
        await self.sources.supervisor.cancel_override(
            call.actor, override_id, str(reason) if reason is not None else None, call.request_id
        )
        return _json({"ok": True})

    async def resync(self, call: Call) -> web.StreamResponse:
        await self.sources.supervisor.resync(call.actor, call.request_id)
        return _json({"ok": True})

    # -- the console's session ----------------------------------------------------------------

    async def sign_in(self, call: Call) -> web.StreamResponse:
        holder = self.gate.token(call.request, str(call.body["token"]))
        key, session = self.gate.open_session(holder)
        response = _json({"name": holder.name, "role": holder.role, "csrf": session.csrf})
        response.set_cookie(
            COOKIE,
            key,
            httponly=True,
            samesite="Strict",
            secure=self.secure,
            path="/",
        )
        log.info("console_signed_in", holder=holder.name, role=holder.role)
        return response

    async def get_session(self, call: Call) -> web.StreamResponse:
        session = call.principal.session
        csrf = session.csrf if session is not None else None
        return _json({"name": call.principal.name, "role": call.principal.role, "csrf": csrf})

    async def sign_out(self, call: Call) -> web.StreamResponse:
        self.gate.close_session(call.request)
        response = _json({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- open routes ----------------------------------------------------------------------------

    async def openapi_document(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._document, content_type="application/json", headers=_SECURITY_HEADERS
        )

    async def console_page(self, _request: web.Request) -> web.Response:
        page = _console_file("index.html")
        return web.Response(body=page, content_type="text/html", headers=_SECURITY_HEADERS)

    async def console_file(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        kind = _STATIC.get(name)
        if kind is None:
            return _error(404, "not_found", "no such file")
        return web.Response(body=_console_file(name), content_type=kind, headers=_SECURITY_HEADERS)

    # -- helpers --------------------------------------------------------------------------------

    def _responder(self, call: Call) -> str:
        responder = call.request.match_info["responder"]
        if responder not in self.sources.roster().responders:
            raise NotFound("responder", responder)
        return responder

    def _queue(self, value: object, responder: str) -> str | None:
        if value is None:
            return None
        queue = str(value)
        roster = self.sources.roster()
        if queue not in roster.queues:
            raise NotFound("queue", queue)
        if queue not in roster.responders[responder].queues:
            raise Invalid("queue", f"{responder} does not serve {queue}")
        return queue


async def _json_body(request: web.Request, schema: str) -> dict[str, object]:
    """The body as JSON, checked against `schema`; an absent body is an empty object."""
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise Invalid("body", f"must be at most {_MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(4096):
        size += len(chunk)
        if size > _MAX_BODY:
            raise Invalid("body", f"must be at most {_MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        value: object = {}
    else:
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise Invalid("body", "is not JSON") from None
    check(value, {"$ref": f"#/components/schemas/{schema}"})
    assert isinstance(value, dict)
    return value


def _typed(raw: str, schema: Mapping[str, object], name: str) -> object:
    """A path or query parameter as the type its schema gives."""
    if schema.get("type") == "integer":
        if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 12:
            raise Invalid(name, "must be a whole number")
        return int(raw)
    return raw


def _encode(body: object) -> str:
    # Compact, and without the check for cycles: these bodies are trees built here.
    return _ENCODER.encode(body)


def _json(body: Mapping[str, object] | Sequence[object], status: int = 200) -> web.Response:
    return web.Response(
        text=_encode(body),
        status=status,
        content_type="application/json",
    )


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body: dict[str, object] = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    return _json(body, status)


def _audit_json(entry: AuditEntry, full: bool) -> dict[str, object]:
    row: dict[str, object] = {
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "target": entry.target,
        "reason": entry.reason,
        "request_id": entry.request_id,
    }
    if full:
        row["before"] = dict(entry.before) if entry.before is not None else None
        row["after"] = dict(entry.after) if entry.after is not None else None
    return row


def _console_file(name: str) -> bytes:
    return resources.files("hotline.adapters.api").joinpath("console", name).read_bytes()
