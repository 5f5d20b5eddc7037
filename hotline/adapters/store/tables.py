"""The tables records are written to: each one's key, its forward-only order and the column that
is NULL while a record is open, and the statements that upsert and read back its rows. The
columns come from the record's fields (codec.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Any

from hotline.adapters.store import codec
from hotline.core.records import CallRecord, MemberSession, PauseInterval, Record
from hotline.core.records import Table as TableName


@dataclass(frozen=True)
class Table:
    name: TableName
    record: type[Record]
    key: tuple[str, ...]
    # The forward-only order: a row is replaced only by a record higher in it
    # (docs/data-model.md, "Forward-only upserts").
    order: tuple[str, ...]
    open_while_null: str  # the column that is NULL while the record is open

    @cached_property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """(column, Postgres type), in the record's field order."""
        return codec.columns(self.record)

    @cached_property
    def upsert(self) -> str:
        """One statement per batch: INSERT ... SELECT FROM unnest(arrays), so a batch is one round
        trip, RETURNING the keys of the rows that really changed (the others are duplicates)."""
        names = ", ".join(c for c, _ in self.columns)
        arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(self.columns, 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in self.columns if c not in self.key)
        stored = ", ".join(f"t.{c}" for c in self.order)
        incoming = ", ".join(f"EXCLUDED.{c}" for c in self.order)
        # S608: built from the constant table definitions below, never from input.
        return (
            f"INSERT INTO hotline.{self.name} AS t ({names})"  # noqa: S608
            f" SELECT * FROM unnest({arrays})"
            f" ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}, updated_at = now()"
            f" WHERE ({stored}) < ({incoming})"
            f" RETURNING {', '.join(f't.{c}' for c in self.key)}"
        )

    @cached_property
    def select_open(self) -> str:
        names = ", ".join(c for c, _ in self.columns)
        return (
            f"SELECT {names} FROM hotline.{self.name}"  # noqa: S608 (constant definitions)
            f" WHERE {self.open_while_null} IS NULL"
            f" ORDER BY {', '.join(self.key)}"
        )

    def key_of(self, record: Record) -> tuple[Any, ...]:
        """(table name, *key values): unique across tables."""
        return (self.name, *self._key(record))

    def order_of(self, record: Record) -> tuple[Any, ...]:
        return self._order(record)

    @cached_property
    def _key(self) -> Callable[[Record], tuple[Any, ...]]:
        return _values(self.key)

    @cached_property
    def _order(self) -> Callable[[Record], tuple[Any, ...]]:
        return _values(self.order)


def _values(names: tuple[str, ...]) -> Callable[[Record], tuple[Any, ...]]:
    """The values of the named fields of a record, as a tuple."""
    if len(names) == 1:
        get = attrgetter(names[0])
        return lambda record: (get(record),)
    return attrgetter(*names)


CALLS = Table(
    "calls",
    CallRecord,
    key=("uniqueid", "queue", "visit"),
    order=("rank", "revision"),
    open_while_null="outcome",
)
SESSIONS = Table(
    "member_sessions",
    MemberSession,
    key=("queue", "interface", "joined_at"),
    order=("revision",),
    open_while_null="left_at",
)
PAUSES = Table(
    "pauses",
    PauseInterval,
    key=("queue", "interface", "started_at"),
    order=("revision",),
    open_while_null="ended_at",
)
TABLES = (CALLS, SESSIONS, PAUSES)
_OF: dict[type[Record], Table] = {table.record: table for table in TABLES}


def table_of(record: Record) -> Table:
    return _OF[type(record)]
