"""Checks between sections of the configuration (a responder's queues, a shift's responders, an
exception's times, which secret source is set), on the raw data: they run even when validation
failed elsewhere, so one run reports everything. Ill-typed parts are left to validation."""

from __future__ import annotations

import difflib
import ipaddress
from datetime import datetime
from zoneinfo import ZoneInfo

from hotline.config.problems import Loc, Problem
from hotline.config.schema import (
    NAME,
    AmiModel,
    PausesModel,
    WellbeingModel,
    as_instant,
    iana_zone,
    instant_text,
)


def cross_section_problems(data: object) -> list[Problem]:
    """The problems between sections of the parsed file `data`."""
    if not isinstance(data, dict):
        return []
    problems: list[Problem] = []
    ami = data.get("ami")
    if isinstance(ami, dict):
        secrets = [key for key in ("secret_file", "secret_env") if ami.get(key) is not None]
        if len(secrets) != 1:
            problems.append((("ami",), "set exactly one of secret_file and secret_env", None))
        host = ami.get("host", AmiModel.model_fields["host"].default)
        if ami.get("tls") is None and isinstance(host, str) and not _loopback(host):
            # docs/security.md, "AMI transport": in clear, the secret and every action (who is on
            # shift, on which phone) would cross the network readable and changeable.
            problems.append(
                (("ami", "host"), "is not a loopback address: AMI to another host needs tls", None)
            )
        low, high = (_ami_seconds(ami, key) for key in ("backoff_min", "backoff_max"))
        if low is not None and high is not None and high < low:
            problems.append((("ami", "backoff_max"), "must be at least backoff_min", None))
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
    problems += _http_problems(data.get("http"))
    queues = data.get("queues")
    responders = data.get("responders")
    known_queues = list(queues) if isinstance(queues, dict) else None
    known_ids = list(responders) if isinstance(responders, dict) else None

    def check(loc: Loc, what: str, value: object, known: list[str] | None) -> None:
        if known is None or not isinstance(value, str) or not NAME.fullmatch(value):
            return
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            problems.append((loc, f"unknown {what} {value!r}{hint}", None))

    for rid, responder in _items(responders):
        for queue, _penalty in _items(_get(responder, "queues")):
            check(("responders", rid, "queues", queue), "queue", queue, known_queues)
    for queue_name, queue_data in _items(queues):
        for position, member in _entries(_get(_get(queue_data, "surge"), "standby")):
            loc = ("queues", queue_name, "surge", "standby", position)
            check(loc, "responder", member, known_ids)

    pauses = data.get("pauses")
    reasons = _get(pauses, "reasons")
    hard = _get(pauses, "hard_call_reason")
    if isinstance(reasons, dict):
        check(("pauses", "hard_call_reason"), "pause reason", hard, list(reasons))
        by_digit: dict[object, str] = {}
        for reason_name, reason in _items(reasons):
            digit = _get(reason, "digit")
            if isinstance(digit, int) and digit in by_digit:
                message = f"digit {digit} is already that of pause reason {by_digit[digit]!r}"
                problems.append((("pauses", "reasons", reason_name, "digit"), message, None))
            by_digit.setdefault(digit, reason_name)
    elif reasons is None and isinstance(hard, str) and hard != "decompression":
        check(("pauses", "hard_call_reason"), "pause reason", hard, ["break", "decompression"])
    # A wellbeing rest pause gives a reason of pauses.reasons (the default if none are set).
    known_reasons = list(reasons) if isinstance(reasons, dict) else list(PausesModel().reasons)
    for queue_name, queue_data in _items(queues):
        wellbeing = _get(queue_data, "wellbeing")
        if isinstance(wellbeing, dict):
            rest = wellbeing.get("rest_reason", WellbeingModel.model_fields["rest_reason"].default)
            rest_at = ("queues", queue_name, "wellbeing", "rest_reason")
            check(rest_at, "pause reason", rest, known_reasons)

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


def _http_problems(http: object) -> list[Problem]:
    """API tokens: names and hashes each once; never sent in clear beyond loopback."""
    problems: list[Problem] = []
    seen: dict[str, set[object]] = {"name": set(), "sha256": set()}
    for index, token in _entries(_get(http, "tokens")):
        for key, known in seen.items():
            value = _get(token, key)
            if isinstance(value, str) and value in known:
                problems.append((("http", "tokens", index, key), f"repeats an earlier {key}", None))
            known.add(value)
    listen = _get(http, "listen")
    host = listen.rpartition(":")[0] if isinstance(listen, str) else None
    if seen["name"] and host and _get(http, "tls") is None and not _loopback(host):
        # docs/api.md, "Tokens": a bearer token crossing the network in clear is anyone's.
        message = "is required when tokens are served beyond loopback"
        problems.append((("http", "tls"), message, None))
    return problems


def _items(value: object) -> list[tuple[str, object]]:
    return list(value.items()) if isinstance(value, dict) else []


def _entries(value: object) -> list[tuple[int, object]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, dict) else None


def _zone_or_none(value: object) -> ZoneInfo | None:
    try:
        iana_zone(value)
    except ValueError:
        return None
    return ZoneInfo(value) if isinstance(value, str) else None


def _instant_or_none(value: object, zone: ZoneInfo | None) -> datetime | None:
    try:
        instant = instant_text(value)
    except ValueError:
        return None
    if instant.utcoffset() is not None:
        return instant
    return None if zone is None else as_instant(instant, zone)


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _ami_seconds(section: dict[str, object], key: str) -> float | None:
    """An AMI setting in seconds as given, or its default; None when it is not a number."""
    value = section.get(key, AmiModel.model_fields[key].default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
