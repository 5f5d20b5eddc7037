"""The configuration model: pydantic models of every section, their field validators, and the
default of every optional setting, written here and nowhere else. Strict: YAML already gives
typed values, so "5038" is not silently a port, nor True a penalty."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Literal
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from hotline.core.roster import resolve_local
from hotline.core.supervision import Role

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# TECH/resource, e.g. PJSIP/1001 or Local/1001@responders/n; printable ASCII only, because the
# value goes into AMI actions, where a line break would start a new header.
_INTERFACE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*/[!-~]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_EVERY_DAY = frozenset(range(7))


def _name(value: object) -> object:
    if isinstance(value, str) and not NAME.fullmatch(value):
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


def _dsn(value: object) -> object:
    # The password comes from a credential (password_file, password_env), never from this file:
    # the configuration is readable by more people and programs than a credential is.
    if isinstance(value, str):
        flaw = _dsn_flaw(value)
        if flaw is not None:  # asyncpg would retry it for ever, or the daemon fail at start
            raise ValueError(f"not a PostgreSQL URL: {flaw}, e.g. {_DSN_EXAMPLE}")
        parts = urlsplit(value)
        if parts.password is not None or "password=" in parts.query.lower():
            raise ValueError(
                "holds a password: give it in password_file or password_env, never in this file"
            )
    return value


_DSN_EXAMPLE = "postgresql://hotline@127.0.0.1:5432/hotline"


def _dsn_flaw(dsn: str) -> str | None:
    """What makes `dsn` unusable to asyncpg, in words that do not repeat it; None if nothing."""
    try:
        parts = urlsplit(dsn)
        if parts.query:
            parse_qs(parts.query, strict_parsing=True)
    except ValueError:
        return "it cannot be parsed"
    if parts.scheme not in ("postgresql", "postgres"):
        return "it must start with postgresql://"
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(",") if hosts else ():
        port = host.rpartition("]")[2] if host.startswith("[") else host
        port = unquote(port.partition(":")[2])
        number = len(port) <= 5 and port.isascii() and port.isdigit()
        if port and not (number and 0 < int(port) < 65536):
            return "a port is not a number from 1 to 65535"
    return None


def _env_name(value: object) -> object:
    if isinstance(value, str) and not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def iana_zone(value: object) -> object:
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


FIRST_YEAR, LAST_YEAR = 1970, 2999


def instant_text(value: object) -> datetime:
    if isinstance(value, str):
        try:
            instant = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            # Far from datetime's own limits, which a zone's offset would cross.
            if FIRST_YEAR <= instant.year <= LAST_YEAR:
                return instant
            raise ValueError(
                f"{value!r} is out of range: the year must be {FIRST_YEAR} to {LAST_YEAR}"
            )
    raise ValueError(f"{value!r} is not an ISO 8601 date and time, e.g. 2026-12-24T18:00")


def as_instant(value: datetime, tz: ZoneInfo) -> datetime:
    """A date-time from the file: with an offset as given, without one a wall-clock time in the
    roster's zone."""
    if value.utcoffset() is not None:
        return value
    return resolve_local(value.date(), value.time(), tz)


def _listen(value: object) -> object:
    if isinstance(value, str):
        host, colon, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):  # [::1]:9470
            host = host[1:-1]
        digits = port.isascii() and port.isdigit() and len(port) <= 5
        if colon and host and digits and 0 < int(port) < 65536:
            return (host, int(port))
    raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:9470")


def _empty_if_null(value: object) -> object:
    # `crisis:` with nothing after it means a queue with the defaults.
    return {} if value is None else value


