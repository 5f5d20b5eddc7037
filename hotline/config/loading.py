"""Loading the configuration file: the YAML read with the line of every node, validated against
the model and the checks between sections, then turned into the frozen settings. Every problem
is reported at once, each with its dotted path and line.

A bad file costs little and ends in one line: only a regular file is read, at most MAX_FILE_BYTES
of UTF-8 text; the YAML may nest MAX_DEPTH levels and hold MAX_VALUES values, an alias counting
as many as it stands for (so an alias bomb stops at its first aliases); a number has at most
MAX_NUMBER_CHARS characters."""

from __future__ import annotations

import os
import stat
import types
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError

from hotline.config.checks import cross_section_problems
from hotline.config.problems import (
    ConfigError,
    Loc,
    Problem,
    problem_from,
    render,
    syntax_problem,
)
from hotline.config.schema import (
    AMI_PORT,
    AMI_TLS_PORT,
    ConfigModel,
    DatabaseModel,
    SurgeModel,
    WellbeingModel,
    as_instant,
)
from hotline.config.settings import (
    AmiSettings,
    AmiTlsSettings,
    ApiToken,
    CallSettings,
    Config,
    DatabaseSettings,
    HttpSettings,
    HttpTlsSettings,
    PauseReason,
    PauseSettings,
    PrivacySettings,
    QueueService,
    ReconcileSettings,
    ReportSettings,
    RosterCheckSettings,
    SecretRef,
)
from hotline.core.roster import (
    ExceptionKind,
    QueuePolicy,
    Responder,
    Roster,
    RosterException,
    Shift,
    resolve_local,
)
from hotline.core.surge import Figure, SurgeRule
from hotline.core.wellbeing import WellbeingRule

# Limits on what a configuration file may cost to read. A roster of 2,000 responders, 300 shifts
# and a year of exceptions is well under a megabyte and 100,000 values, and five levels deep.
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_VALUES = 250_000
MAX_DEPTH = 32
MAX_NUMBER_CHARS = 32

_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def load_config(path: Path) -> Config:
    """Read and validate the configuration file at `path`."""
    return parse_config(read_text(path), path)


def read_text(path: Path) -> str:
    """The text of the configuration file at `path`: a regular file (or a link to one) of at
    most MAX_FILE_BYTES of UTF-8 without NUL bytes. Opening never waits (a FIFO with no writer)
    and reading stops one byte past the limit (/dev/zero, a file that grows)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError([f"cannot read the file: {_reason(error)}"], path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next(
                (name for test, name in _NOT_REGULAR if test(info.st_mode)), "a special file"
            )
            raise ConfigError([f"cannot read the file: {kind}, not a regular file"], path)
        # The size is checked before reading and, since a file can grow, while reading.
        data = b"" if info.st_size > MAX_FILE_BYTES else _read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError([f"cannot read the file: {_reason(error)}"], path) from None
    finally:
        os.close(fd)
    if info.st_size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"the file is too large: over {MAX_FILE_BYTES:,} bytes"], path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # Never the error's own text: it quotes the bytes.
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            [f"the file is not UTF-8 text: {error.reason} (line {line})"], path
        ) from None
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ConfigError([f"the file is not text: it holds a NUL byte (line {line})"], path)
    return text


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def parse_config(text: str, path: Path) -> Config:
    """Validate configuration `text`; `path` is where it came from, for messages."""
    problems: list[Problem] = []
    try:
        data, lines, refused = _Document.parse(text, problems)
    except yaml.YAMLError as error:
        raise ConfigError([syntax_problem(error, text)], path) from None
    except _Refused as error:
        raise ConfigError(render([error.problem], {}), path) from None
    if data is None:
        raise ConfigError(["the file is empty (line 1)"], path)
    model: ConfigModel | None = None
    try:
        model = ConfigModel.model_validate(data)
    except ValidationError as error:
        problems += [problem_from(detail, ConfigModel) for detail in error.errors()]
    problems += cross_section_problems(data)
    if refused:
        # A value refused while reading was replaced by None: what validation says of it
        # again would be a second line for the same problem.
        problems = [p for p in problems if p in refused.values() or not _within(p[0], refused)]
    if problems or model is None:
        raise ConfigError(render(problems, lines), path)
    return _convert(model, path)


def _within(loc: Loc, refused: dict[Loc, Problem]) -> bool:
    return any(loc[:length] in refused for length in range(len(loc) + 1))


# --- YAML with line numbers ----------------------------------------------------------------------

_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Events(Protocol):
    """What the document takes from PyYAML's loader (its own annotations leave these untyped)."""

    def get_event(self) -> Any: ...
    def peek_event(self) -> Any: ...
    def check_event(self, *choices: type[yaml.Event]) -> bool: ...
    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str: ...


