"""Checks a request's body and parameters against the schemas of the OpenAPI document itself: the
subset of JSON Schema the document uses (type, nullable, required, properties,
additionalProperties: false, enum, pattern, minLength/maxLength, minimum/maximum,
minItems/maxItems/uniqueItems, items, format date-time, $ref). A failure names the field."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache

from hotline.adapters.api.openapi import NAME_PATTERN, SCHEMAS, Json

_REF_PREFIX = "#/components/schemas/"
_FIRST_YEAR, _LAST_YEAR = 1970, 2999


class Invalid(Exception):
    """A value does not match its schema; `field` is its dotted path ("" for the whole body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field or 'body'}: {message}")
        self.field = field or "body"
        self.message = message


def check(value: object, schema: Json, field: str = "") -> None:
    """Raise Invalid for the first part of `value` that `schema` refuses."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        schema = SCHEMAS[ref.removeprefix(_REF_PREFIX)]
    if value is None:
        if schema.get("nullable") is True:
            return
        raise Invalid(field, "must not be null")
    kind = schema.get("type")
    if kind == "object":
        _object(value, schema, field)
    elif kind == "array":
        _array(value, schema, field)
    elif kind == "string":
        _string(value, schema, field)
    elif kind in ("integer", "number"):
        _number(value, schema, field, integer=kind == "integer")
    elif kind == "boolean" and not isinstance(value, bool):
        raise Invalid(field, "must be true or false")
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        raise Invalid(field, f"must be one of {', '.join(map(str, enum))}")


def _object(value: object, schema: Json, field: str) -> None:
    if not isinstance(value, dict):
        raise Invalid(field, "must be an object")
    properties = schema.get("properties", {})
    assert isinstance(properties, Mapping)
    for name in schema.get("required", ()):  # type: ignore[attr-defined]
        if name not in value:
            raise Invalid(_join(field, name), "is required")
    for name, item in value.items():
        sub = properties.get(name)
        if sub is None:
            if schema.get("additionalProperties") is False:
                raise Invalid(_join(field, str(name)), "is not a known field")
            continue
        check(item, sub, _join(field, name))


def _array(value: object, schema: Json, field: str) -> None:
    if not isinstance(value, list):
        raise Invalid(field, "must be a list")
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        raise Invalid(field, f"must have at least {low} item(s)")
    if isinstance(high, int) and len(value) > high:
        raise Invalid(field, f"must have at most {high} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            check(item, items, f"{field}[{index}]")
    if schema.get("uniqueItems") is True and len(set(map(repr, value))) != len(value):
        raise Invalid(field, "must not repeat an item")


def _string(value: object, schema: Json, field: str) -> None:
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        raise Invalid(field, "must not be empty" if low == 1 else f"needs {low}+ characters")
    if isinstance(high, int) and len(value) > high:
        raise Invalid(field, f"must be at most {high} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise Invalid(field, "must not contain control characters")
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not _compiled(pattern).search(value):
        if pattern == NAME_PATTERN:
            raise Invalid(field, "must be letters, digits, '_', '.' and '-'")
        raise Invalid(field, "is not in the expected form")
    if schema.get("format") == "date-time":
        instant(value, field, aware=True)


def _number(value: object, schema: Json, field: str, *, integer: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(field, "must be a number")
    if integer and not isinstance(value, int):
        raise Invalid(field, "must be a whole number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(field, "must be finite")
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        raise Invalid(field, f"must be at least {low}")
    if isinstance(high, int | float) and value > high:
        raise Invalid(field, f"must be at most {high}")


def instant(text: str, field: str, *, aware: bool) -> datetime:
    """An ISO 8601 date and time; with `aware`, it must carry an offset (RFC 3339)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(field, "must be an ISO 8601 date and time") from None
    if not _FIRST_YEAR <= value.year <= _LAST_YEAR:
        raise Invalid(field, f"the year must be {_FIRST_YEAR} to {_LAST_YEAR}")
    if aware and value.utcoffset() is None:
        raise Invalid(field, "must carry a UTC offset, e.g. 2026-12-25T03:00:00+00:00")
    return value


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _join(field: str, name: object) -> str:
    return f"{field}.{name}" if field else str(name)
