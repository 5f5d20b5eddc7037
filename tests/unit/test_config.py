"""The configuration file: a valid example converts to the core's values, and every kind of
problem is reported with its dotted path and line, all at once."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.config import AmiTlsSettings, ConfigError, SecretRef, load_config, parse_config
from hotline.core.roster import ExceptionKind, QueuePolicy, Responder

PATH = Path("hotline.yaml")
NEW_YORK = ZoneInfo("America/New_York")

# Line numbers matter below: each line of this file is referred to by number.
VALID = """\
timezone: America/New_York
ami:
  username: hotline
  secret_file: /run/credentials/hotline.service/ami-secret
queues:
  crisis: {min_responders: 2}
  text:
responders:
  r-ana: {name: Ana Ruiz, interface: PJSIP/1001, queues: {crisis: 0}}
  r-ben: {name: Ben Ode, interface: Local/1002@responders/n, state_interface: PJSIP/1002, queues: {crisis: 1, text: 0}}
shifts:
  - {name: night, days: [fri, sat], start: "22:00", end: "06:00", responders: [r-ana]}
  - {name: day, days: daily, start: 06:00, end: 22:00, responders: [r-ben]}
exceptions:
  - {responder: r-ana, from: "2026-12-24T18:00", until: "2026-12-26T06:00", kind: off}
  - {responder: r-ben, from: "2026-12-25T00:00+00:00", until: 2026-12-25T12:00:00Z, kind: on}
