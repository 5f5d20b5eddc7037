"""The YAML configuration file: parsed with the line of every node, validated, and turned into
the plain frozen values the core and the daemon use. Every problem is reported at once, each
with its dotted path and line; pydantic stays inside this module."""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from hotline.core.roster import (
    ExceptionKind,
    QueuePolicy,
    Responder,
    Roster,
    RosterException,
    Shift,
    resolve_local,
)


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one "path: message (line N)" each."""

    def __init__(self, problems: list[str], path: Path | None = None) -> None:
        self.problems = problems
        self.path = path
        prefix = f"{path}: " if path is not None else ""
        super().__init__("\n".join(prefix + problem for problem in problems))


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives; it is read when needed, never kept in the configuration."""

    file: Path | None
    env: str | None
    setting: str = "ami"  # the config section, for messages

    def read(self) -> str:
        # Messages name the source, never the value: they end up in logs and on terminals.
        if self.file is not None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as error:
                reason = error.strerror or type(error).__name__
                raise ConfigError(
                    [f"{self.setting}.{self._file_key}: cannot read {self.file}: {reason}"]
                ) from None
            except UnicodeDecodeError:
                # `from None`: the decode error carries the secret's bytes.
                raise ConfigError(
                    [f"{self.setting}.{self._file_key}: {self.file} is not UTF-8 text"]
                ) from None
            secret = text.rstrip("\r\n")
            if not secret:
                raise ConfigError([f"{self.setting}.{self._file_key}: {self.file} is empty"])
            return secret
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(
                    [f"{self.setting}.{self._env_key}: environment variable {self.env} is not set"]
                )
            if not value:
                raise ConfigError(
                    [f"{self.setting}.{self._env_key}: environment variable {self.env} is empty"]
                )
            return value
        raise ConfigError([f"{self.setting}: neither {self._file_key} nor {self._env_key} is set"])

    @property
    def _file_key(self) -> str:
        return "secret_file" if self.setting == "ami" else "password_file"

    @property
    def _env_key(self) -> str:
        return "secret_env" if self.setting == "ami" else "password_env"


@dataclass(frozen=True, slots=True)
class AmiSettings:
    host: str
    port: int
    username: str
    secret: SecretRef
    action_timeout_s: float
    ping_interval_s: float
    ping_timeout_s: float


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    resync_interval_s: float


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    dsn: str  # without the password, which comes from `password`
    password: SecretRef | None
    spool_dir: Path
    spool_max_bytes: int
    retention_days: int


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    keys_file: Path
    default_country_code: str


@dataclass(frozen=True, slots=True)
class CallSettings:
    abandon_grace_s: float
    stale_after_s: float
    upstream_rollover_after_s: float | None
    upstream_tolerance_s: float


@dataclass(frozen=True, slots=True)
class QueueService:
    sl_seconds: float
    sl_target: float
    wrapup_s: float


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    roster: Roster
    ami: AmiSettings
    http: HttpSettings
    reconcile: ReconcileSettings
    # Call recording is on when a database is configured; it then needs the pseudonym keys.
    database: DatabaseSettings | None
    privacy: PrivacySettings | None
    calls: CallSettings
    service: Mapping[str, QueueService]


def load_config(path: Path) -> Config:
    """Read and validate the configuration file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError([f"cannot read the file: {reason}"], path) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"the file is not UTF-8 text: {error.reason}"], path) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate configuration `text`; `path` is where it came from, for messages."""
    problems: list[_Problem] = []
    try:
        data, lines = _Document.parse(text, problems)
    except yaml.YAMLError as error:
        raise ConfigError([_syntax_problem(error)], path) from None
    if data is None:
        raise ConfigError(["the file is empty (line 1)"], path)
    model: _ConfigModel | None = None
    try:
        model = _ConfigModel.model_validate(data)
    except ValidationError as error:
        problems += [_problem_from(detail) for detail in error.errors()]
    problems += _cross_reference_problems(data)
    if problems or model is None:
        raise ConfigError(_render(problems, lines), path)
    return _convert(model, path)


# --- YAML with line numbers ------------------------------------------------------------------

