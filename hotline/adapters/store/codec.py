"""Records as JSON (the spool, the dead letters) and as table rows (Postgres), derived from the
fields of the record dataclasses (hotline/core/records.py): a field is converted by its type, so a
new field needs no code here, only a column in a migration.

JSON: one object per record, a "kind" discriminator first, then the fields in declaration order;
times as ISO strings, enums as their values, ring attempts as a list of objects. Reading back
takes a missing field's default, so a record spooled before a field was added still reads.

Rows: the columns are the field names, in declaration order, with the Postgres type of each
field's type; ring attempts are one jsonb column. Integers travel as bigint, which Postgres casts
to the width of the column on insert.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from datetime import datetime
from operator import attrgetter
from typing import (
    Any,
    Final,
    Literal,
    Protocol,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from hotline.core.records import CallRecord, MemberSession, PauseInterval, Record

Convert = Callable[[Any], Any]
R = TypeVar("R", CallRecord, MemberSession, PauseInterval)


class Row(Protocol):
    """A row read back (an asyncpg Record), by column name."""

    def __getitem__(self, column: str) -> Any: ...


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class _Converter:
    """How values of one field type are written and read back."""

    sql: str  # the Postgres type of its column
    to_json: Convert = _same
    from_json: Convert = _same
    to_row: Convert = _same
    from_row: Convert = _same


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO time, got {text!r}")
    return datetime.fromisoformat(text)


def _member_of(allowed: tuple[Any, ...]) -> Convert:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {allowed}")
        return value

    return check


def _optional(inner: _Converter) -> _Converter:
    def skip_none(convert: Convert) -> Convert:
        if convert is _same:
            return _same
        return lambda value: None if value is None else convert(value)

    return _Converter(
        inner.sql,
        skip_none(inner.to_json),
        skip_none(inner.from_json),
        skip_none(inner.to_row),
        skip_none(inner.from_row),
    )


_SCALARS: Final[dict[type, _Converter]] = {
    str: _Converter("text"),
    bool: _Converter("boolean"),
    int: _Converter("bigint"),
    float: _Converter("double precision"),
    datetime: _Converter("timestamptz", to_json=datetime.isoformat, from_json=_time),
}


def _converter(hint: Any, where: str) -> _Converter:
    """The converter for a field type, or TypeError naming the field (`where`)."""
    origin, args = get_origin(hint), get_args(hint)
    optional = [arg for arg in args if arg is not type(None)]
    if origin in (Union, types.UnionType) and len(optional) == len(args) - 1 == 1:
        return _optional(_converter(optional[0], where))
    if origin is Literal:
        check = _member_of(args)
        return _Converter("text", from_json=check, from_row=check)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and is_dataclass(args[0]):
        item = _Nested(args[0])
        return _Converter(
            "jsonb",
            to_json=item.encode_all,
            from_json=item.decode_all,
            to_row=lambda value: json.dumps(item.encode_all(value)),
            from_row=lambda text: item.decode_all(json.loads(text)),
        )
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _Converter(
            "text",
            to_json=attrgetter("value"),
            from_json=hint,
            to_row=attrgetter("value"),
            from_row=hint,
        )
    if hint in _SCALARS:
        return _SCALARS[hint]
    raise TypeError(f"{where}: no conversion for {hint!r}; add one to {__name__}")


def _required(field: Field[Any]) -> bool:
    return field.default is MISSING and field.default_factory is MISSING


def _default(field: Field[Any]) -> Any:
    return field.default if field.default_factory is MISSING else field.default_factory()


class _Shape:
    """One dataclass' fields, each with its converter, in declaration order."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        hints = get_type_hints(cls)
        self.fields = fields(cls)
        self.names = tuple(f.name for f in self.fields)
        self.converters = tuple(
            _converter(hints[f.name], f"{cls.__name__}.{f.name}") for f in self.fields
        )
        names = self.names
        self.values: Callable[[Any], tuple[Any, ...]] = (
            attrgetter(*names) if len(names) > 1 else lambda obj: (getattr(obj, names[0]),)
        )
        # Only the fields whose values change on the way out are converted one by one.
        self._to_json = tuple(
            (n, c.to_json)
            for n, c in zip(names, self.converters, strict=True)
            if c.to_json is not _same
        )

    def encode(self, obj: Any) -> dict[str, Any]:
        item = dict(zip(self.names, self.values(obj), strict=True))
        for name, convert in self._to_json:
            item[name] = convert(item[name])
        return item

    def decode(self, item: Mapping[str, Any]) -> Any:
        """KeyError for a missing field without a default."""
        values: dict[str, Any] = {}
        for field, convert in zip(self.fields, self.converters, strict=True):
            if field.name in item:
                values[field.name] = convert.from_json(item[field.name])
            elif _required(field):
                raise KeyError(field.name)
            else:
                values[field.name] = _default(field)
        return self.cls(**values)


class _Nested(_Shape):
    """A dataclass stored inside a record, as a list of JSON objects."""

    def encode_all(self, items: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [self.encode(item) for item in items]

    def decode_all(self, items: Any) -> tuple[Any, ...]:
        if not isinstance(items, list):
            raise ValueError(f"expected a list, got {type(items).__name__}")
        return tuple(self.decode(item) for item in items)


class _RecordShape(_Shape):
    def __init__(self, cls: type[Record], kind: str) -> None:
        super().__init__(cls)
        self.kind = kind
        self.columns = tuple((n, c.sql) for n, c in zip(self.names, self.converters, strict=True))
        self._to_row = tuple(
            (i, c.to_row) for i, c in enumerate(self.converters) if c.to_row is not _same
        )
        self._from_row = tuple(
            (n, c.from_row) for n, c in zip(self.names, self.converters, strict=True)
        )

    def row(self, record: Record) -> tuple[Any, ...]:
        values = list(self.values(record))
        for i, convert in self._to_row:
            values[i] = convert(values[i])
        return tuple(values)

    def from_row(self, row: Row) -> Any:
        return self.cls(**{name: convert(row[name]) for name, convert in self._from_row})


_SHAPES: Final[dict[type[Record], _RecordShape]] = {
    CallRecord: _RecordShape(CallRecord, "call"),
    MemberSession: _RecordShape(MemberSession, "member_session"),
    PauseInterval: _RecordShape(PauseInterval, "pause"),
}
_BY_KIND: Final = {shape.kind: shape for shape in _SHAPES.values()}


def to_json(record: Record) -> dict[str, Any]:
    """A JSON-safe dict with a "kind" discriminator."""
    shape = _SHAPES[type(record)]
    return {"kind": shape.kind, **shape.encode(record)}


def from_json(item: dict[str, Any]) -> Record:
    """The inverse of to_json; ValueError, KeyError or TypeError if `item` is not a record."""
    shape = _BY_KIND.get(item["kind"])
    if shape is None:
        raise ValueError(f"unknown record kind {item['kind']!r}")
    record: Record = shape.decode(item)
    return record


def columns(cls: type[Record]) -> tuple[tuple[str, str], ...]:
    """(column, Postgres type) of each field of a record type, in declaration order."""
    return _SHAPES[cls].columns


def to_row(record: Record) -> tuple[Any, ...]:
    """The values of a record's columns, in `columns` order."""
    return _SHAPES[type(record)].row(record)


def from_row(cls: type[R], row: Row) -> R:
    """The record of a row read back with every column of `columns(cls)`."""
    record: R = _SHAPES[cls].from_row(row)
    return record