"""  # noqa: E501 - the lines are the test data


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, PATH)
    return caught.value.problems


def edited(*replacements: tuple[str, str]) -> str:
    text = VALID
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_valid_example_loads_into_the_core_values() -> None:
    config = parse_config(VALID, PATH)
    roster = config.roster
    assert config.path == PATH
    assert roster.tz == NEW_YORK
    assert dict(roster.queues) == {
        "crisis": QueuePolicy("crisis", 2),
        "text": QueuePolicy("text", 1),
    }
    assert list(roster.queues) == ["crisis", "text"]
    assert roster.responders["r-ana"] == Responder(
        "r-ana", "Ana Ruiz", "PJSIP/1001", "PJSIP/1001", roster.responders["r-ana"].queues
    )
    assert dict(roster.responders["r-ana"].queues) == {"crisis": 0}
    ben = roster.responders["r-ben"]
    assert (ben.interface, ben.state_interface) == ("Local/1002@responders/n", "PJSIP/1002")
    assert dict(ben.queues) == {"crisis": 1, "text": 0}
    night, day = roster.shifts
    assert (night.name, night.days, night.start, night.end) == (
        "night",
        frozenset({4, 5}),
        time(22),
        time(6),
    )
    assert night.responders == ("r-ana",)
    assert (day.days, day.start, day.end) == (frozenset(range(7)), time(6), time(22))


def test_naive_exception_times_are_local_and_ones_with_an_offset_are_taken_as_given() -> None:
    off, on = parse_config(VALID, PATH).roster.exceptions
    assert off.kind is ExceptionKind.OFF
    assert off.start == datetime(2026, 12, 24, 23, 0, tzinfo=UTC)
    assert off.end == datetime(2026, 12, 26, 11, 0, tzinfo=UTC)
    assert on.kind is ExceptionKind.ON
    assert (on.start, on.end) == (
        datetime(2026, 12, 25, 0, tzinfo=UTC),
        datetime(2026, 12, 25, 12, tzinfo=UTC),
    )


def test_naive_exception_time_skipped_by_dst_moves_to_the_change() -> None:
    text = edited(('from: "2026-12-24T18:00"', 'from: "2026-03-08T02:30"'))
    off = parse_config(text, PATH).roster.exceptions[0]
    assert off.start == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_optional_settings_take_their_defaults() -> None:
    config = parse_config(VALID, PATH)
    assert (config.ami.host, config.ami.port, config.ami.username) == (
        "127.0.0.1",
        5038,
        "hotline",
    )
    assert (config.ami.action_timeout_s, config.ami.ping_interval_s) == (5.0, 5.0)
    assert config.ami.ping_timeout_s == 3.0
    assert config.ami.boot_timeout_s == 60.0
    assert (config.ami.backoff_min_s, config.ami.backoff_max_s) == (0.5, 2.0)
    assert (config.calls.abandon_grace_s, config.calls.stale_after_s) == (5.0, 6 * 3600.0)
    assert config.calls.keep_closed_s == 4 * 3600.0
    assert config.calls.upstream_rollover_after_s is None
    assert config.calls.upstream_tolerance_s == 2.0
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9470)
    assert config.reconcile.resync_interval_s == 60.0


def test_given_settings_override_the_defaults() -> None:
    text = edited(
        (
            "  username: hotline\n",
            "  username: hotline\n  host: pbx.example\n  port: 5039\n  action_timeout: 2.5\n"
            "  boot_timeout: 30\n  backoff_min: 1\n  backoff_max: 8\n  tls: {ca_file: ca.pem}\n",
        ),
        ("queues:\n", 'http: {listen: "[::1]:8080"}\nreconcile: {resync_interval: 15}\nqueues:\n'),
        ("queues:\n", "calls: {keep_closed: 600}\nqueues:\n"),
    )
    config = parse_config(text, PATH)
    assert (config.ami.host, config.ami.port, config.ami.action_timeout_s) == (
        "pbx.example",
        5039,
        2.5,
    )
    assert (config.ami.boot_timeout_s, config.ami.backoff_min_s, config.ami.backoff_max_s) == (
        30.0,
        1.0,
        8.0,
    )
    assert config.ami.tls == AmiTlsSettings(ca_file=Path("ca.pem"), server_name="pbx.example")
    assert (config.http.host, config.http.port) == ("::1", 8080)
    assert config.reconcile.resync_interval_s == 15.0
    assert config.calls.keep_closed_s == 600.0


def test_the_secret_file_need_not_exist_to_load_the_configuration() -> None:
    config = parse_config(VALID, PATH)
    assert config.ami.secret == SecretRef(
        file=Path("/run/credentials/hotline.service/ami-secret"), env=None, setting="ami"
    )


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('end: "06:00"', 'end: "25:00"', "shifts[0].end: '25:00' is not a time (line 12)"),
        (
            "start: 06:00",
            "start: 6pm",
            "shifts[1].start: '6pm' is not a time, expected HH:MM (line 13)",
        ),
        (
            "[fri, sat]",
            "[fri, fry]",
            "shifts[0].days[1]: 'fry' is not a day: use mon, tue, wed, thu, fri, sat, sun or"
            " daily (line 12)",
        ),
        ("days: daily, ", "days: [], ", "shifts[1].days: must not be empty (line 13)"),
        (
            "responders: [r-ana]",
            "responders: [r-anna]",
            "shifts[0].responders[0]: unknown responder 'r-anna', did you mean 'r-ana'? (line 12)",
        ),
        (
            "queues: {crisis: 0}",
            "queues: {crisis: 0, crises: 1}",
            "responders.r-ana.queues.crises: unknown queue 'crises', did you mean 'crisis'?"
            " (line 9)",
        ),
        (
            "queues: {crisis: 0}",
            "queues: {crisis: -1}",
            "responders.r-ana.queues.crisis: must be at least 0, got -1 (line 9)",
        ),
        (
            "interface: PJSIP/1001",
            "interface: PJSIP1001",
            "responders.r-ana.interface: 'PJSIP1001' is not an interface: expected"
            " TECH/resource, e.g. PJSIP/1001 (line 9)",
        ),
        (
            "name: Ana Ruiz",
            "name: 12",
            "responders.r-ana.name: expected text, got 12 (line 9)",
        ),
        (
            "timezone: America/New_York",
            "timezone: America/New_Yrok",
            "timezone: 'America/New_Yrok' is not an IANA time zone, e.g. America/New_York (line 1)",
        ),
        ("  username: hotline\n", "", "ami.username: required, but missing (line 2)"),
        (
            "  username: hotline\n",
            "  username: hotline\n  prot: 5039\n",
            "ami.prot: unknown key, did you mean 'port'? (line 4)",
        ),
        (
            "  username: hotline\n",
            "  username: hotline\n  port: '5038'\n",
            "ami.port: '5038' is not a whole number (line 4)",
        ),
        (
            "  username: hotline\n",
            "  username: hotline\n  secret_env: AMI_SECRET\n",
            "ami: set exactly one of secret_file and secret_env (line 2)",
        ),
        (
            "  username: hotline\n",
            "  username: hotline\n  backoff_min: 3\n",
            "ami.backoff_max: must be at least backoff_min (line 2)",
        ),
        (
            "queues:\n",
            "http: {listen: localhost}\nqueues:\n",
            "http.listen: 'localhost' is not host:port, e.g. 127.0.0.1:9470 (line 5)",
        ),
        (
            "queues:\n",
            "reconcile: {resync_interval: 0}\nqueues:\n",
            "reconcile.resync_interval: must be greater than 0, got 0 (line 5)",
        ),
        (
            "{min_responders: 2}",
            "{min_responders: two}",
            "queues.crisis.min_responders: 'two' is not a whole number (line 6)",
        ),
        (
            "  r-ben: {",
            "  r-ana: {name: Ana Again, interface: PJSIP/1009}\n  r-ben: {",
            "responders.r-ana: duplicate key, already defined on line 9 (line 10)",
        ),
        (
            "name: day",
            "name: night",
            "shifts[1].name: duplicate shift name 'night', already used by shifts[0] (line 13)",
        ),
        (
            'until: "2026-12-26T06:00"',
            'until: "2026-12-24T06:00"',
            "exceptions[0].until: must be after from (line 15)",
        ),
        (
            'from: "2026-12-24T18:00"',
            "from: Christmas Eve",
            "exceptions[0].from: 'Christmas Eve' is not an ISO 8601 date and time, e.g."
            " 2026-12-24T18:00 (line 15)",
        ),
        (
            "kind: off",
            "kind: maybe",
            "exceptions[0].kind: 'maybe' is not one of 'off' or 'on' (line 15)",
        ),
        (
            "{responder: r-ana, from",
            "{responder: ghost, from",
            "exceptions[0].responder: unknown responder 'ghost' (line 15)",
        ),
        (
            "{responder: r-ana, from",
            "{responder: r-ana, note: holiday, from",
            "exceptions[0].note: unknown key, expected one of: responder, from, until, kind"
            " (line 15)",
        ),
    ],
)
def test_each_kind_of_problem_names_its_path_and_line(old: str, new: str, problem: str) -> None:
    # Each edit breaks one thing, so exactly one problem, and no knock-on ones, must come back.
    assert problems_of(edited((old, new))) == [problem]


def test_a_bad_responder_id_is_reported_at_its_key() -> None:
    text = edited(
        ("r-ben: {", "r ben: {"),
        ("responders: [r-ben]", "responders: []"),
        ("{responder: r-ben,", "{responder: r-ana,"),
    )
    assert problems_of(text) == [
        "responders.r ben: 'r ben' is not a valid name: use letters, digits, '_', '.' and '-',"
        " starting with a letter or digit (line 10)"
    ]


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = edited(
        ("timezone: America/New_York", "timezone: Mars/Olympus"),
        ("queues: {crisis: 0}", "queues: {crisis: 0, crises: 1}"),
        ('end: "06:00"', 'end: "24:00"'),
        ("responders: [r-ben]", "responders: [r-ben, r-cy]"),
        ("kind: on", "kind: maybe"),
    )
    assert problems_of(text) == [
        "timezone: 'Mars/Olympus' is not an IANA time zone, e.g. America/New_York (line 1)",
        "responders.r-ana.queues.crises: unknown queue 'crises', did you mean 'crisis'? (line 9)",
        "shifts[0].end: '24:00' is not a time (line 12)",
        "shifts[1].responders[1]: unknown responder 'r-cy' (line 13)",
        "exceptions[1].kind: 'maybe' is not one of 'off' or 'on' (line 16)",
    ]


def test_the_error_message_lists_the_problems_under_the_file_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(edited(('end: "06:00"', 'end: "25:00"')), Path("roster.yaml"))
    assert str(caught.value) == "roster.yaml: shifts[0].end: '25:00' is not a time (line 12)"


def test_a_yaml_syntax_error_names_the_line_and_column() -> None:
    text = edited(("  username: hotline", "  username: hotline: again"))
    assert problems_of(text) == [
        "invalid YAML: mapping values are not allowed here (line 3, column 20)"
    ]


def test_an_empty_file_is_a_problem() -> None:
    assert problems_of("# nothing yet\n") == ["the file is empty (line 1)"]


def test_a_missing_section_points_at_the_top_of_the_file() -> None:
    assert problems_of("timezone: UTC\nqueues: {q: {}}\nresponders: {}\n") == [
        "ami: required, but missing (line 1)"
    ]


@given(hour=st.integers(0, 23), minute=st.integers(0, 59), quoted=st.booleans())
def test_any_wall_clock_time_written_as_hh_mm_is_read_back(
    hour: int, minute: int, quoted: bool
) -> None:
    # Unquoted, YAML 1.1 would read 22:00 as the sexagesimal number 1320.
    written = f'"{hour:02d}:{minute:02d}"' if quoted else f"{hour:02d}:{minute:02d}"
    config = parse_config(edited(('start: "22:00"', f"start: {written}")), PATH)
    assert config.roster.shifts[0].start == time(hour, minute)


@given(hour=st.integers(24, 99), minute=st.integers(0, 99))
def test_an_hour_past_23_is_not_a_time(hour: int, minute: int) -> None:
    text = edited(('start: "22:00"', f'start: "{hour}:{minute:02d}"'))
    assert problems_of(text) == [f"shifts[0].start: '{hour}:{minute:02d}' is not a time (line 12)"]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert caught.value.problems == ["cannot read the file: No such file or directory"]


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hotline.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_config(path).path == path


# --- the AMI secret --------------------------------------------------------------------------


def test_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "ami-secret"
    secret.write_text("s3cret-value\n", encoding="utf-8")
    secret.chmod(0o600)
    assert SecretRef(file=secret, env=None, setting="ami").read() == "s3cret-value"


def test_unreadable_secret_file_names_the_setting_but_not_the_secret(tmp_path: Path) -> None:
    secret = tmp_path / "ami-secret"
    secret.write_bytes(b"s3cret\xff\n")
    secret.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        SecretRef(file=secret, env=None, setting="ami").read()
    assert caught.value.problems == [
        f"ami.secret_file: {secret} holds a byte that is not ASCII: a secret must be printable "
        "ASCII without whitespace (0x21 to 0x7e)"
    ]
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError) as missing:
        SecretRef(file=tmp_path / "absent", env=None, setting="ami").read()
    assert missing.value.problems[0].startswith("ami.secret_file: cannot read ")


def test_secret_env_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TEST_AMI_SECRET", "from-env")
    assert SecretRef(file=None, env="HOTLINE_TEST_AMI_SECRET", setting="ami").read() == "from-env"
    monkeypatch.delenv("HOTLINE_TEST_AMI_SECRET")
    with pytest.raises(ConfigError) as caught:
        SecretRef(file=None, env="HOTLINE_TEST_AMI_SECRET", setting="ami").read()
    assert caught.value.problems == [
        "ami.secret_env: environment variable HOTLINE_TEST_AMI_SECRET is not set"
    ]


def test_a_database_password_is_named_by_its_own_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOTLINE_TEST_DB_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as caught:
        SecretRef(file=None, env="HOTLINE_TEST_DB_PASSWORD", setting="database").read()
    assert caught.value.problems == [
        "database.password_env: environment variable HOTLINE_TEST_DB_PASSWORD is not set"
    ]
    with pytest.raises(ConfigError) as neither:
        SecretRef(file=None, env=None, setting="database").read()
    assert neither.value.problems == ["database: neither password_file nor password_env is set"]


def test_certifications_requirements_standby_and_pause_reasons_reach_the_core() -> None:
    text = edited(
        ("  crisis: {min_responders: 2}", "  crisis: {min_responders: 2, requires: [crisis-cert],"
         " surge: {standby: [r-ben], penalty: 5}}"),
        ("queues: {crisis: 0}}", "queues: {crisis: 0},"
         " certifications: {crisis-cert: 2027-03-31, youth: '2027-01-15T09:30'}}"),
    )  # fmt: skip
    config = parse_config(
        text + "pauses:\n  reasons:\n    break: {digit: 1, max_minutes: 15}\n"
        "    hard: {digit: 2, max_minutes: 10, lift_at_limit: true}\n  hard_call_reason: hard\n",
        PATH,
    )
    roster = config.roster
    assert roster.queues["crisis"].requires == frozenset({"crisis-cert"})
    assert roster.queues["crisis"].standby == ("r-ben",)
    assert roster.queues["crisis"].standby_penalty == 5
    # A date is valid through that day in the roster's zone; a date and time until then.
    assert roster.responders["r-ana"].certifications == {
        "crisis-cert": datetime(2027, 4, 1, tzinfo=NEW_YORK),
        "youth": datetime(2027, 1, 15, 9, 30, tzinfo=NEW_YORK),
    }
    reasons = config.pauses.reasons
    assert (reasons["hard"].digit, reasons["hard"].max_s, reasons["hard"].lift_at_limit) == (
        2, 600.0, True,
    )  # fmt: skip
    assert reasons["break"].lift_at_limit is False
    assert config.pauses.hard_call_reason == "hard"


def test_default_pause_reasons_cover_the_phones_digits() -> None:
    reasons = parse_config(VALID, PATH).pauses.reasons
    assert {name: r.digit for name, r in reasons.items()} == {
        "break": 1, "decompression": 2, "admin": 3, "training": 4,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "pauses:\n  reasons:\n    a: {digit: 1}\n    b: {digit: 1}\n  hard_call_reason: a\n",
            "pauses.reasons.b.digit: digit 1 is already that of pause reason 'a'",
        ),
        (
            "pauses:\n  reasons:\n    a: {digit: 1}\n  hard_call_reason: b\n",
            "pauses.hard_call_reason: unknown pause reason 'b'",
        ),
        (
            "queues:\n  crisis: {surge: {standby: [r-zed]}}\n",
            "queues.crisis.surge.standby[0]: unknown responder 'r-zed'",
        ),
    ],
)
def test_pause_reasons_and_standby_responders_are_checked(extra: str, problem: str) -> None:
    text = VALID
    if extra.startswith("queues:"):
        text = text.replace("queues:\n  crisis: {min_responders: 2}\n", extra)
    else:
        text += extra
    assert any(problem in line for line in problems_of(text)), problems_of(text)