_Loc = tuple[str | int, ...]
# Where, what, and the line when it is not that of the node at the path (a duplicate key).
_Problem = tuple[_Loc, str, int | None]

_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Document:
    """A YAML document as plain values, with the 1-based line of every node by its path.

    Parsed like `yaml.safe_load`, except that duplicate keys are problems (safe_load silently
    keeps the last) and that three YAML 1.1 surprises stay text: the words `off`, `on`, `yes`,
    `no` (`kind: off` would be False), sexagesimal numbers (`start: 22:00` would be 1320) and
    timestamps (which this module parses itself, to resolve local times in the roster's zone).
    """

    def __init__(self, loader: yaml.SafeLoader, problems: list[_Problem]) -> None:
        self._loader = loader
        self._problems = problems
        self.lines: dict[_Loc, int] = {(): 1}
        self._open: set[int] = set()  # ids of the collections being built, to catch cycles

    @classmethod
    def parse(cls, text: str, problems: list[_Problem]) -> tuple[object, dict[_Loc, int]]:
        loader = yaml.SafeLoader(text)
        try:
            document = cls(loader, problems)
            root = loader.get_single_node()
            if root is None:
                return None, document.lines
            document.lines[()] = root.start_mark.line + 1
            return document._value(root, ()), document.lines
        finally:
            loader.dispose()

    def _value(self, node: yaml.Node, loc: _Loc) -> object:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if id(node) in self._open:
            self._problems.append((loc, "an alias refers to a node that contains it", None))
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = item.start_mark.line + 1
                    items.append(self._value(item, (*loc, index)))
                return items
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, loc)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: _Loc) -> dict[str, object]:
        mapping: dict[str, object] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self._problems.append((loc, "keys must be plain names", line))
                continue
            if key_node.tag == _MERGE_TAG:
                self._problems.append((loc, "merge keys (<<) are not supported", line))
                continue
            # Keys are names (responder ids, queues), so `1001` stays the text "1001".
            key = str(key_node.value)
            if key in mapping:
                first = self.lines[(*loc, key)]
                self._problems.append(
                    ((*loc, key), f"duplicate key, already defined on line {first}", line)
                )
                continue
            self.lines[(*loc, key)] = line
            mapping[key] = self._value(value_node, (*loc, key))
        return mapping

    def _scalar(self, node: yaml.ScalarNode) -> object:
        if node.style is None:  # only plain scalars get the YAML 1.1 implicit types
            text = str(node.value)
            if node.tag == _BOOL_TAG and text.lower() not in ("true", "false"):
                return text
            if node.tag in (_INT_TAG, _FLOAT_TAG) and ":" in text:
                return text
            if node.tag == _TIMESTAMP_TAG:
                return text
        return self._loader.construct_object(node)


def _syntax_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        context = f"{error.context}: " if error.context else ""
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML: {context}{error.problem} ({where})"
    return f"invalid YAML: {error}"


# --- validation models -----------------------------------------------------------------------
# Strict: YAML already gives typed values, so "5038" is not silently a port, nor True a penalty.

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# TECH/resource, e.g. PJSIP/1001 or Local/1001@responders/n; printable ASCII only, because the
# value goes into AMI actions, where a line break would start a new header.
_INTERFACE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*/[!-~]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_EVERY_DAY = frozenset(range(7))


def _name(value: object) -> object:
    if isinstance(value, str) and not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return value


def _text(value: object) -> object:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError("must not contain control characters such as line breaks")
    return value


def _interface(value: object) -> object:
    if isinstance(value, str) and not _INTERFACE.fullmatch(value):
        raise ValueError(f"{value!r} is not an interface: expected TECH/resource, e.g. PJSIP/1001")
    return value


def _env_name(value: object) -> object:
    if isinstance(value, str) and not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def _zone(value: object) -> object:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. America/New_York") from None
    return value


def _clock_time(value: object) -> time:
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a time, expected HH:MM")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ValueError(f"{value!r} is not a time")
    return time(hour, minute)


def _one_or_many_days(value: object) -> object:
    # `days: daily` reads better than `days: [daily]`.
    return [value] if isinstance(value, str) else value


