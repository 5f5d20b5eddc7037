"""Loading the configuration file: the YAML read with the line of every node, validated against
the model and the checks between sections, then turned into the frozen settings. Every problem
is reported at once, each with its dotted path and line."""

from __future__ import annotations

import types
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError

from hotline.config.checks import cross_section_problems
from hotline.config.problems import (
    ConfigError,
    Loc,
    Problem,
    problem_from,
    render,
    syntax_problem,
)
from hotline.config.schema import ConfigModel, DatabaseModel, as_instant
from hotline.config.settings import (
    AmiSettings,
    CallSettings,
    Config,
    DatabaseSettings,
    HttpSettings,
    PrivacySettings,
    QueueService,
    ReconcileSettings,
    SecretRef,
)
from hotline.core.roster import (
    ExceptionKind,
    QueuePolicy,
    Responder,
    Roster,
    RosterException,
    Shift,
)


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
    problems: list[Problem] = []
    try:
        data, lines = _Document.parse(text, problems)
    except yaml.YAMLError as error:
        raise ConfigError([syntax_problem(error)], path) from None
    if data is None:
        raise ConfigError(["the file is empty (line 1)"], path)
    model: ConfigModel | None = None
    try:
        model = ConfigModel.model_validate(data)
    except ValidationError as error:
        problems += [problem_from(detail, ConfigModel) for detail in error.errors()]
    problems += cross_section_problems(data)
    if problems or model is None:
        raise ConfigError(render(problems, lines), path)
    return _convert(model, path)


# --- YAML with line numbers ----------------------------------------------------------------------

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
    timestamps (which the schema parses itself, to resolve local times in the roster's zone).
    """

    def __init__(self, loader: yaml.SafeLoader, problems: list[Problem]) -> None:
        self._loader = loader
        self._problems = problems
        self.lines: dict[Loc, int] = {(): 1}
        self._open: set[int] = set()  # ids of the collections being built, to catch cycles

    @classmethod
    def parse(cls, text: str, problems: list[Problem]) -> tuple[object, dict[Loc, int]]:
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

    def _value(self, node: yaml.Node, loc: Loc) -> object:
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

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
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


# --- conversion to the settings ------------------------------------------------------------------


def _convert(model: ConfigModel, path: Path) -> Config:
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
                start=as_instant(e.from_, zone),
                end=as_instant(e.until, zone),
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
                setting="ami",
            ),
            action_timeout_s=ami.action_timeout,
            ping_interval_s=ami.ping_interval,
            ping_timeout_s=ami.ping_timeout,
            boot_timeout_s=ami.boot_timeout,
            backoff_min_s=ami.backoff_min,
            backoff_max_s=ami.backoff_max,
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
            keep_closed_s=model.calls.keep_closed,
            upstream_rollover_after_s=model.calls.upstream_rollover_after,
            upstream_tolerance_s=model.calls.upstream_tolerance,
        ),
    )


def _database(db: DatabaseModel | None, base: Path) -> DatabaseSettings | None:
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
        flush_timeout_s=db.flush_timeout,
    )