class _Refused(Exception):
    """The file is past one of the limits: reading on would only cost memory and time."""

    def __init__(self, loc: Loc, message: str, line: int) -> None:
        super().__init__(message)
        self.problem: Problem = (loc, message, line)


def _too_deep(line: int) -> _Refused:
    return _Refused((), f"nested more than {MAX_DEPTH} levels deep", line)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing flow collections nested too deep as soon as it scans them:
    its scanner looks up to 1,024 characters ahead for a key at every level of nesting, which
    costs seconds on a line of brackets long before the document sees the first of them."""

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _too_deep(self.line + 1)
        super().fetch_flow_collection_start(token_class)


class _Document:
    """A YAML document as plain values, with the 1-based line of every node by its path.

    Parsed like `yaml.safe_load`, except that duplicate keys are problems (safe_load silently
    keeps the last) and that three YAML 1.1 surprises stay text: the words `off`, `on`, `yes`,
    `no` (`kind: off` would be False), sexagesimal numbers (`start: 22:00` would be 1320) and
    timestamps (which the schema parses itself, to resolve local times in the roster's zone).

    The values are built straight from the parser's events, with the limits checked as each
    node begins: nesting before it can exhaust the stack, the count of values before they can
    exhaust memory. An alias is the value its anchor built, shared, not a copy; it counts as
    many values as that one holds, since validation walks them all.
    """

    def __init__(self, loader: yaml.SafeLoader, problems: list[Problem]) -> None:
        self._loader = loader
        self._events = cast(_Events, loader)
        self._problems = problems
        self.lines: dict[Loc, int] = {(): 1}
        # Where a value was refused while reading (and replaced by None), with its problem.
        self.refused: dict[Loc, Problem] = {}
        # Each anchor's value and how many values it holds; None while it is being built.
        self._anchors: dict[str, tuple[object, int] | None] = {}
        self._anchor_marks: dict[str, Any] = {}  # where each anchor is, for messages
        self._values = 0
        self._quiet = 0  # inside a node that is skipped (after a problem with its key)

    @classmethod
    def parse(
        cls, text: str, problems: list[Problem]
    ) -> tuple[object, dict[Loc, int], dict[Loc, Problem]]:
        loader = _Loader(text)
        try:
            document = cls(loader, problems)
            return document._stream(), document.lines, document.refused
        finally:
            loader.dispose()

    def _stream(self) -> object:
        loader = self._events
        loader.get_event()  # stream start
        value: object = None
        if not loader.check_event(yaml.StreamEndEvent):
            start = loader.get_event()  # document start
            self.lines[()] = loader.peek_event().start_mark.line + 1
            value, _ = self._node((), 0)
            loader.get_event()  # document end
            if not loader.check_event(yaml.StreamEndEvent):
                event = loader.get_event()
                raise ComposerError(
                    "expected a single document in the stream",
                    start.start_mark,
                    "but found another document",
                    event.start_mark,
                )
        loader.get_event()  # stream end
        return value

    def _node(self, loc: Loc, depth: int) -> tuple[object, int]:
        """The value of the next node, and how many values it holds."""
        event = self._events.get_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event, loc, line)
        anchor = event.anchor
        if anchor is not None:
            self._anchor(anchor, event)
        self._count(1, (), line, "the file holds")
        value: object
        if isinstance(event, yaml.ScalarEvent):
            value, size = self._scalar(event, loc), 1
        elif depth >= MAX_DEPTH:
            raise _too_deep(line)
        elif isinstance(event, yaml.SequenceStartEvent):
            value, size = self._sequence(loc, depth + 1)
        else:
            value, size = self._mapping(loc, depth + 1)
        if anchor is not None:
            self._anchors[anchor] = (value, size)
        return value, size

    def _alias(self, event: Any, loc: Loc, line: int) -> tuple[object, int]:
        anchor = str(event.anchor)
        if anchor not in self._anchors:
            raise ComposerError(None, None, f"found undefined alias {anchor!r}", event.start_mark)
        anchored = self._anchors[anchor]
        if anchored is None:
            self._refuse(loc, "an alias refers to a node that contains it")
            return None, 1
        value, size = anchored
        self._count(size, loc, line, "aliases expand the file to")
        return value, size

    def _anchor(self, anchor: str, event: Any) -> None:
        first = self._anchor_marks.get(anchor)
        if first is not None:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                first,
                "second occurrence",
                event.start_mark,
            )
        self._anchor_marks[anchor] = event.start_mark
        self._anchors[anchor] = None

    def _count(self, values: int, loc: Loc, line: int, what: str) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _Refused(loc, f"{what} more than {MAX_VALUES:,} values", line)

    def _sequence(self, loc: Loc, depth: int) -> tuple[list[object], int]:
        loader = self._events
        items: list[object] = []
        size = 1
        while not loader.check_event(yaml.SequenceEndEvent):
            item = (*loc, len(items))
            if not self._quiet:
                self.lines[item] = loader.peek_event().start_mark.line + 1
            value, values = self._node(item, depth)
            items.append(value)
            size += values
        loader.get_event()
        return items, size

    def _mapping(self, loc: Loc, depth: int) -> tuple[dict[str, object], int]:
        loader = self._events
        mapping: dict[str, object] = {}
        size = 1
        while not loader.check_event(yaml.MappingEndEvent):
            line = loader.peek_event().start_mark.line + 1
            key = self._key(loc, depth, line)
            if key is not None and key in mapping:
                first = self.lines.get((*loc, key), line)
                message = f"duplicate key, already defined on line {first}"
                self._problem(((*loc, key), message, line))
                key = None
            if key is None:
                self._skip(depth)  # the value of a key that cannot be used
                continue
            if not self._quiet:
                self.lines[(*loc, key)] = line
            mapping[key], values = self._node((*loc, key), depth)
            size += 1 + values
        loader.get_event()
        return mapping, size

    def _key(self, loc: Loc, depth: int, line: int) -> str | None:
        """The next key, read; None, with a problem, when it is not a plain name."""
        event = self._events.peek_event()
        if not isinstance(event, yaml.ScalarEvent):
            self._problem((loc, "keys must be plain names", line))
            self._skip(depth)
            return None
        self._events.get_event()
        self._count(1, (), line, "the file holds")
        if self._tag(event) == _MERGE_TAG:
            self._problem((loc, "merge keys (<<) are not supported", line))
            return None
        # Keys are names (responder ids, queues), so `1001` stays the text "1001".
        key = str(event.value)
        if event.anchor is not None:
            self._anchor(event.anchor, event)
            self._anchors[event.anchor] = (key, 1)
        return key

    def _skip(self, depth: int) -> None:
        """Read the next node for its limits and anchors only."""
        self._quiet += 1
        try:
            self._node((), depth)
        finally:
            self._quiet -= 1

    def _scalar(self, event: yaml.ScalarEvent, loc: Loc) -> object:
        text = str(event.value)
        tag = self._tag(event)
        if tag == _STR_TAG:
            return text
        if event.style is None:  # only plain scalars get the YAML 1.1 implicit types
            if tag == _BOOL_TAG and text.lower() not in ("true", "false"):
                return text
            if tag in (_INT_TAG, _FLOAT_TAG) and ":" in text:
                return text
            if tag == _TIMESTAMP_TAG:
                return text
        if tag in (_INT_TAG, _FLOAT_TAG) and len(text) > MAX_NUMBER_CHARS:
            # Python refuses to convert an integer of more than 4,300 digits, and no setting
            # needs a number of more than a few.
            self._refuse(
                loc, f"number too long: {len(text):,} characters, at most {MAX_NUMBER_CHARS}"
            )
            return None
        start: Any = event.start_mark
        node = yaml.ScalarNode(tag, text, start, start, event.style)
        value = self._loader.construct_object(node)
        self._loader.constructed_objects.clear()  # the constructor keeps each node otherwise
        return value

    def _tag(self, event: yaml.ScalarEvent) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._events.resolve(yaml.ScalarNode, event.value, event.implicit)
        return tag

    def _problem(self, problem: Problem) -> None:
        if not self._quiet:
            self._problems.append(problem)

    def _refuse(self, loc: Loc, message: str) -> None:
        """A problem with the value at `loc`, which is read as None."""
        if not self._quiet:
            problem: Problem = (loc, message, None)
            self._problems.append(problem)
            self.refused[loc] = problem


# --- conversion to the settings ------------------------------------------------------------------


def _convert(model: ConfigModel, path: Path) -> Config:
    zone = ZoneInfo(model.timezone)
    roster = Roster(
        tz=zone,
        queues=types.MappingProxyType(
            {
                name: QueuePolicy(
                    name,
                    queue.min_responders,
                    requires=frozenset(queue.requires),
                    standby=tuple(queue.surge.standby) if queue.surge else (),
                    standby_penalty=queue.surge.penalty if queue.surge else 0,
                )
                for name, queue in model.queues.items()
            }
        ),
        responders=types.MappingProxyType(
            {
                rid: Responder(
                    id=rid,
                    name=r.name,
                    interface=r.interface,
                    state_interface=r.state_interface or r.interface,
                    queues=types.MappingProxyType(dict(r.queues)),
                    certifications=types.MappingProxyType(
                        {c: _expiry(e, zone) for c, e in r.certifications.items()}
                    ),
                )
                for rid, r in model.responders.items()
            }
        ),
        shifts=tuple(
            Shift(
                name=s.name,
                days=frozenset().union(*s.days),
                start=s.start,
                end=s.end,
                responders=tuple(s.responders),
            )
            for s in model.shifts
        ),
        exceptions=tuple(
            RosterException(
                responder=e.responder,
                start=as_instant(e.from_, zone),
                end=as_instant(e.until, zone),
                kind=ExceptionKind(e.kind),
            )
            for e in model.exceptions
        ),
    )
    ami = model.ami
    return Config(
        path=path,
        roster=roster,
        ami=AmiSettings(
            host=ami.host,
            port=ami.port or (AMI_TLS_PORT if ami.tls is not None else AMI_PORT),
            username=ami.username,
            secret=SecretRef(
                # A relative path is relative to the config file, wherever the daemon starts.
                file=path.parent / ami.secret_file if ami.secret_file is not None else None,
                env=ami.secret_env,
                setting="ami",
            ),
            action_timeout_s=ami.action_timeout,
            ping_interval_s=ami.ping_interval,
            ping_timeout_s=ami.ping_timeout,
            boot_timeout_s=ami.boot_timeout,
            backoff_min_s=ami.backoff_min,
            backoff_max_s=ami.backoff_max,
            tls=(
                AmiTlsSettings(
                    ca_file=path.parent / ami.tls.ca_file,
                    server_name=ami.tls.server_name or ami.host,
                )
                if ami.tls is not None
                else None
            ),
        ),
        http=HttpSettings(
            host=model.http.listen[0],
            port=model.http.listen[1],
            max_connections=model.http.max_connections,
            header_timeout_s=model.http.header_timeout,
            idle_timeout_s=model.http.idle_timeout,
            tls=(
                HttpTlsSettings(
                    cert_file=path.parent / model.http.tls.cert_file,
                    key_file=path.parent / model.http.tls.key_file,
                )
                if model.http.tls is not None
                else None
            ),
            tokens=tuple(
                ApiToken(t.name, t.role, bytes.fromhex(t.sha256)) for t in model.http.tokens
            ),
            auth_failures_per_minute=model.http.auth_failures_per_minute,
            session_idle_s=model.http.session_idle,
        ),
        reconcile=ReconcileSettings(resync_interval_s=model.reconcile.resync_interval),
        database=_database(model.database, path.parent),
        privacy=(
            PrivacySettings(
                keys_file=path.parent / model.privacy.keys_file,
                default_country_code=model.privacy.default_country_code,
            )
            if model.privacy is not None
            else None
        ),
        service=types.MappingProxyType(
            {
                name: QueueService(q.sl_seconds, q.sl_target, q.wrapup_seconds)
                for name, q in model.queues.items()
            }
        ),
        calls=CallSettings(
            abandon_grace_s=model.calls.abandon_grace,
            stale_after_s=model.calls.stale_after,
            keep_closed_s=model.calls.keep_closed,
            upstream_rollover_after_s=model.calls.upstream_rollover_after,
            upstream_tolerance_s=model.calls.upstream_tolerance,
        ),
        reports=ReportSettings(
            short_abandon_s=model.reports.short_abandon_seconds,
            forecast_weeks=model.reports.forecast_weeks,
            forecast_floor=model.reports.forecast_floor,
            forecast_talk_s=model.reports.forecast_talk_seconds,
        ),
        roster_checks=RosterCheckSettings(
            certification_warn_days=model.roster_checks.certification_warn_days,
            min_rest_hours=model.roster_checks.min_rest_hours,
        ),
        pauses=PauseSettings(
            reasons=types.MappingProxyType(
                {
                    name: PauseReason(
                        name,
                        reason.digit,
                        reason.max_minutes * 60 if reason.max_minutes is not None else None,
                        reason.lift_at_limit,
                    )
                    for name, reason in model.pauses.reasons.items()
                }
            ),
            hard_call_reason=model.pauses.hard_call_reason,
        ),
        surge=types.MappingProxyType(
            {name: _surge(q.surge) for name, q in model.queues.items() if q.surge is not None}
        ),
        wellbeing=types.MappingProxyType(
            {
                name: _wellbeing(q.wellbeing)
                for name, q in model.queues.items()
                if q.wellbeing is not None
            }
        ),
    )


# The surge figures by their name in the file.
_SURGE_FIGURES: dict[str, Figure] = {
    "callers_waiting": "callers_waiting",
    "longest_wait_seconds": "longest_wait_s",
    "calls_per_responder": "calls_per_responder",
}


def _surge(surge: SurgeModel) -> SurgeRule:
    activate, release = surge.activate, surge.release
    return SurgeRule(
        activate=types.MappingProxyType(
            {_SURGE_FIGURES[k]: v for k, v in activate.figures().items()}
        ),
        activate_after_s=activate.for_seconds,
        release=types.MappingProxyType(
            {_SURGE_FIGURES[k]: v for k, v in release.figures().items()}
        ),
        release_after_s=release.for_seconds,
    )


def _wellbeing(w: WellbeingModel) -> WellbeingRule:
    hours = w.max_continuous_hours
    return WellbeingRule(
        decompress_after_s=w.decompress_after_minutes * 60
        if w.decompress_after_minutes is not None
        else None,
        decompress_s=w.decompress_minutes * 60,
        max_consecutive_calls=w.max_consecutive_calls,
        max_continuous_s=hours * 3600 if hours is not None else None,
        min_break_s=w.min_break_minutes * 60,
        enforce=w.enforce,
        rest_s=w.rest_minutes * 60,
        rest_reason=w.rest_reason,
    )


def _expiry(value: date | datetime, zone: ZoneInfo) -> datetime:
    """A certification's lapse instant: a date is valid through that day in the roster's zone."""
    if isinstance(value, datetime):
        return as_instant(value, zone)
    return resolve_local(value + timedelta(days=1), time(0), zone)


def _database(db: DatabaseModel | None, base: Path) -> DatabaseSettings | None:
    if db is None:
        return None
    password = None
    if db.password_file is not None or db.password_env is not None:
        file = base / db.password_file if db.password_file is not None else None
        password = SecretRef(file=file, env=db.password_env, setting="database")
    return DatabaseSettings(
        dsn=db.dsn,
        password=password,
        spool_dir=base / db.spool_dir,
        spool_max_bytes=db.spool_max_bytes,
        retention_days=db.retention_days,
        audit_retention_days=db.audit_retention_days,
        flush_timeout_s=db.flush_timeout,
    )
