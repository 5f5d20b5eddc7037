"""Who is asking: a bearer token (its SHA-256 against every configured hash, in constant time) or a
console session (an HttpOnly, SameSite=Strict cookie naming a session in memory); failed
attempts counted and limited per source address; cookie-authenticated writes checked against
cross-site requests (Origin or Sec-Fetch-Site, and the session's CSRF token in a header)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from aiohttp import web

from hotline.config import ApiToken
from hotline.core.access import AuthFailure, match_token
from hotline.core.supervision import Role

COOKIE: Final = "hotline_session"
CSRF_HEADER: Final = "X-CSRF-Token"
_WINDOW_S: Final = 60.0
# Bounds on what strangers can make the daemon remember.
_MAX_SOURCES: Final = 10_000
_MAX_SESSIONS: Final = 1_000


class AuthObserver(Protocol):
    """What the API reports; metrics implement it."""

    def auth_failed(self, reason: AuthFailure) -> None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a token, and how they presented it."""

    name: str
    role: Role
    session: Session | None = None  # None: a bearer token


@dataclass(slots=True)
class Session:
    name: str
    role: Role
    csrf: str = field(repr=False)
    expires: float  # monotonic


class Refused(Exception):
    """The request is refused before its handler: status, stable code, sentence."""

    def __init__(
        self, status: int, code: AuthFailure, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Gate:
    """Tokens, sessions and the failure limit of one listener."""

    def __init__(
        self,
        tokens: Sequence[ApiToken],
        failures_per_minute: int,
        session_idle_s: float,
        observer: AuthObserver,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._holders = [(token.sha256, token) for token in tokens]
        self._limit = failures_per_minute
        self._idle_s = session_idle_s
        self._observer = observer
        self._clock = clock
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # source -> window
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    # -- tokens ------------------------------------------------------------------------------

    def token(self, request: web.Request, presented: str) -> ApiToken:
        """The holder of `presented`, or Refused (401; 429 once the source is over its limit)."""
        source = request.remote or "unknown"
        self.check_limit(source)
        holder = match_token(presented, self._holders)
        if holder is None:
            self._failed(source, "bad_token")
            raise Refused(401, "bad_token", "unknown token")
        return holder

    def check_limit(self, source: str) -> None:
        started, count = self._failures.get(source, (0.0, 0))
        now = self._clock()
        if count >= self._limit and now < started + _WINDOW_S:
            self._observer.auth_failed("rate_limited")
            retry = max(1, int(started + _WINDOW_S - now + 0.999))
            raise Refused(429, "rate_limited", "too many failed attempts", retry_after=retry)

    def _failed(self, source: str, reason: AuthFailure) -> None:
        self._observer.auth_failed(reason)
        now = self._clock()
        started, count = self._failures.pop(source, (now, 0))
        if now >= started + _WINDOW_S:
            started, count = now, 0
        self._failures[source] = (started, count + 1)
        while len(self._failures) > _MAX_SOURCES:
            self._failures.popitem(last=False)

    # -- who is asking -------------------------------------------------------------------------

    def principal(self, request: web.Request, *, write: bool) -> Principal:
        """The bearer token's holder, else the session's; Refused otherwise. A write on a
        session must come from the console's own origin and carry the session's CSRF token."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not presented.strip():
                self._failed(request.remote or "unknown", "bad_token")
                raise Refused(401, "bad_token", "Authorization must be 'Bearer <token>'")
            holder = self.token(request, presented.strip())
            return Principal(holder.name, holder.role)
        session = self._session(request.cookies.get(COOKIE))
        if session is None:
            self._observer.auth_failed("no_credentials")
            raise Refused(401, "no_credentials", "a bearer token or a console session is needed")
        if write:
            if not _same_origin(request):
                self._observer.auth_failed("cross_site")
                raise Refused(403, "cross_site", "cross-site request refused")
            presented = request.headers.get(CSRF_HEADER, "")
            if not secrets.compare_digest(presented.encode(), session.csrf.encode()):
                self._observer.auth_failed("cross_site")
                raise Refused(403, "cross_site", f"missing or wrong {CSRF_HEADER} header")
        return Principal(session.name, session.role, session)

    # -- console sessions ----------------------------------------------------------------------

    def open_session(self, holder: ApiToken) -> tuple[str, Session]:
        """A new session for `holder`: its cookie value (never logged) and the session."""
        self._expire()
        key = secrets.token_urlsafe(32)
        session = Session(holder.name, holder.role, secrets.token_urlsafe(32), 0.0)
        session.expires = self._clock() + self._idle_s
        self._sessions[key] = session
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return key, session

    def close_session(self, request: web.Request) -> None:
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)

    def _session(self, key: str | None) -> Session | None:
        if not key:
            return None
        session = self._sessions.get(key)
        now = self._clock()
        if session is None or session.expires <= now:
            self._sessions.pop(key, None)
            return None
        session.expires = now + self._idle_s
        self._sessions.move_to_end(key)
        return session

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def _same_origin(request: web.Request) -> bool:
    """The browser says the request comes from this origin: Sec-Fetch-Site when it sends it,
    else Origin, which must name this host (a cookie-carrying request without either is no
    browser's form post of ours, and refused)."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is not None and site != "same-origin":
        return False
    if origin is None:
        return site == "same-origin"
    return origin == f"{request.scheme}://{request.host}"