_Name = Annotated[str, BeforeValidator(_name)]
_Text = Annotated[str, BeforeValidator(_text)]
_Interface = Annotated[str, BeforeValidator(_interface)]
_EnvName = Annotated[str, BeforeValidator(_env_name)]
_Dsn = Annotated[str, BeforeValidator(_dsn), BeforeValidator(_text)]
_Port = Annotated[int, Field(ge=1, le=65535)]
# At most a year: every timing becomes a timedelta or a timer somewhere, which far larger values
# would overflow at start.
_MAX_SECONDS = 366 * 24 * 3600.0
_Seconds = Annotated[float, Field(gt=0, le=_MAX_SECONDS, allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0)]
_ClockTime = Annotated[time, BeforeValidator(_clock_time)]
_Day = Annotated[frozenset[int], BeforeValidator(_day)]
_Instant = Annotated[datetime, BeforeValidator(instant_text)]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# AMI's ports: plain TCP, and TLS (Asterisk's tlsbindaddr).
AMI_PORT = 5038
AMI_TLS_PORT = 5039


class AmiTlsModel(Section):
    # The CA (PEM) that signed Asterisk's AMI certificate; nothing else is trusted.
    ca_file: _Text
    # The name the certificate must carry; default: ami.host.
    server_name: _Text | None = None


class AmiModel(Section):
    host: _Text = "127.0.0.1"
    port: _Port | None = None  # AMI_PORT, or AMI_TLS_PORT with tls
    username: _Text
    secret_file: _Text | None = None
    secret_env: _EnvName | None = None
    # Required unless host is a loopback address (docs/security.md, "AMI transport").
    tls: AmiTlsModel | None = None
    action_timeout: _Seconds = 5.0
    ping_interval: _Seconds = 5.0
    ping_timeout: _Seconds = 3.0
    boot_timeout: _Seconds = 60.0  # from login to FullyBooted
    # Reconnect delays double from backoff_min to backoff_max.
    backoff_min: _Seconds = 0.5
    backoff_max: _Seconds = 2.0


class HttpTlsModel(Section):
    # The listener's certificate chain and its private key (PEM), read at start.
    cert_file: _Text
    key_file: _Text


class ApiTokenModel(Section):
    # Who holds the token: the audit trail names them.
    name: _Name
    role: Role
    # SHA-256 of the token, in hex; the token itself is never written down (`hotline token`).
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class HttpModel(Section):
    listen: Annotated[tuple[str, int], BeforeValidator(_listen)] = ("127.0.0.1", 9470)
    # Connections served at once; more are closed as soon as accepted (docs/http.md).
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64
    header_timeout: _Seconds = 5.0  # from accept to a complete request head
    idle_timeout: _Seconds = 15.0  # a kept-alive connection between requests
    tls: HttpTlsModel | None = None
    # Bearer tokens of the API and the console (docs/api.md); none: both refuse everyone.
    tokens: list[ApiTokenModel] = Field(default_factory=list)
    # Failed sign-ins a source address may make per minute before it is refused (429) for
    # the rest of that minute.
    auth_failures_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 10
    # A console session ends this long after its last request.
    session_idle: _Seconds = 8 * 3600.0


class ReconcileModel(Section):
    resync_interval: _Seconds = 60.0


class DatabaseModel(Section):
    dsn: _Dsn
    password_file: _Text | None = None
    password_env: _EnvName | None = None
    spool_dir: _Text = "/var/lib/hotline/spool"
    spool_max_bytes: Annotated[int, Field(ge=1_000_000)] = 256 * 1024 * 1024
    retention_days: Annotated[int, Field(ge=1, le=36_500)] = 395
    # The audit trail is kept apart, longer: six years, what health-care audit rules ask.
    audit_retention_days: Annotated[int, Field(ge=1, le=36_500)] = 2190
    # At a stop, records still in memory get this long to reach Postgres; the rest is spooled.
    flush_timeout: _Seconds = 2.0


class PrivacyModel(Section):
    keys_file: _Text
    default_country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "1"


class CallsModel(Section):
    abandon_grace: _Seconds = 5.0
    stale_after: _Seconds = 6 * 3600.0
    keep_closed: _Seconds = 4 * 3600.0  # a closed call is remembered, for its late events
    upstream_rollover_after: _Seconds | None = None
    upstream_tolerance: _Seconds = 2.0


