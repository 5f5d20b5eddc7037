"""Logging, set up once per process (docs/security.md, "Logs").

Every line on stderr goes through one pipeline: hotline's structlog events and the stdlib records
of every library (panoramisk, aiohttp, asyncio, asyncpg, Python's warnings), and uncaught
exceptions too. It renders one JSON object per line (readable colours on a terminal), replaces
fields whose names say they could carry a caller's number or a secret, and scrubs secrets out of
every text it writes, message and traceback included: AMI's `Secret:` header, `secret=` and
`password=` assignments, a URL's password, and any secret value the daemon has read (`conceal`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from json import dumps
from types import TracebackType
from typing import Any
from urllib.parse import quote

import structlog

REDACTED = "[redacted]"
# Field names (lower-cased substrings) whose values never reach a log line.
_REDACT = ("callerid", "connectedline", "exten", "secret", "password", "channel")
# Libraries that speak at WARNING and above only (panoramisk's INFO lines repeat actions, and
# aiohttp's and asyncpg's say nothing an operator acts on), unless the level asked is lower.
_LIBRARIES = ("panoramisk", "aiohttp", "asyncio", "asyncpg", "py.warnings")
# `Secret: x` (an AMI action as text), `'Secret': 'x'` (its repr), `secret=x`, `password = "x"`:
# the value, quoted or up to the next whitespace, whatever the case of the name.
_ASSIGNED = re.compile(
    r"""((?:secret|password|passwd)['"]?\s*[:=]\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""",
    re.IGNORECASE,
)
# The password of a URL: scheme://user:password@host.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):[^\s/@]*@")
# Secret values the daemon has read, in every form they could be written in; longest first, so
# a secret that contains another is replaced whole.
_known: list[str] = []
_MAX_DEPTH = 4


def conceal(*secrets: str) -> None:
    """Never write these values to a log line, whatever carries them: a message, an argument of a
    library's record, a traceback."""
    forms = set(_known)
    for secret in secrets:
        if secret:
            # As it is, URL-quoted (in a DSN), and with backslashes doubled (in a repr).
            forms |= {secret, quote(secret, safe=""), secret.replace("\\", "\\\\")}
    _known[:] = sorted(forms, key=len, reverse=True)


def scrub_text(text: str) -> str:
    """`text` without any secret it carries."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _ASSIGNED.sub(lambda match: match[1] + REDACTED, text)
    return _URL_PASSWORD.sub(lambda match: f"{match[1]}:{REDACTED}@", text)


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        lowered = key.lower()
        if any(word in lowered for word in _REDACT):
            event[key] = REDACTED
    return event


def scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every value as it will be written (objects as their repr), without secrets. Runs after
    tracebacks are rendered to text, so they are scrubbed too."""
    for key, value in event.items():
        event[key] = _scrubbed(value, 0)
    return event


def _scrubbed(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, list | tuple | set | frozenset):
            return [_scrubbed(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {str(k): _scrubbed(v, depth + 1) for k, v in value.items()}
    return scrub_text(repr(value))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler for whatever sys.stderr is when a record is written."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        # A record that cannot be formatted (arguments that do not fit its message, a failing
        # __repr__): one fixed line instead of logging's own report, which prints the message
        # and its arguments as they are.
        line = {"event": "log_record_unformattable", "logger": record.name, "level": "error"}
        with contextlib.suppress(Exception):
            sys.stderr.write(dumps(line) + "\n")


def configure(level: str = "info", json: bool | None = None) -> None:
    """Route structlog and the stdlib's root logger to stderr through the one pipeline."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    threshold: int = logging.getLevelName(level.upper())
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Records of other libraries: their message with its arguments, then as ours.
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                structlog.processors.format_exc_info,
                scrub,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread


def _uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    """An exception nobody caught: logged through the pipeline, so scrubbed and one line."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    log = structlog.get_logger("hotline")
    log.critical("uncaught_exception", exc_info=(kind, value, traceback))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    structlog.get_logger("hotline").critical(
        "uncaught_exception",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
