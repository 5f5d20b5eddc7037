"""The limits on reading a configuration file, in-process: what is refused, at which bound, with
which one line, and what still works inside the bounds (aliases, deep enough nesting, long enough
numbers). Every bad input end to end, as a process: tests/integration/test_bad_input.py."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from hotline import daemon
from hotline.adapters.clock import SystemClock
from hotline.cli import main
from hotline.config import Config, ConfigError, loading, parse_config
from hotline.config.problems import LINE_CHARS, MAX_PROBLEMS, printable

PATH = Path("hotline.yaml")
BASE = """\
timezone: UTC
ami: {username: hotline, secret_env: AMI_SECRET}
queues: {crisis: {min_responders: 0}}
responders:
  r-ana: {name: Ana Ruiz, interface: PJSIP/1001, queues: {crisis: 0}}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, PATH)
    return caught.value.problems


def nested(levels: int) -> str:
    """A document `levels` deep, the top mapping included."""
    return "x: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"


# --- YAML -------------------------------------------------------------------------------------


def test_an_alias_within_the_limits_is_the_value_of_its_anchor() -> None:
    text = BASE.replace(
        "queues: {crisis: {min_responders: 0}}",
        "queues: {crisis: &defaults {min_responders: 2}, youth: *defaults}",
    )
    roster = parse_config(text, PATH).roster
    assert [(q.name, q.min_responders) for q in roster.queues.values()] == [
        ("crisis", 2),
        ("youth", 2),
    ]


def test_a_problem_inside_an_anchor_is_reported_once_at_the_anchor() -> None:
    text = BASE + (
        "shifts:\n"
        '  - &night {name: night, days: daily, start: "22:00", end: "25:00", responders: []}\n'
        "  - *night\n"
    )
    assert problems_of(text) == [
        "shifts[0].end: '25:00' is not a time (line 7)",
        "shifts[1].end: '25:00' is not a time (line 8)",
        "shifts[1].name: duplicate shift name 'night', already used by shifts[0] (line 8)",
    ]


@pytest.mark.parametrize("levels", [loading.MAX_DEPTH, loading.MAX_DEPTH + 1])
@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_is_refused_past_the_limit_only(levels: int, style: str) -> None:
    text = nested(levels) if style == "flow" else "x:\n" + "- " * (levels - 1) + "end\n"
    problems = problems_of(BASE + text)
    if levels > loading.MAX_DEPTH:
        line = 6 if style == "flow" else 7
        assert problems == [f"nested more than {loading.MAX_DEPTH} levels deep (line {line})"]
    else:
        assert problems[0].startswith("x: unknown key")


def test_values_past_the_limit_are_refused_and_so_are_aliases_that_expand_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loading, "MAX_VALUES", 40)
    assert problems_of(BASE + "x: [" + ", ".join(["a"] * 30) + "]\n") == [
        "the file holds more than 40 values (line 6)"
    ]
    assert problems_of(BASE + "x: &x [a, a, a, a]\ny: [*x, *x, *x, *x]\n") == [
        "y[1]: aliases expand the file to more than 40 values (line 7)"
    ]


def test_a_number_past_the_limit_is_one_problem_and_one_within_it_is_a_number() -> None:
    digits = "9" * loading.MAX_NUMBER_CHARS
    roster = parse_config(BASE.replace("min_responders: 0", f"min_responders: {digits}"), PATH)
    assert roster.roster.queues["crisis"].min_responders == int(digits)
    assert problems_of(BASE.replace("min_responders: 0", f"min_responders: {digits}9")) == [
        f"queues.crisis.min_responders: number too long: 33 characters, at most"
        f" {loading.MAX_NUMBER_CHARS} (line 3)"
    ]


def test_merge_keys_are_still_refused_without_a_second_line_for_their_value() -> None:
    text = BASE.replace("{min_responders: 0}", "{<<: {min_responders: [bad]}}")
    assert problems_of(text) == ["queues.crisis: merge keys (<<) are not supported (line 3)"]


def test_a_character_yaml_refuses_is_named_by_its_code_line_and_column() -> None:
    assert problems_of(BASE + "x: \x07\n") == [
        "invalid YAML: character #x07 is not allowed (line 6, column 4)"
    ]


def test_problems_past_the_limit_are_counted_on_one_last_line() -> None:
    extra = "".join(f"x{i}: 1\n" for i in range(MAX_PROBLEMS + 50))
    problems = problems_of(BASE + extra)
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == "... and 50 more problems"


# --- what a problem echoes ------------------------------------------------------------------


def test_printable_escapes_control_characters_and_cuts_long_text() -> None:
    assert printable("a\r\nb\x1b[2J\u202ec\td", 100) == "a\\r\\nb\\x1b[2J\\u202ec\\td"
    assert printable("x" * 50, 10) == "xxxxxxx..."
    assert printable("Zoë Ødegård", 100) == "Zoë Ødegård"


def test_a_long_value_is_shown_cut_with_its_length() -> None:
    text = BASE.replace("name: Ana Ruiz", "name: " + "n" * 5000).replace(
        "PJSIP/1001", "PJSIP1001" + "x" * 5000
    )
    (problem,) = problems_of(text)
    assert problem == (
        "responders.r-ana.interface: 'PJSIP1001" + "x" * 31 + "'... (5009 characters) is not an"
        " interface: expected TECH/resource, e.g. PJSIP/1001 (line 5)"
    )


