"""The command line: check a configuration, show who should be in which queue at an instant, or
run the daemon. Commands return exit codes; only `hotline/__main__.py` exits the process."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn

from hotline.config import EXIT_CONFIG, Config, ConfigError, load_config
from hotline.config.problems import printable
from hotline.config.schema import FIRST_YEAR, LAST_YEAR
from hotline.core.roster import DesiredMember, Roster, desired_at, next_change, resolve_local

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("/etc/hotline/hotline.yaml")

_EXIT_CODES = f"""exit status:
  {EXIT_OK}   success
  {EXIT_USAGE}   bad command line
  {EXIT_CONFIG}  bad configuration (one line per problem on stderr)"""


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: the process's arguments); return the exit
    status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _ParserExit as stop:
        return stop.status
    command: Callable[[argparse.Namespace], int] = args.run
    return command(args)


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    roster = config.roster
    print(
        f"{args.config}: OK ({len(roster.responders)} responders, {len(roster.shifts)} shifts, "
        f"{len(roster.queues)} queues)"
    )
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    roster = config.roster
    at = _instant(args.at, roster)
    desired = desired_at(roster, at)
    members = {
        queue: sorted(desired[queue].values(), key=lambda member: member.responder)
        for queue in roster.queues
    }
    local_at = at.astimezone(roster.tz)
    if args.json:
        print(json.dumps({"at": local_at.isoformat(), "queues": _json_queues(members)}))
    else:
        print(_human_plan(roster, local_at, members))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    # Imported here: the daemon brings in the AMI, HTTP and database stacks, which the other
    # commands do not need and which should not be able to break them.
    from hotline import daemon  # noqa: PLC0415

    return daemon.main(config)


def _migrate(args: argparse.Namespace) -> int:
    from hotline.adapters import store  # noqa: PLC0415 - see _run

    def migrate(dsn: str, _config: Config) -> str:
        applied = asyncio.run(store.migrate(dsn))
        if applied:
            return f"applied {', '.join(applied)}; schema version {store.SCHEMA_VERSION}"
        return f"already at schema version {store.SCHEMA_VERSION}; nothing to do"

    return _with_database(args, "migrate", migrate)


def _purge(args: argparse.Namespace) -> int:
    from hotline.adapters import store  # noqa: PLC0415 - see _run

    def purge(dsn: str, config: Config) -> str:
        assert config.database is not None
        days = args.older_than_days or config.database.retention_days
        print(f"deleting records closed more than {days} days ago ...", file=sys.stderr)
        deleted = asyncio.run(store.purge(dsn, days, config.database.spool_dir))
        return f"deleted {deleted} rows older than {days} days"

    return _with_database(args, "purge", purge)


def _with_database(
    args: argparse.Namespace, name: str, action: Callable[[str, Config], str]
) -> int:
    """Run a database command: 78 for a configuration or schema problem, 1 if unreachable."""
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from hotline import daemon  # noqa: PLC0415 - see _run
    from hotline.adapters import log, store  # noqa: PLC0415

    # asyncpg's records, if any, go through the daemon's redacting pipeline.
    log.configure()
    dsn = _dsn(config, daemon.database_dsn)
    if dsn is None:
        return EXIT_CONFIG
    try:
        print(action(dsn, config))
    except store.SchemaError as error:
        print(f"hotline {name}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except store.StoreUnavailable as error:
        print(f"hotline {name}: cannot reach the database: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _dsn(config: Config, resolve: Callable[[Config], str | None]) -> str | None:
    """The database DSN, or None once the reason is on stderr."""
    try:
        dsn = resolve(config)
    except ConfigError as error:
        for problem in error.problems:
            print(f"{_shown(config.path)}: {problem}", file=sys.stderr)
        return None
    if dsn is None:
        print(
            f"{_shown(config.path)}: database: not configured (no call recording)", file=sys.stderr
        )
    return dsn


def _load(path: Path) -> Config | None:
    """The configuration at `path`, or None once its problems are on stderr."""
    try:
        return load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(f"{_shown(path)}: {problem}", file=sys.stderr)
        return None


def _instant(at: datetime | None, roster: Roster) -> datetime:
    """The instant `--at` names: now by default, a naive time read in the roster's zone."""
    if at is None:
        return datetime.now(roster.tz).replace(microsecond=0)
    if at.utcoffset() is None:
        return resolve_local(at.date(), at.time(), roster.tz)
    return at


def _json_queues(members: dict[str, list[DesiredMember]]) -> dict[str, list[dict[str, object]]]:
    return {
        queue: [
            {"responder": m.responder, "interface": m.interface, "penalty": m.penalty}
            for m in queue_members
        ]
        for queue, queue_members in members.items()
    }