class SurgeFiguresModel(Section):
    # The load figures a surge rule reads (docs/staffing.md, "Surge pool"); null: not read.
    callers_waiting: Annotated[int, Field(ge=1, le=100_000)] | None = None
    longest_wait_seconds: _Seconds | None = None
    # Calls in the queue (waiting or answered) per responder present (not paused, reachable).
    calls_per_responder: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _names_a_figure(self) -> SurgeFiguresModel:
        if not self.figures():
            raise ValueError(
                "name at least one of callers_waiting, longest_wait_seconds, calls_per_responder"
            )
        return self

    def figures(self) -> dict[str, float]:
        named = {
            "callers_waiting": self.callers_waiting,
            "longest_wait_seconds": self.longest_wait_seconds,
            "calls_per_responder": self.calls_per_responder,
        }
        return {key: float(value) for key, value in named.items() if value is not None}


class SurgeActivateModel(SurgeFiguresModel):
    # The surge starts when any figure is reached for this long, unbroken.
    for_seconds: _Seconds = 30.0


class SurgeReleaseModel(SurgeFiguresModel):
    # It ends when every figure has stayed below its value this long, unbroken.
    for_seconds: _Seconds = 300.0


class SurgeModel(Section):
    # Responders on call for this queue (with a softphone), added while it surges.
    standby: Annotated[list[_Name], Field(min_length=1)]
    # Their penalty while added: higher than the rostered members', so those are rung first.
    penalty: _Count = 10
    activate: SurgeActivateModel = Field(
        default_factory=lambda: SurgeActivateModel(callers_waiting=3, longest_wait_seconds=60)
    )
    release: SurgeReleaseModel = Field(
        default_factory=lambda: SurgeReleaseModel(callers_waiting=1, longest_wait_seconds=15)
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> SurgeModel:
        # A release value above its activation value would end a surge at a load that starts one.
        activate, release = self.activate.figures(), self.release.figures()
        for key in activate.keys() & release.keys():
            if release[key] > activate[key]:
                raise ValueError(f"release.{key} must be at most activate.{key}")
        return self


_Minutes = Annotated[float, Field(gt=0, le=24 * 60, allow_inf_nan=False)]


class WellbeingModel(Section):
    # After a call at least this long, a decompression pause of decompress_minutes with
    # pauses.hard_call_reason (docs/staffing.md, "Wellbeing guardrails"); null: none.
    decompress_after_minutes: _Minutes | None = 20.0
    decompress_minutes: _Minutes = 5.0
    # Caps on calls in a row and on hours in the queue without a break; null: no cap.
    max_consecutive_calls: Annotated[int, Field(ge=1, le=1000)] | None = 6
    max_continuous_hours: Annotated[float, Field(gt=0, le=24, allow_inf_nan=False)] | None = 4.0
    # A pause at least this long is a break: both counts start again after it.
    min_break_minutes: _Minutes = 5.0
    # At a cap: a pause of rest_minutes with rest_reason, or only the alert.
    enforce: Literal["pause", "alert"] = "alert"
    rest_minutes: _Minutes = 10.0
    rest_reason: _Name = "break"


class QueueModel(Section):
    min_responders: _Count = 1
    # Certifications a responder must hold, unexpired, to be added to this queue.
    requires: list[_Name] = Field(default_factory=list)
    surge: SurgeModel | None = None
    wellbeing: WellbeingModel | None = None
    # Service level: answered within sl_seconds, for the sl_target share of calls that left.
    sl_seconds: _Seconds = 20.0
    sl_target: Annotated[float, Field(gt=0, lt=1)] = 0.9
    # queues.conf's wrapuptime for this queue: Asterisk does not report it over AMI.
    wrapup_seconds: Annotated[float, Field(ge=0, le=_MAX_SECONDS, allow_inf_nan=False)] = 0.0


class ReportsModel(Section):
    # `hotline report` and the forecast (docs/reports.md). Abandons that waited at most this long
    # are reported apart as short abandons; keep it a bucket edge of the wait histogram (5 s is
    # one) and equal to the le="..." of the short-abandon recording rule.
    short_abandon_seconds: _Seconds = 5.0
    # The forecast of calls per weekday slot reads this many trailing weeks of records.
    forecast_weeks: Annotated[int, Field(ge=1, le=52)] = 8
    # Expected calls in a 15-minute slot that had none in those weeks: a crisis line is never
    # sure to be silent.
    forecast_floor: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] = 0.25
    # Mean talk time of a queue that answered no call in those weeks.
    forecast_talk_seconds: _Seconds = 900.0