def test_a_key_is_shown_escaped_and_cut() -> None:
    text = BASE + "? " + '"\\e[2J' + "k" * 500 + '"\n: 1\n'
    (problem,) = problems_of(text)
    assert problem.startswith("\\x1b[2J" + "k" * 30 + "...: unknown key")
    assert problem.isprintable()
    assert len(problem) <= LINE_CHARS


def test_every_line_of_a_config_error_is_printable_and_bounded() -> None:
    error = ConfigError(["a\nb", "x" * 1000])
    assert error.problems == ["a\\nb", "x" * (LINE_CHARS - 3) + "..."]


# --- reading the file ---------------------------------------------------------------------------


def _special(directory: Path, kind: str) -> Path:
    path = directory / "hotline.yaml"
    if kind == "directory":
        return directory
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        return Path("/dev/null")
    elif kind == "nul":
        path.write_bytes(b"a: 1\nb: \x00\n")
    else:
        path.write_bytes(b"a: 1\n\nb: \xff\n")
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("directory", "cannot read the file: a directory, not a regular file"),
        ("fifo", "cannot read the file: a FIFO, not a regular file"),
        ("device", "cannot read the file: a character device, not a regular file"),
        ("nul", "the file is not text: it holds a NUL byte (line 2)"),
        ("latin-1", "the file is not UTF-8 text: invalid start byte (line 3)"),
    ],
)
def test_only_a_regular_file_of_utf_8_text_is_read(tmp_path: Path, kind: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loading.load_config(_special(tmp_path, kind))
    assert caught.value.problems == [problem]


def test_a_file_past_the_size_limit_is_refused_before_or_while_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.yaml"
    path.write_text(BASE + "#" * 200)
    with pytest.raises(ConfigError) as caught:
        loading.load_config(path)
    assert caught.value.problems == ["the file is too large: over 100 bytes"]
    size = os.stat  # a file whose size says nothing (like those in /proc) is read to the limit
    monkeypatch.setattr(os, "fstat", lambda fd: _ZeroSize(size(fd)))
    with pytest.raises(ConfigError) as streamed:
        loading.load_config(path)
    assert streamed.value.problems == ["the file is too large: over 100 bytes"]


class _ZeroSize:
    def __init__(self, real: os.stat_result) -> None:
        self.st_mode = real.st_mode
        self.st_size = 0


# --- dates and times ----------------------------------------------------------------------------


def test_an_exception_outside_the_years_a_roster_can_mean_is_refused() -> None:
    text = BASE + (
        'exceptions: [{responder: r-ana, from: "2026-12-24T18:00", until: "9999-12-31T23:00",'
        " kind: off}]\n"
    )
    assert problems_of(text.replace("timezone: UTC", "timezone: America/New_York")) == [
        "exceptions[0].until: '9999-12-31T23:00' is out of range: the year must be 1970 to 2999"
        " (line 6)"
    ]


def test_a_timing_longer_than_a_year_is_refused() -> None:
    assert problems_of(BASE + "calls: {stale_after: 1.0e+300}\n") == [
        "calls.stale_after: must be at most 31622400, got 1e+300 (line 6)"
    ]


def test_plan_at_an_instant_outside_those_years_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text(BASE)
    assert main(["plan", "-c", str(path), "--at", "9999-12-31T23:59"]) == 2
    assert "the year must be 1970 to 2999" in capsys.readouterr().err


def test_purge_takes_a_sane_number_of_days_only(capsys: pytest.CaptureFixture[str]) -> None:
    for days in ("0", "-5", "9" * 5000):
        assert main(["purge", "--older-than-days", days]) == 2
        err = capsys.readouterr().err
        assert "is not 1 to 36500 days" in err
        assert len(err) < 1000


# --- the daemon at start ------------------------------------------------------------------------


def _config(host: str) -> Config:
    text = BASE.replace(
        "ami: {username: hotline, secret_env: AMI_SECRET}",
        f"ami: {{host: {host}, username: hotline, secret_env: AMI_SECRET, tls: {{ca_file: ca}}}}",
    )
    return parse_config(text, PATH)


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), False),
        (UnicodeError("label empty or too long"), True),
        (TimeoutError(), False),
    ],
)
def test_only_a_name_that_does_not_exist_stops_the_daemon_at_start(
    monkeypatch: pytest.MonkeyPatch, error: Exception, refused: bool
) -> None:
    async def getaddrinfo(*_args: object, **_kwargs: object) -> list[object]:
        raise error

    async def check() -> None:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
        await daemon.resolve_ami_host(_config("pbx.example"))

    if refused:
        with pytest.raises(daemon.StartupError, match=r"^ami\.host: .*'pbx\.example'"):
            asyncio.run(check())
    else:
        asyncio.run(check())  # the link retries: the resolver, or the PBX, may come back


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("127.0.0.1:BUSY", "Address already in use"),
        ("192.0.2.1:9470", "Cannot assign requested address"),  # TEST-NET-1: not on this host
    ],
)
def test_an_address_the_daemon_cannot_listen_on_stops_it_at_start(listen: str, reason: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        listen = listen.replace("BUSY", str(held.getsockname()[1]))
        text = BASE.replace("queues:", f'http: {{listen: "{listen}"}}\nqueues:', 1)
        config = parse_config(text.replace("{username", "{port: 1, username"), PATH)

        async def start() -> None:
            await daemon.run(config, daemon.Secrets("x"), SystemClock(), asyncio.Event())

        with pytest.raises(daemon.StartupError) as caught:
            asyncio.run(start())
    assert str(caught.value) == f"http.listen: cannot listen on {listen}: {reason}"
