"""The validated configuration as plain frozen values: what the core, the app and the adapters
take. No defaults here: every value comes from the configuration model (`schema.py`), which is
the one place a default is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hotline.config.credentials import read_secret_env, read_secret_file
from hotline.config.problems import ConfigError
from hotline.core.roster import Roster
from hotline.core.supervision import Role
from hotline.core.surge import SurgeRule
from hotline.core.wellbeing import WellbeingRule

# The configuration sections that hold a secret, and the keys that say where it lives.
SecretSection = Literal["ami", "database"]
_SECRET_KEYS: dict[SecretSection, tuple[str, str]] = {
    "ami": ("secret_file", "secret_env"),
    "database": ("password_file", "password_env"),
}


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives; it is read when needed, never kept in the configuration."""

    file: Path | None
    env: str | None
    setting: SecretSection  # the config section, for messages

    def read(self) -> str:
        """The secret, from a file that must be private to the daemon's user or from the
        environment; printable ASCII without whitespace. Messages name the source, never the
        value: they end up in logs and on terminals."""
        file_key, env_key = _SECRET_KEYS[self.setting]
        if self.file is not None:
            return read_secret_file(self.file, f"{self.setting}.{file_key}")
        if self.env is not None:
            return read_secret_env(self.env, f"{self.setting}.{env_key}")
        raise ConfigError([f"{self.setting}: neither {file_key} nor {env_key} is set"])


@dataclass(frozen=True, slots=True)
class AmiTlsSettings:
    """AMI over TLS: Asterisk's certificate must chain to `ca_file` and name `server_name`."""

    ca_file: Path
    server_name: str


@dataclass(frozen=True, slots=True)
class AmiSettings:
    """The AMI account and every timing of the link to it."""

    host: str
    port: int
    username: str
    secret: SecretRef
    action_timeout_s: float
    ping_interval_s: float
    ping_timeout_s: float
    boot_timeout_s: float  # from login to FullyBooted
    backoff_min_s: float  # reconnect delays double from min to max
    backoff_max_s: float
    # None: plain TCP, which the configuration allows on loopback only (docs/security.md).
    tls: AmiTlsSettings | None


@dataclass(frozen=True, slots=True)
class HttpTlsSettings:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token of the API: its holder, role and SHA-256 (the token is never kept)."""

    name: str
    role: Role
    sha256: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str
    port: int
    max_connections: int  # served at once; more are closed as soon as accepted
    header_timeout_s: float  # from accept to a complete request head
    idle_timeout_s: float  # a kept-alive connection between requests
    tls: HttpTlsSettings | None  # None: plain HTTP
    tokens: tuple[ApiToken, ...]
    auth_failures_per_minute: int  # per source address, then 429 until the minute is over
    session_idle_s: float  # a console session ends this long after its last request


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
    audit_retention_days: int  # hotline.audit, kept apart from the records
    flush_timeout_s: float


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    keys_file: Path
    default_country_code: str


@dataclass(frozen=True, slots=True)
class CallSettings:
    abandon_grace_s: float
    stale_after_s: float
    keep_closed_s: float
    upstream_rollover_after_s: float | None
    upstream_tolerance_s: float


@dataclass(frozen=True, slots=True)
class ReportSettings:
    short_abandon_s: float  # abandons that waited at most this long are reported apart
    forecast_weeks: int
    forecast_floor: float  # expected calls in a slot without history
    forecast_talk_s: float  # mean talk of a queue without answered calls in the history


@dataclass(frozen=True, slots=True)
class RosterCheckSettings:
    """The look-ahead warnings of check-config (docs/staffing.md)."""

    certification_warn_days: int  # a certification lapsing within this many days
    min_rest_hours: float  # less rest than this between a responder's shifts


@dataclass(frozen=True, slots=True)
class QueueService:
    sl_seconds: float
    sl_target: float
    wrapup_s: float


@dataclass(frozen=True, slots=True)
class PauseReason:
    name: str  # what Asterisk shows as the member's pause reason
    digit: int | None  # chosen with this digit after the phones' pause code
    max_s: float | None  # longer is over the limit
    lift_at_limit: bool  # lifted by hotline at the limit


@dataclass(frozen=True, slots=True)
class PauseSettings:
    reasons: Mapping[str, PauseReason]
    hard_call_reason: str  # one of `reasons`


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
    pauses: PauseSettings
    reports: ReportSettings
    roster_checks: RosterCheckSettings
    # The queues with a surge rule, and those with wellbeing guardrails (docs/staffing.md).
    surge: Mapping[str, SurgeRule]
    wellbeing: Mapping[str, WellbeingRule]
