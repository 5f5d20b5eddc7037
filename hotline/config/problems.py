"""What is wrong with a configuration: ConfigError, the exit status it leads to, and the
rendering of YAML and pydantic errors into one line per problem, "dotted.path: message (line N)".

Every line is safe to print on a terminal or into a log: the file's keys and values are shown with
their control characters escaped (a carriage return, a line break or an escape sequence in a key
reaches nobody's terminal) and cut to a bounded length, and so is every line as a whole.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import ErrorDetails

# sysexits' EX_CONFIG; the systemd unit lists it in RestartPreventExitStatus, so a bad
# configuration stops the service instead of restarting it in a loop.
EXIT_CONFIG = 78

Loc = tuple[str | int, ...]
# Where, what, and the line when it is not that of the node at the path (a duplicate key).
Problem = tuple[Loc, str, int | None]

# Bounds on what a problem echoes: a value from the file, one key of a path, a path, a message,
# and a whole line (the file's path, printed before it, apart). More problems than MAX_PROBLEMS are
# counted on one last line rather than listed.
SHOWN_CHARS = 40
KEY_CHARS = 40
PATH_CHARS = 120
MESSAGE_CHARS = 200
LINE_CHARS = 360
MAX_PROBLEMS = 100


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one "path: message (line N)" each."""

    def __init__(self, problems: list[str], path: Path | None = None) -> None:
        # The last guard: whoever wrote the line, it leaves here printable and bounded.
        self.problems = [printable(problem, LINE_CHARS) for problem in problems]
        self.path = path
        prefix = f"{path}: " if path is not None else ""
        super().__init__("\n".join(prefix + problem for problem in self.problems))


def printable(text: str, limit: int) -> str:
    """`text` with every character that is not printable escaped as Python would (\\r, \\x1b,
    \\u202e...), cut to `limit` characters with "..." when longer."""
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def syntax_problem(error: yaml.YAMLError, text: str = "") -> str:
    """A YAML syntax error in `text` as one problem, with its line and column."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        context = f"{error.context}: " if error.context else ""
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML: {printable(f'{context}{error.problem}', MESSAGE_CHARS)} ({where})"
    if isinstance(error, yaml.reader.ReaderError) and isinstance(error.character, int):
        # Its own text spans lines and names a stream, not a line.
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        return (
            f"invalid YAML: character #x{error.character:02x} is not allowed "
            f"(line {line}, column {column})"
        )
    return f"invalid YAML: {printable(str(error).splitlines()[0], MESSAGE_CHARS)}"


def problem_from(detail: ErrorDetails, model: type[BaseModel]) -> Problem:
    """One pydantic error of validating `model` as a problem."""
    # Pydantic marks dict-key errors with a trailing "[key]"; the path to the key says it all.
    loc = tuple(part for part in detail["loc"] if part != "[key]")
    return loc, _message(detail, loc, model), None


def _message(detail: ErrorDetails, loc: Loc, model: type[BaseModel]) -> str:
    kind = detail["type"]
    value = detail.get("input")
    context: dict[str, Any] = dict(detail.get("ctx") or {})
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc, model)
    if kind in ("value_error", "assertion_error"):
        message = str(context.get("error", detail["msg"]))
        if isinstance(value, str) and len(value) > SHOWN_CHARS:
            # The validators quote the value whole; a long one is shown cut, like any other.
            message = message.replace(repr(value), _shown(value))
        return message
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
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # a bound of 0.0 reads better as 0
    if isinstance(value, int) and value.bit_length() > 64:
        return "a number too large for any setting"
    if isinstance(value, bytes):
        return f"binary data ({len(value)} bytes)"
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    return printable(repr(value), SHOWN_CHARS * 2)


def _unknown_key_message(loc: Loc, model: type[BaseModel]) -> str:
    allowed = _keys_of(loc[:-1], model)
    key = str(loc[-1]) if loc else ""
    if not allowed:
        return "unknown key"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key, did you mean {close[0]!r}?"
    return f"unknown key, expected one of: {', '.join(allowed)}"


def _keys_of(loc: Loc, model: type[BaseModel]) -> list[str]:
    """The keys the model at `loc` accepts, found by walking the annotations from `model`."""
    annotation: Any = model
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


def render(problems: list[Problem], lines: Mapping[Loc, int]) -> list[str]:
    """One line a problem, in line order; the same line twice only once. Past MAX_PROBLEMS, one
    last line says how many more there are."""
    rendered: dict[str, int] = {}
    for loc, message, own_line in problems:
        line = own_line if own_line is not None else _line_of(loc, lines)
        path, said = _dotted(loc), printable(message, MESSAGE_CHARS)
        text = f"{path}: {said} (line {line})" if path else f"{said} (line {line})"
        rendered.setdefault(text, line)
    ordered = sorted(rendered, key=rendered.__getitem__)  # by line, then in order of discovery
    if len(ordered) > MAX_PROBLEMS:
        more = len(ordered) - MAX_PROBLEMS
        return [*ordered[:MAX_PROBLEMS], f"... and {more} more problems"]
    return ordered


def _line_of(loc: Loc, lines: Mapping[Loc, int]) -> int:
    # A missing key has no line of its own: point at the nearest enclosing node.
    for length in range(len(loc), -1, -1):
        if loc[:length] in lines:
            return lines[loc[:length]]
    return 1


def _dotted(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            key = printable(str(part), KEY_CHARS)
            path += f".{key}" if path else key
    if len(path) > PATH_CHARS:  # deep and long: its start and its end tell where
        half = (PATH_CHARS - 3) // 2
        path = f"{path[:half]}...{path[-half:]}"
    return path
