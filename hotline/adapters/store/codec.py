"""Records as JSON (the spool, the dead letters) and as table rows (Postgres), derived from the
fields of the record dataclasses (hotline/core/records.py): a field is converted by its type, so a
new field needs no code here, only a column in a migration.

JSON: one object per record, a "kind" discriminator first, then the fields in declaration order;
times as ISO strings, enums as their values, ring attempts as a list of objects. Reading back
takes a missing field's default, so a record spooled before a field was added still reads, and
checks every value's type: what comes back from disk is a record the writer can use, or a
CodecError that names the field, never its value (values are pseudonymous personal data).

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


class CodecError(ValueError):
    """A JSON item that is not a record, or a record that cannot be encoded. The message names the
    record type and field and says what is wrong, without the value."""


def _typed(*allowed: type) -> Convert:
    """A check that a value read from JSON has one of the `allowed` types (a bool is not an int)."""
    names = " or ".join(t.__name__ for t in allowed)

    def check(value: Any) -> Any:
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise CodecError(f"expected {names}, got {type(value).__name__}")
        return value

    return check


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise CodecError(f"expected an ISO time, got {type(text).__name__}")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CodecError("not an ISO time") from None


def _member_of(allowed: tuple[Any, ...]) -> Convert:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise CodecError(f"not one of {allowed}")
        return value

    return check


def _enum(cls: type[enum.Enum]) -> Convert:
    def check(value: Any) -> Any:
        try:
            return cls(value)
        except ValueError:
            raise CodecError(f"not a {cls.__name__}") from None

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
    str: _Converter("text", from_json=_typed(str)),
    bool: _Converter("boolean", from_json=_typed(bool)),
    int: _Converter("bigint", from_json=_typed(int)),
    float: _Converter("double precision", from_json=_typed(float, int)),
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
            from_json=_enum(hint),
            to_row=attrgetter("value"),
            from_row=hint,
        )
    if hint in _SCALARS:
        return _SCALARS[hint]
    raise TypeError(f"{where}: no conversion for {hint!r}; add one to {__name__}")


def _what(exc: BaseException) -> str:
    """A converter's failure without the value: ours say what is wrong, others only their type."""
    return str(exc) if isinstance(exc, CodecError) else f"invalid value ({type(exc).__name__})"


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

    def decode(self, item: Any) -> Any:
        """CodecError for what is not an object of this shape: a missing field without a default,
        or a value of the wrong type."""
        where = self.cls.__name__
        if not isinstance(item, Mapping):
            raise CodecError(f"{where}: expected an object, got {type(item).__name__}")
        values: dict[str, Any] = {}
        for field, convert in zip(self.fields, self.converters, strict=True):
            if field.name in item:
                try:
                    values[field.name] = convert.from_json(item[field.name])
                except Exception as exc:  # any converter's failure, told by field
                    raise CodecError(f"{where}.{field.name}: {_what(exc)}") from None
            elif _required(field):
                raise CodecError(f"{where}.{field.name}: missing")
            else:
                values[field.name] = _default(field)
        return self.cls(**values)

    def problem(self, obj: Any) -> str:
        """What keeps `obj` from being written: its first field whose value would not come back
        from JSON as the field's type; "" if none."""
        where = type(obj).__name__
        for name, convert, value in zip(self.names, self.converters, self.values(obj), strict=True):
            try:
                encoded = convert.to_json(value)
                json.dumps(encoded, allow_nan=False)
                convert.from_json(encoded)
            except Exception as exc:  # any failure, told by field
                return f"{where}.{name}: {_what(exc)}"
        return ""

    def loose(self, obj: Any) -> dict[str, Any]:
        """JSON for an object that may not encode: each field as to_json would write it, or the
        text of its value where it cannot be."""
        item: dict[str, Any] = {}
        for name, convert, value in zip(self.names, self.converters, self.values(obj), strict=True):
            try:
                encoded = convert.to_json(value)
                json.dumps(encoded, allow_nan=False)
            except Exception:  # kept as text rather than lost
                encoded = repr(value)
            item[name] = encoded
        return item


class _Nested(_Shape):
    """A dataclass stored inside a record, as a list of JSON objects."""

    def encode_all(self, items: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [self.encode(item) for item in items]

    def decode_all(self, items: Any) -> tuple[Any, ...]:
        if not isinstance(items, list):
            raise CodecError(f"expected a list, got {type(items).__name__}")
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
    """A dict with a "kind" discriminator, JSON-safe when the record's values have their fields'
    types (and its floats are finite)."""
    shape = _SHAPES[type(record)]
    return {"kind": shape.kind, **shape.encode(record)}


def from_json(item: Any) -> Record:
    """The inverse of to_json; CodecError (a ValueError) if `item` is not a record."""
    shape = _shape_of(item)
    if shape is None:
        raise CodecError("not a record: no known kind")
    record: Record = shape.decode(item)
    return record


def kind_of(item: Any) -> type[Record] | None:
    """The record type a JSON item says it is, if it names a known kind."""
    shape = _shape_of(item)
    return None if shape is None else shape.cls


def _shape_of(item: Any) -> _RecordShape | None:
    kind = item.get("kind") if isinstance(item, dict) else None
    return _BY_KIND.get(kind) if isinstance(kind, str) else None


def problem(record: Any) -> str:
    """Why a record cannot be encoded or written, naming the field, never the value; "" when no
    field is at fault."""
    shape = _SHAPES.get(type(record))
    if shape is None:
        return f"not a record: {type(record).__name__}"
    return shape.problem(record)


def loose_json(record: Any) -> dict[str, Any]:
    """to_json for a record that may not encode (a dead letter): the fields that do, as to_json
    writes them, the others as the text of their values."""
    shape = _SHAPES.get(type(record))
    if shape is None:
        return {"kind": None, "text": repr(record)}
    return {"kind": shape.kind, **shape.loose(record)}


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