def _human_plan(roster: Roster, at: datetime, members: dict[str, list[DesiredMember]]) -> str:
    lines = [f"Plan at {at.isoformat()} ({roster.tz})"]
    for queue, queue_members in members.items():
        minimum = roster.queues[queue].min_responders
        lines += ["", f"{queue}: {len(queue_members)} on duty (minimum {minimum})"]
        rows = [("RESPONDER", "NAME", "INTERFACE", "PENALTY")] + [
            (m.responder, roster.responders[m.responder].name, m.interface, str(m.penalty))
            for m in queue_members
        ]
        if queue_members:
            widths = [max(len(row[column]) for row in rows) for column in range(3)]
            lines += [
                "  "
                + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                + f"  {row[3]}"
                for row in rows
            ]
        else:
            lines.append("  (nobody)")
        if len(queue_members) < minimum:
            lines.append(
                f"  warning: {queue} has {len(queue_members)} on duty, "
                f"below its minimum of {minimum}"
            )
    change = next_change(roster, at)
    lines.append("")
    if change is None:
        lines.append("Next change: none (no shifts or exceptions ahead)")
    else:
        local_change = change.astimezone(roster.tz)
        lines.append(f"Next change: {local_change.isoformat()} ({_after(change - at)})")
    return "\n".join(lines)


def _after(delay: timedelta) -> str:
    minutes = int(delay.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"in {days} d {hours} h {minutes:02d} min" if days else f"in {hours} h {minutes:02d} min"


def _shown(path: Path) -> str:
    """A path as given, with any control character in it escaped."""
    return printable(str(path), 4096)


def _at_argument(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{printable(repr(text), 80)} is not an ISO 8601 date and time, e.g. 2026-12-25T03:00"
            " (in the roster's zone) or 2026-12-25T03:00-05:00"
        ) from None
    if not FIRST_YEAR <= at.year <= LAST_YEAR:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: the year must be {FIRST_YEAR} to {LAST_YEAR}"
        )
    return at


def _days_argument(text: str) -> int:
    days = int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else 0
    if not 1 <= days <= 36_500:
        raise argparse.ArgumentTypeError(f"{printable(repr(text), 80)} is not 1 to 36500 days")
    return days


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse exits the process itself on --help and usage errors; here those become a
    return value, so `main` stays callable from tests and only `__main__` exits."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _ParserExit(status)


def _parser() -> _Parser:
    parser = _Parser(
        prog="hotline",
        description=(
            "Control plane for a crisis hotline on Asterisk: keeps the queues staffed from a "
            "shift roster."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_option = _Parser(add_help=False)
    config_option.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the YAML configuration file (default: {DEFAULT_CONFIG})",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, description: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            parents=[config_option],
            help=summary,
            description=description,
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    command(
        "check-config",
        _check_config,
        "validate the configuration file",
        "Validate the configuration file and report every problem at once, each with its\n"
        "dotted path and line. The AMI secret is not read: it may be a credential that only\n"
        "the service can see.",
    )
    plan = command(
        "plan",
        _plan,
        "show who should be in which queue at an instant",
        "Show the responders each queue should have at an instant, according to the shifts\n"
        "and exceptions of the roster, warn about queues below their minimum, and show when\n"
        "the plan next changes. Asterisk is not contacted.",
    )
    plan.add_argument(
        "--at",
        type=_at_argument,
        metavar="DATETIME",
        help=(
            "the instant to plan for, ISO 8601 (default: now); without an offset it is a "
            "wall-clock time in the roster's zone, e.g. 2026-12-25T03:00"
        ),
    )
    plan.add_argument(
        "--json",
        action="store_true",
        help='print JSON: {"at": ..., "queues": {queue: [{"responder", "interface", "penalty"}]}}',
    )
    command(
        "migrate",
        _migrate,
        "create or upgrade the database schema",
        "Apply the pending schema migrations to the database of the configuration, each in\n"
        "one transaction. Safe to run again; the daemon refuses a schema it does not know.",
    )
    purge = command(
        "purge",
        _purge,
        "delete records past the retention period",
        "Delete call records, member sessions and pauses that closed more than the\n"
        "retention period ago (database.retention_days). The daemon does this daily.",
    )
    purge.add_argument(
        "--older-than-days",
        type=_days_argument,
        metavar="N",
        help="override database.retention_days for this run",
    )
    command(
        "run",
        _run,
        "run the daemon",
        "Run the control plane: keep the Asterisk queues in line with the roster, record\n"
        "calls and serve /healthz, /readyz and /metrics, until SIGTERM or SIGINT stops it\n"
        "(records still in memory are flushed to Postgres or the spool first). SIGHUP\n"
        "re-reads the configuration: a valid roster takes effect at the next round on the\n"
        "same AMI session, an invalid one is refused and logged; settings that only a\n"
        "restart changes (ami, http, database, privacy, calls, the set of queues and their\n"
        "service levels) are named in the log. Under systemd it reports readiness and\n"
        "watchdog pings through $NOTIFY_SOCKET.",
    )
    return parser
