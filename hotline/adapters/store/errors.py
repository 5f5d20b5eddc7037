"""What a failed query means: an outage to wait out (connection, timeout), data Postgres refuses
(constraint), or anything else (other); and how an error is told without the row's values
(docs/data-model.md, "Error classes")."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import asyncpg
from asyncpg.exceptions import _base

from hotline.core.records import WriteErrorKind

CONSTRAINT_ERRORS = (
    asyncpg.IntegrityConstraintViolationError,  # 23: not null, check, unique, foreign key
    asyncpg.DataError,  # 22: out of range, invalid text representation
    _base.DataError,  # a value asyncpg cannot encode for its column
)
# 54000 alone of class 54: a value too big for its index ("index row requires N bytes"). Its
# subclasses (54001 statement too complex, 54011 too many columns, 54023 too many arguments) are
# the statement's, not a row's.
_TOO_BIG_FOR_AN_INDEX = "54000"
_TIMEOUT_ERRORS = (TimeoutError, asyncpg.QueryCanceledError)  # client and server-side timeouts
CONNECTION_ERRORS = (
    OSError,  # refused, reset, unreachable
    asyncpg.InterfaceError,  # connection closed, pool closing
    asyncpg.PostgresConnectionError,  # 08: ConnectionDoesNotExist, ConnectionFailure
    asyncpg.OperatorInterventionError,  # 57: AdminShutdown (57P01, the first query after a
    # server restart), CrashShutdown, CannotConnectNow (57P03, starting up)
    asyncpg.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.InvalidAuthorizationSpecificationError,  # 28: a password being rotated
    asyncpg.InvalidCatalogNameError,  # 3D000: the database is not (yet) created
)


class StoreUnavailable(Exception):
    """Postgres could not be reached (or its schema is wrong) for a query that needs it now."""


def classify(exc: BaseException) -> WriteErrorKind:
    """Order matters: asyncpg's client-side DataError is an InterfaceError, and
    QueryCanceledError an OperatorInterventionError."""
    if isinstance(exc, CONSTRAINT_ERRORS):
        return "constraint"
    if (
        isinstance(exc, asyncpg.ProgramLimitExceededError)
        and getattr(exc, "sqlstate", None) == _TOO_BIG_FOR_AN_INDEX
    ):
        return "constraint"
    if isinstance(exc, _TIMEOUT_ERRORS):
        return "timeout"
    if isinstance(exc, CONNECTION_ERRORS):
        return "connection"
    return "other"


@contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """Raise StoreUnavailable for what is not an "other" error (Postgres away, slow or refusing
    the data), with the error described; anything else as it is."""
    try:
        yield
    except Exception as exc:
        if classify(exc) == "other":
            raise
        raise StoreUnavailable(describe(exc)) from exc


# `invalid input syntax for type integer: "abc"`, `invalid input for query argument $3: ['x', ...]
# (...)` (asyncpg's own, quoting the whole column of the batch): the message, then the value.
_QUOTED_VALUE = re.compile(r"^(?P<message>.*?): [\"'\[(].*$")
_ARGUMENT = re.compile(r"query argument \$(\d+)$")


def describe(exc: BaseException, columns: Sequence[str] = ()) -> str:
    """The error without the row's values (a caller key among them): without Postgres's DETAIL,
    which repeats them, and without a value its first line quotes. `columns`, in the order of the
    statement's arguments, name the column of an argument asyncpg could not encode."""
    sqlstate = getattr(exc, "sqlstate", None)
    constraint = getattr(exc, "constraint_name", None)
    first = str(exc).splitlines()[0] if str(exc) else ""
    if quoted := _QUOTED_VALUE.match(first):
        first = quoted["message"]
        argument = _ARGUMENT.search(first)
        if argument and 0 < int(argument[1]) <= len(columns):
            first += f" ({columns[int(argument[1]) - 1]})"
    text = f"{type(exc).__name__}: {first}"
    if sqlstate:
        text += f" (sqlstate {sqlstate}"
        text += f", constraint {constraint})" if constraint else ")"
    return text