def _day(value: object) -> frozenset[int]:
    key = value.strip().lower() if isinstance(value, str) else None
    if key == "daily":
        return _EVERY_DAY
    if key in _WEEKDAYS:
        return frozenset({_WEEKDAYS[key]})
    raise ValueError(f"{value!r} is not a day: use mon, tue, wed, thu, fri, sat, sun or daily")


def _instant_text(value: object) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO 8601 date and time, e.g. 2026-12-24T18:00")


def _listen(value: object) -> object:
    if isinstance(value, str):
        host, colon, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):  # [::1]:9470
            host = host[1:-1]
        if colon and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            return (host, int(port))
    raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:9470")


def _empty_if_null(value: object) -> object:
    # `crisis:` with nothing after it means a queue with the defaults.
    return {} if value is None else value


_Name = Annotated[str, BeforeValidator(_name)]
_Text = Annotated[str, BeforeValidator(_text)]
_Interface = Annotated[str, BeforeValidator(_interface)]
_EnvName = Annotated[str, BeforeValidator(_env_name)]
_Port = Annotated[int, Field(ge=1, le=65535)]
_Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0)]
_ClockTime = Annotated[time, BeforeValidator(_clock_time)]
_Day = Annotated[frozenset[int], BeforeValidator(_day)]
_Instant = Annotated[datetime, BeforeValidator(_instant_text)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _AmiModel(_Section):
    host: _Text = "127.0.0.1"
    port: _Port = 5038
    username: _Text
    secret_file: _Text | None = None
    secret_env: _EnvName | None = None
    action_timeout: _Seconds = 5.0
    ping_interval: _Seconds = 5.0
    ping_timeout: _Seconds = 3.0


class _HttpModel(_Section):
    listen: Annotated[tuple[str, int], BeforeValidator(_listen)] = ("127.0.0.1", 9470)


class _ReconcileModel(_Section):
    resync_interval: _Seconds = 60.0


class _DatabaseModel(_Section):
    dsn: _Text
    password_file: _Text | None = None
    password_env: _EnvName | None = None
    spool_dir: _Text = "/var/lib/hotline/spool"
    spool_max_bytes: Annotated[int, Field(ge=1_000_000)] = 256 * 1024 * 1024
    retention_days: Annotated[int, Field(ge=1)] = 395


class _PrivacyModel(_Section):
    keys_file: _Text
    default_country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "1"


class _CallsModel(_Section):
    abandon_grace: _Seconds = 5.0
    stale_after: _Seconds = 6 * 3600.0
    upstream_rollover_after: _Seconds | None = None
    upstream_tolerance: _Seconds = 2.0


class _QueueModel(_Section):
    min_responders: _Count = 1
    # Service level: answered within sl_seconds, for the sl_target share of calls that left.
    sl_seconds: _Seconds = 20.0
    sl_target: Annotated[float, Field(gt=0, lt=1)] = 0.9
    # queues.conf's wrapuptime for this queue: Asterisk does not report it over AMI.
    wrapup_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class _ResponderModel(_Section):
    name: _Text
    interface: _Interface
    state_interface: _Interface | None = None
    queues: dict[_Name, _Count] = Field(default_factory=dict)  # queue -> penalty


class _ShiftModel(_Section):
    name: _Text
    days: Annotated[list[_Day], BeforeValidator(_one_or_many_days), Field(min_length=1)]
    start: _ClockTime
    end: _ClockTime
    responders: list[_Name]


class _ExceptionModel(_Section):
    responder: _Name
    from_: _Instant = Field(alias="from")
    until: _Instant
    kind: Literal["off", "on"]


class _ConfigModel(_Section):
    timezone: Annotated[str, BeforeValidator(_zone)]
    ami: _AmiModel
    http: _HttpModel = Field(default_factory=_HttpModel)
    reconcile: _ReconcileModel = Field(default_factory=_ReconcileModel)
    database: _DatabaseModel | None = None
    privacy: _PrivacyModel | None = None
    calls: _CallsModel = Field(default_factory=_CallsModel)
    queues: Annotated[
        dict[_Name, Annotated[_QueueModel, BeforeValidator(_empty_if_null)]], Field(min_length=1)
    ]
    responders: dict[_Name, _ResponderModel]
    shifts: list[_ShiftModel] = Field(default_factory=list)
    exceptions: list[_ExceptionModel] = Field(default_factory=list)


# --- problems --------------------------------------------------------------------------------


def _problem_from(detail: ErrorDetails) -> _Problem:
    # Pydantic marks dict-key errors with a trailing "[key]"; the path to the key says it all.
    loc = tuple(part for part in detail["loc"] if part != "[key]")
    return loc, _message(detail, loc), None


def _message(detail: ErrorDetails, loc: _Loc) -> str:
    kind = detail["type"]
    value = detail.get("input")
    context: dict[str, Any] = dict(detail.get("ctx") or {})
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind in ("value_error", "assertion_error"):
        return str(context.get("error", detail["msg"]))
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{_shown(value)} is not a whole number"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"{_shown(value)} is not a number"
    if kind == "string_type":
        return f"expected text, got {_shown(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {_shown(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_shown(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {_shown(context['ge'])}, got {_shown(value)}"
    if kind == "greater_than":
        return f"must be greater than {_shown(context['gt'])}, got {_shown(value)}"
    if kind == "less_than_equal":
        return f"must be at most {_shown(context['le'])}, got {_shown(value)}"
    if kind == "literal_error":
        return f"{_shown(value)} is not one of {context['expected']}"
    if kind == "too_short":
        return "must not be empty"
    return str(detail["msg"])


def _shown(value: object) -> str:
    """A value as the YAML author wrote it, short: strings quoted, collections by kind."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a bound of 0.0 reads better as 0
    return repr(value)


def _unknown_key_message(loc: _Loc) -> str:
    allowed = _keys_of(loc[:-1])
    key = str(loc[-1]) if loc else ""
    if not allowed:
        return "unknown key"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key, did you mean {close[0]!r}?"
    return f"unknown key, expected one of: {', '.join(allowed)}"


def _keys_of(loc: _Loc) -> list[str]:
    """The keys the model at `loc` accepts, found by walking the model's annotations."""
    annotation: Any = _ConfigModel
    for part in loc:
        annotation = _unwrapped(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {info.alias or name: info for name, info in annotation.model_fields.items()}
            if part not in fields:
                return []
            annotation = fields[str(part)].annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrapped(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return []


def _unwrapped(annotation: Any) -> Any:
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType):
            annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
        else:
            return annotation


def _cross_reference_problems(data: object) -> list[_Problem]:
    """Checks between sections, on the raw data: they run even when validation failed
    elsewhere, so one run reports everything. Ill-typed parts are left to validation."""
    if not isinstance(data, dict):
        return []
    problems: list[_Problem] = []
    ami = data.get("ami")
    if isinstance(ami, dict):
        secrets = [key for key in ("secret_file", "secret_env") if ami.get(key) is not None]
        if len(secrets) != 1:
            problems.append((("ami",), "set exactly one of secret_file and secret_env", None))
    database = data.get("database")
    if isinstance(database, dict):
        passwords = [k for k in ("password_file", "password_env") if database.get(k) is not None]
        if len(passwords) > 1:
            problems.append(
                (("database",), "set at most one of password_file and password_env", None)
            )
        if data.get("privacy") is None:
            problems.append(
                (
                    ("database",),
                    "call recording needs privacy.keys_file for caller pseudonyms",
                    None,
                )
            )
    queues = data.get("queues")
    responders = data.get("responders")
    known_queues = list(queues) if isinstance(queues, dict) else None
    known_ids = list(responders) if isinstance(responders, dict) else None

    def check(loc: _Loc, what: str, value: object, known: list[str] | None) -> None:
        if known is None or not isinstance(value, str) or not _NAME.fullmatch(value):
            return
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            problems.append((loc, f"unknown {what} {value!r}{hint}", None))

    for rid, responder in _items(responders):
        for queue, _penalty in _items(_get(responder, "queues")):
            check(("responders", rid, "queues", queue), "queue", queue, known_queues)

    first_named: dict[str, int] = {}
    for index, shift in _entries(data.get("shifts")):
        name = _get(shift, "name")
        if isinstance(name, str):
            if name in first_named:
                first = first_named[name]
                message = f"duplicate shift name {name!r}, already used by shifts[{first}]"
                problems.append((("shifts", index, "name"), message, None))
            else:
                first_named[name] = index
        for position, member in _entries(_get(shift, "responders")):
            check(("shifts", index, "responders", position), "responder", member, known_ids)

    zone = _zone_or_none(data.get("timezone"))
    for index, exception in _entries(data.get("exceptions")):
        check(
            ("exceptions", index, "responder"), "responder", _get(exception, "responder"), known_ids
        )
        start = _instant_or_none(_get(exception, "from"), zone)
        end = _instant_or_none(_get(exception, "until"), zone)
        if start is not None and end is not None and end <= start:
            problems.append((("exceptions", index, "until"), "must be after from", None))
    return problems


def _items(value: object) -> list[tuple[str, object]]:
    return list(value.items()) if isinstance(value, dict) else []


def _entries(value: object) -> list[tuple[int, object]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, dict) else None


def _zone_or_none(value: object) -> ZoneInfo | None:
    try:
        _zone(value)
    except ValueError:
        return None
    return ZoneInfo(value) if isinstance(value, str) else None


def _instant_or_none(value: object, zone: ZoneInfo | None) -> datetime | None:
    try:
        instant = _instant_text(value)
    except ValueError:
        return None
    if instant.utcoffset() is not None:
        return instant
    return None if zone is None else _localized(instant, zone)


def _localized(instant: datetime, zone: ZoneInfo) -> datetime:
    """A naive date-time from the file, read as a wall-clock time in the roster's zone."""
    return resolve_local(instant.date(), instant.time(), zone)


def _render(problems: list[_Problem], lines: Mapping[_Loc, int]) -> list[str]:
    rendered: dict[str, int] = {}
    for loc, message, own_line in problems:
        line = own_line if own_line is not None else _line_of(loc, lines)
        path = _dotted(loc)
        text = f"{path}: {message} (line {line})" if path else f"{message} (line {line})"
        rendered.setdefault(text, line)
    return sorted(rendered, key=rendered.__getitem__)  # by line, then in order of discovery


def _line_of(loc: _Loc, lines: Mapping[_Loc, int]) -> int:
    # A missing key has no line of its own: point at the nearest enclosing node.
    for length in range(len(loc), -1, -1):
        if loc[:length] in lines:
            return lines[loc[:length]]
    return 1


def _dotted(loc: _Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


# --- conversion to the core's values ---------------------------------------------------------


def _convert(model: _ConfigModel, path: Path) -> Config:
    zone = ZoneInfo(model.timezone)
    roster = Roster(
        tz=zone,
        queues=types.MappingProxyType(
            {name: QueuePolicy(name, queue.min_responders) for name, queue in model.queues.items()}
        ),
        responders=types.MappingProxyType(
            {
                rid: Responder(
                    id=rid,
                    name=r.name,
                    interface=r.interface,
                    state_interface=r.state_interface or r.interface,
                    queues=types.MappingProxyType(dict(r.queues)),
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
                start=_as_instant(e.from_, zone),
                end=_as_instant(e.until, zone),
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
            port=ami.port,
            username=ami.username,
            secret=SecretRef(
                # A relative path is relative to the config file, wherever the daemon starts.
                file=path.parent / ami.secret_file if ami.secret_file is not None else None,
                env=ami.secret_env,
            ),
            action_timeout_s=ami.action_timeout,
            ping_interval_s=ami.ping_interval,
            ping_timeout_s=ami.ping_timeout,
        ),
        http=HttpSettings(host=model.http.listen[0], port=model.http.listen[1]),
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
            upstream_rollover_after_s=model.calls.upstream_rollover_after,
            upstream_tolerance_s=model.calls.upstream_tolerance,
        ),
    )


def _database(db: _DatabaseModel | None, base: Path) -> DatabaseSettings | None:
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
    )


def _as_instant(value: datetime, zone: ZoneInfo) -> datetime:
    return value if value.utcoffset() is not None else _localized(value, zone)
