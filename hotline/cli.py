"""The command line: check a configuration, show who should be in which queue at an instant, or
run the daemon. Commands return exit codes; only `hotline/__main__.py` exits the process."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

from hotline.app import coverage as coverage_app
from hotline.config import EXIT_CONFIG, Config, ConfigError, load_config
from hotline.config.problems import printable
from hotline.config.schema import FIRST_YEAR, LAST_YEAR, NAME
from hotline.core import coverage, kpis, report_output
from hotline.core.access import token_hash
from hotline.core.featurecodes import render_dialplan
from hotline.core.forecast import SLOTS_PER_DAY, Forecast
from hotline.core.plan import plan_json
from hotline.core.roster import (
    DesiredMember,
    Override,
    Roster,
    desired_at,
    explain,
    next_change,
    resolve_local,
)
from hotline.core.supervision import ROLES, ActionRefused

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("/etc/hotline/hotline.yaml")
# How long `plan` waits for the database's overrides before planning without them.
_PLAN_DB_TIMEOUT_S = 3.0

_EXIT_CODES = f"""exit status:
  {EXIT_OK}   success
  {EXIT_USAGE}   bad command line
  {EXIT_CONFIG}  bad configuration (one line per problem on stderr)"""

_DATABASE_EXIT_CODES = f"""exit status:
  {EXIT_OK}   success
  {EXIT_FAILURE}   the database cannot be reached
  {EXIT_USAGE}   bad command line (--to not after --from included)
  {EXIT_CONFIG}  bad configuration or database schema (one line per problem on stderr)"""


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
    # Warnings about the time ahead (docs/staffing.md) go to stderr like problems, marked as
    # warnings, and leave the exit status 0.
    for warning in coverage_app.roster_warnings(config, datetime.now(UTC)):
        print(f"{_shown(args.config)}: warning: {warning}", file=sys.stderr)
    print(
        f"{args.config}: OK ({len(roster.responders)} responders, {len(roster.shifts)} shifts, "
        f"{len(roster.queues)} queues)"
    )
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    at = _instant(args.at, config.roster)
    overrides, unread = _stored_overrides(config, at)
    roster = replace(config.roster, overrides=overrides)
    desired = desired_at(roster, at)
    members = {
        queue: sorted(desired[queue].values(), key=lambda member: member.responder)
        for queue in roster.queues
    }
    local_at = at.astimezone(roster.tz)
    if args.json:
        shown = plan_json(roster, at)
        shown["overrides_read"] = unread is None
        if unread is not None:
            shown["overrides_problem"] = unread
        print(json.dumps(shown))
    else:
        print(_human_plan(roster, local_at, members))
        if roster.overrides or unread is not None:
            print(_human_overrides(roster, at, unread))
    return EXIT_OK


def _stored_overrides(config: Config, at: datetime) -> tuple[tuple[Override, ...], str | None]:
    """The supervisors' overrides not cancelled that run past `at`, from the database when the
    configuration has one; with why they could not be read, if so (the plan is then the
    roster's alone, never a failure)."""
    if config.database is None:
        return (), None
    from hotline import daemon  # noqa: PLC0415 - see _run
    from hotline.adapters import log  # noqa: PLC0415
    from hotline.adapters.store.supervision import SupervisionStore  # noqa: PLC0415

    log.configure()  # to stderr: stdout is the plan
    try:
        dsn = daemon.database_dsn(config)
    except ConfigError as error:
        return (), f"the database password cannot be read ({'; '.join(error.problems)})"
    assert dsn is not None  # a database is configured

    async def load() -> list[Override]:
        store = SupervisionStore(dsn, timeout_s=_PLAN_DB_TIMEOUT_S)
        try:
            return await store.load_overrides(at)
        finally:
            await store.close()

    try:
        return tuple(asyncio.run(load())), None
    except ActionRefused as error:
        return (), str(error)


def _human_overrides(roster: Roster, at: datetime, unread: str | None) -> str:
    lines = ["", "Overrides:"]
    if unread is not None:
        lines.append(f"  could not be read: {unread}; this plan follows the roster alone")
    for override in sorted(roster.overrides, key=lambda o: (o.start, o.id)):
        if override.end <= at:
            continue
        queues = ", ".join(sorted(override.queues)) if override.queues else "all queues"
        start = override.start.astimezone(roster.tz).isoformat()
        end = override.end.astimezone(roster.tz).isoformat()
        lines.append(
            f"  {override.id}: {override.responder} {override.kind.value} duty in {queues},"
            f" {start} until {end}"
        )
    return "\n".join(lines)


def _coverage(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    start = _instant(args.start, config.roster)
    overrides, unread = _stored_overrides(config, start)
    if unread is not None:
        print(f"hotline coverage: overrides not read: {unread}", file=sys.stderr)
    roster = replace(config.roster, overrides=overrides)
    forecast, source, why = _coverage_forecast(config)
    result = coverage.coverage(
        roster, start, args.days * SLOTS_PER_DAY, forecast, coverage_app.targets(config)
    )
    render = coverage.as_json if args.json else coverage.as_text
    print(render(result, roster.tz, source, why))
    return EXIT_OK


def _coverage_forecast(config: Config) -> tuple[Forecast, coverage.ForecastSource, str]:
    """The forecast from the call records when a database is configured and answers; the floor
    forecast otherwise, with why."""
    floor = coverage_app.floor_forecast(config)
    if config.database is None:
        return floor, "floor", "no database configured"
    from hotline import daemon  # noqa: PLC0415 - see _run
    from hotline.adapters import log, store  # noqa: PLC0415

    log.configure()  # to stderr: stdout is the coverage
    try:
        dsn = daemon.database_dsn(config)
    except ConfigError as error:
        return floor, "floor", f"the database password cannot be read: {'; '.join(error.problems)}"
    assert dsn is not None  # a database is configured
    try:
        forecast = asyncio.run(store.load_forecast(dsn, config, datetime.now(UTC)))
    except (store.StoreUnavailable, store.SchemaError) as error:
        return floor, "floor", f"the database cannot be read: {printable(str(error), 200)}"
    weeks = config.reports.forecast_weeks
    return forecast, "history", f"calls of the trailing {weeks} weeks"


def _pbx_dialplan(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    pauses = config.pauses
    digits = {name: reason.digit for name, reason in pauses.reasons.items()}
    print(render_dialplan(digits, pauses.hard_call_reason, str(args.config)), end="")
    return EXIT_OK


def _token(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(32)
    entry = f'- {{name: {args.name}, role: {args.role}, sha256: "{token_hash(token).hex()}"}}'
    print(f"token: {token}")
    print(f"http.tokens entry: {entry}")
    return EXIT_OK


def _token_name(text: str) -> str:
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError("use letters, digits, '_', '.' and '-'")
    return text


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


def _report(args: argparse.Namespace) -> int:
    from hotline.adapters import store  # noqa: PLC0415 - see _run

    def report(dsn: str, config: Config) -> str:
        tz = config.roster.tz
        start, end = _instant(args.start, config.roster), _instant(args.end, config.roster)
        if end <= start:
            raise _UsageError("--to must be after --from")
        result = asyncio.run(
            store.read_report(
                dsn,
                config,
                start=start,
                end=end,
                by=args.by,
                group=args.group,
                now=datetime.now(UTC),
            )
        )
        if args.format == "csv":
            return report_output.as_csv(result.rows, args.group, tz)
        if args.format == "json":
            return report_output.as_json(
                result.rows,
                group=args.group,
                by=args.by,
                start=start.astimezone(tz).isoformat(),
                end=end.astimezone(tz).isoformat(),
                tz=tz,
            )
        return report_output.as_table(result.rows, args.group, tz)

    return _with_database(args, "report", report)


class _UsageError(Exception):
    """A command line that parses but asks for something impossible."""


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
        text = action(dsn, config)
        sys.stdout.write(text if text.endswith("\n") else f"{text}\n")
    except _UsageError as error:
        print(f"hotline {name}: {error}", file=sys.stderr)
        return EXIT_USAGE
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


def _human_plan(roster: Roster, at: datetime, members: dict[str, list[DesiredMember]]) -> str:
    lines = [f"Plan at {at.isoformat()} ({roster.tz})"]
    standings = explain(roster, at)
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
        lines += [
            f"  not added: {s.responder} {_uncertified(roster, s.responder, s.lacking)}"
            for s in sorted(standings[queue], key=lambda s: s.responder)
            if s.why == "certification"
        ]
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


def _uncertified(roster: Roster, responder: str, lacking: tuple[str, ...]) -> str:
    """Why a scheduled responder is not added: "lacks certification X (lapsed ...)"."""
    held = roster.responders[responder].certifications
    reasons = [
        f"{name} (lapsed {held[name].astimezone(roster.tz).isoformat(timespec='minutes')})"
        if name in held
        else f"{name} (not held)"
        for name in lacking
    ]
    noun = "certification" if len(reasons) == 1 else "certifications"
    return f"lacks {noun} {', '.join(reasons)}"


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


def _coverage_days(text: str) -> int:
    days = int(text) if text.isascii() and text.isdigit() and len(text) <= 2 else 0
    if not 1 <= days <= 35:
        raise argparse.ArgumentTypeError(f"{printable(repr(text), 80)} is not 1 to 35 days")
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
        "the service can see. Warnings about the time ahead (certifications that lapse within\n"
        "roster_checks.certification_warn_days, less than roster_checks.min_rest_hours of rest\n"
        "between a responder's shifts) go to stderr marked as warnings; they leave the exit\n"
        "status 0 (docs/staffing.md).",
    )
    command(
        "pbx-dialplan",
        _pbx_dialplan,
        "print the responders' feature codes as an Asterisk dialplan include",
        "Print the dialplan that maps each pause reason's digit (pauses.reasons) to the\n"
        "reason, for extensions_responder_codes.conf: deploy renders it from the same file\n"
        "the daemon reads, so the phones and the console offer the same reasons\n"
        '(docs/phones.md, "Feature codes"). Asterisk is not contacted.',
    )
    plan = command(
        "plan",
        _plan,
        "show who should be in which queue at an instant",
        "Show the responders each queue should have at an instant, according to the shifts\n"
        "and exceptions of the roster and the supervisors' overrides (read from the database\n"
        "when one is configured; the output says so when they cannot be read), warn about\n"
        "queues below their minimum, and show when the plan next changes. Asterisk is not\n"
        "contacted.",
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
        help=(
            'print JSON: {"at": ..., "queues": {queue: [{"responder", "interface", "penalty",'
            ' "why"}]}, "excluded", "min_responders", "below_minimum", "surging", "overrides",'
            ' "overrides_read", "next_change"} (docs/supervision.md, "The plan")'
        ),
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
    report = command(
        "report",
        _report,
        "KPIs per period from the call records",
        "Report, per hour, day, week or month of the roster's time zone (a day across a DST\n"
        "change is 23 or 25 h), the figures defined in docs/reports.md: calls offered,\n"
        "answered, answered within the queue's sl_seconds, service level, ASA, p90 wait,\n"
        "abandoned (short abandons apart), rollover and partner results, joinempty, mean talk,\n"
        "time staffed and paused, occupancy and pause time by reason. Reads Postgres only;\n"
        "stdout holds the report and nothing else.",
    )
    report.epilog = _DATABASE_EXIT_CODES
    for flag, dest, what in (("--from", "start", "start"), ("--to", "end", "end (excluded)")):
        report.add_argument(
            flag,
            dest=dest,
            type=_at_argument,
            required=True,
            metavar="DATETIME",
            help=(
                f"the window's {what}, ISO 8601; without an offset a wall-clock time in the "
                "roster's zone, e.g. 2026-11-01 or 2026-11-01T08:00"
            ),
        )
    report.add_argument("--by", choices=kpis.BYS, default="day", help="period (default: day)")
    report.add_argument("--group", choices=kpis.GROUPS, help="one row per period and group")
    report.add_argument(
        "--format",
        choices=report_output.FORMATS,
        default="table",
        help="table (default), csv (RFC 4180, header row) or json",
    )
    covered = command(
        "coverage",
        _coverage,
        "show the gaps in the roster over the coming days",
        "For every 15-minute slot and queue, count the responders the roster schedules for\n"
        "the whole slot (shifts, exceptions, certifications, and the supervisors' overrides\n"
        "from the database, as `plan` reads them) against the queue's min_responders and what\n"
        "the forecast load needs by Erlang C at the queue's service level; list the gaps\n"
        "(consecutive short slots of a queue), worst first (docs/staffing.md). The forecast\n"
        "comes from the call records when a database is configured and answers, else from\n"
        "reports.forecast_floor; the output says which. Asterisk is not contacted.",
    )
    covered.add_argument(
        "--from",
        dest="start",
        type=_at_argument,
        metavar="DATETIME",
        help=(
            "the start, ISO 8601 (default: now), rounded down to its quarter hour; without an"
            " offset a wall-clock time in the roster's zone"
        ),
    )
    covered.add_argument(
        "--days",
        type=_coverage_days,
        default=7,
        metavar="N",
        help="how many days of 24 h to look at, 1 to 35 (default: 7)",
    )
    covered.add_argument(
        "--json",
        action="store_true",
        help=(
            'print JSON: {"from", "to", "slot_minutes", "forecast": {"source", "why"}, "queues":'
            ' {queue: {"minimum", "scheduled": [...], "needed": [...]}}, "gaps": [{"queue",'
            ' "from", "to", "short_of", "shortfall", "missing_hours"}]}'
        ),
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
    token = command(
        "token",
        _token,
        "make a new API token and the line that admits it",
        "Print a new random bearer token for the API and the console, and the entry for\n"
        "http.tokens that admits it: the configuration keeps only the token's SHA-256, so\n"
        'the token is shown this once (docs/api.md, "Tokens"). Nothing is read or written.',
    )
    token.add_argument("--name", required=True, type=_token_name, help="who holds the token")
    token.add_argument("--role", required=True, choices=ROLES, help="what it may do")
    return parser