class RosterChecksModel(Section):
    # check-config warns of a certification that lapses within this many days, and
    # hotline_certifications_lapsing counts them (docs/staffing.md, "Certifications").
    certification_warn_days: Annotated[int, Field(ge=1, le=366)] = 14
    # check-config warns of less rest than this between a responder's shifts.
    min_rest_hours: Annotated[float, Field(ge=0, le=168, allow_inf_nan=False)] = 11.0


def expiry_text(value: object) -> date | datetime:
    """A certification's expiry: a date (valid through that day, in the roster's zone) or a
    date and time (valid until that instant)."""
    if isinstance(value, str) and _DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date") from None
    return instant_text(value)


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_Expiry = Annotated[date | datetime, BeforeValidator(expiry_text)]


class ResponderModel(Section):
    name: _Text
    interface: _Interface
    state_interface: _Interface | None = None
    queues: dict[_Name, _Count] = Field(default_factory=dict)  # queue -> penalty
    # certification -> expiry (a date: valid through that day; a date and time: until then)
    certifications: dict[_Name, _Expiry] = Field(default_factory=dict)


class ShiftModel(Section):
    name: _Text
    days: Annotated[list[_Day], BeforeValidator(_one_or_many_days), Field(min_length=1)]
    start: _ClockTime
    end: _ClockTime
    responders: list[_Name]


class ExceptionModel(Section):
    responder: _Name
    from_: _Instant = Field(alias="from")
    until: _Instant
    kind: Literal["off", "on"]


class PauseReasonModel(Section):
    # The digit a responder dials after the pause code to choose this reason; none: not offered.
    digit: Annotated[int, Field(ge=0, le=9)] | None = None
    # A pause longer than this is over its limit: shown, counted and alerted.
    max_minutes: Annotated[float, Field(gt=0, le=24 * 60, allow_inf_nan=False)] | None = None
    # Lift a pause of this reason by itself when it reaches max_minutes.
    lift_at_limit: bool = False


def _default_pause_reasons() -> dict[str, PauseReasonModel]:
    return {
        "break": PauseReasonModel(digit=1, max_minutes=15),
        "decompression": PauseReasonModel(digit=2, max_minutes=10, lift_at_limit=True),
        "admin": PauseReasonModel(digit=3),
        "training": PauseReasonModel(digit=4),
    }


class PausesModel(Section):
    # The reasons a pause may give, from the console, the API and the phones' feature codes.
    reasons: Annotated[dict[_Name, PauseReasonModel], Field(min_length=1)] = Field(
        default_factory=_default_pause_reasons
    )
    # The reason the "last call was hard" feature code and the wellbeing pause use.
    hard_call_reason: _Name = "decompression"


class ConfigModel(Section):
    timezone: Annotated[str, BeforeValidator(iana_zone)]
    ami: AmiModel
    http: HttpModel = Field(default_factory=HttpModel)
    reconcile: ReconcileModel = Field(default_factory=ReconcileModel)
    database: DatabaseModel | None = None
    privacy: PrivacyModel | None = None
    calls: CallsModel = Field(default_factory=CallsModel)
    reports: ReportsModel = Field(default_factory=ReportsModel)
    roster_checks: RosterChecksModel = Field(default_factory=RosterChecksModel)
    pauses: PausesModel = Field(default_factory=PausesModel)
    queues: Annotated[
        dict[_Name, Annotated[QueueModel, BeforeValidator(_empty_if_null)]], Field(min_length=1)
    ]
    responders: dict[_Name, ResponderModel]
    shifts: list[ShiftModel] = Field(default_factory=list)
    exceptions: list[ExceptionModel] = Field(default_factory=list)
