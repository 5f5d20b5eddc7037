"""Bad input, end to end: a configuration file, or an environment, that cannot work ends `hotline`
with exit status 78 and exactly one printable, bounded line per problem on stderr: no traceback,
no raw control character, never a secret's value; and it does so quickly and in little memory.

Each case is a real process (`python -m hotline`), measured by its own rusage, and timed from
start to exit less the time it waited on a run queue for a CPU that other work held (so the bound
holds on a busy machine as it does on an idle one; a process that waits for anything else, such
as a FIFO, is not excused, and one still running after HANG_S is killed and fails). What
only `hotline run` can find (ports, addresses, names, directories, credential files, the database's
schema) is run with `run`, after `check-config` has accepted the same file; the daemon's own JSON
log records may come with its lines."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotline.config.problems import LINE_CHARS
from tests.harness import free_port
from tests.pg import PgCluster

MAX_WALL_S = 2.0
MAX_RSS_BYTES = 200 * 1024 * 1024
HANG_S = 20.0  # a process still running by then has hung: killed, and the case fails
SECRET = "s3cret-Never-Shown-7f3a"

# A valid roster: each case breaks it in one way. Line numbers are referred to below.
BASE = """\
timezone: America/New_York
ami: {host: 127.0.0.1, port: AMI_PORT, username: hotline, secret_file: ami-secret}
http: {listen: "127.0.0.1:HTTP_PORT"}
queues: {crisis: {min_responders: 0}}
responders:
  r-ana: {name: Ana Ruiz, interface: PJSIP/1001, queues: {crisis: 0}}
shifts:
  - {name: night, days: daily, start: "22:00", end: "06:00", responders: [r-ana]}
exceptions:
  - {responder: r-ana, from: "2026-12-24T18:00", until: "2026-12-26T06:00", kind: off}
"""
RECORDING = """\
database: {dsn: "postgresql://hotline@127.0.0.1:1/hotline", spool_dir: SPOOL}
privacy: {keys_file: caller-keys}
"""


@dataclass
class Site:
    """A case's directory, with what a valid configuration needs beside it."""

    dir: Path
    ca_file: Path
    ports: dict[str, int]  # by the placeholder that stands for each in the texts above

    def config(self, text: str | bytes, name: str = "hotline.yaml") -> Path:
        path = self.dir / name
        data = text.encode() if isinstance(text, str) else text
        for placeholder, port in self.ports.items():
            data = data.replace(placeholder.encode(), str(port).encode())
        path.write_bytes(data)
        return path

    def base(self, *edits: tuple[str, str], extra: str = "") -> str:
        text = BASE
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new, 1)
        return text + extra


Make = Callable[[Site], Path]


@dataclass(frozen=True)
class Case:
    id: str
    make: Make
    # The lines on stderr, each after "<config path>: "; a str is matched exactly, a Pattern whole.
    lines: tuple[str | re.Pattern[str], ...]
    at_start: bool = False  # found by `hotline run` only: `check-config` accepts the file
    unprivileged: bool = False  # run without root's power to read any file


def edit(*edits: tuple[str, str], extra: str = "") -> Make:
    return lambda site: site.config(site.base(*edits, extra=extra))


def raw(text: str | bytes) -> Make:
    return lambda site: site.config(text)


def special(make: Callable[[Path], Path]) -> Make:
    return lambda site: make(site.dir)


def alias_bomb(site: Site) -> Path:
    # Nine levels of ten aliases each: 10^9 values once expanded.
    levels = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):
        levels.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return site.config(site.base(extra="x-bomb:\n" + "".join(f"  {lv}\n" for lv in levels)))


def too_large(site: Site) -> Path:
    responder = "  r-{:06d}: {{name: Responder, interface: PJSIP/1001, queues: {{crisis: 0}}}}\n"
    lines = [responder.format(i) for i in range(25 * 1024 * 1024 // len(responder.format(0)))]
    return site.config(site.base(("responders:\n", "responders:\n" + "".join(lines))))


def binary(site: Site) -> Path:
    noise = random.Random(7).randbytes(4096 - 8)  # noqa: S311 - test data, not a secret
    return site.config(b"\x89PNG\r\n\x1a\n" + noise)


def fifo(directory: Path) -> Path:
    path = directory / "hotline.yaml"
    os.mkfifo(path)
    return path


def link(target: Path | str, directory: Path) -> Path:
    path = directory / "hotline.yaml"
    path.symlink_to(target)
    return path


def unreadable(site: Site) -> Path:
    path = site.config(site.base())
    path.chmod(0)
    return path


def loop(directory: Path) -> Path:
    (directory / "a.yaml").symlink_to(directory / "b.yaml")
    (directory / "b.yaml").symlink_to(directory / "a.yaml")
    return directory / "a.yaml"


def with_tls(site: Site, host: str) -> Path:
    # AMI to another host than this one must use TLS.
    tls = f" ami-secret, tls: {{ca_file: {site.ca_file}}}}}"
    return site.config(site.base(("host: 127.0.0.1", f"host: {host}"), (" ami-secret}", tls)))


def spool_under_a_file(site: Site) -> Path:
    (site.dir / "plain-file").write_text("not a directory\n")
    return site.config(site.base(extra=RECORDING.replace("SPOOL", "plain-file/spool")))


def secret_is_a_fifo(site: Site) -> Path:
    (site.dir / "ami-secret").unlink()
    os.mkfifo(site.dir / "ami-secret", 0o600)
    return site.config(site.base())


def keys_are_dev_zero(site: Site) -> Path:
    recording = RECORDING.replace("SPOOL", "spool").replace("caller-keys", "/dev/zero")
    return site.config(site.base(extra=recording))


CASES = [
    # The findings.
    Case(
        "alias-bomb",
        alias_bomb,
        ("x-bomb.l5[1]: aliases expand the file to more than 250,000 values (line 17)",),
    ),
    Case(
        "nesting-200000-deep",
        raw("x: " + "[" * 200_000 + "]" * 200_000),
        ("nested more than 32 levels deep (line 1)",),
    ),
    Case(
        "nesting-100000-deep-block",
        raw("x:\n" + "- " * 100_000 + "end\n"),
        ("nested more than 32 levels deep (line 2)",),
    ),
    Case(
        "integer-of-5000-digits",
        edit(("port: AMI_PORT", "port: " + "9" * 5000)),
        ("ami.port: number too long: 5,000 characters, at most 32 (line 2)",),
    ),
    Case(
        "exception-dated-9999-12-31",
        edit(('"2026-12-26T06:00"', '"9999-12-31T23:00"')),
        (
            "exceptions[0].until: '9999-12-31T23:00' is out of range: the year must be 1970 to 2999"
            " (line 10)",
        ),
    ),
    Case("roster-of-25-MB", too_large, ("the file is too large: over 5,242,880 bytes",)),
    Case("fifo", special(fifo), ("cannot read the file: a FIFO, not a regular file",)),
    Case(
        "dev-zero",
        special(lambda _: Path("/dev/zero")),
        ("cannot read the file: a character device, not a regular file",),
    ),
    Case("binary-4-KB", binary, ("the file is not UTF-8 text: invalid start byte (line 1)",)),
    Case(
        "key-with-CR-LF",
        edit(
            (
                "{crisis: {min_responders: 0}}",
                ('{crisis: {min_responders: 0}, "evil\\r\\n[OK] all good": {}}'),
            )
        ),
        (
            "queues.evil\\r\\n[OK] all good: 'evil\\r\\n[OK] all good' is not a valid name: use"
            " letters, digits, '_', '.' and '-', starting with a letter or digit (line 4)",
        ),
    ),
    Case(
        "key-with-escape-sequences",
        edit(
            ("\n  r-ana:", ('\n  "\\e]0;owned\\a\\e[2J": {name: X, interface: PJSIP/9}\n  r-ana:'))
        ),
        (
            "responders.\\x1b]0;owned\\x07\\x1b[2J: '\\x1b]0;owned\\x07\\x1b[2J' is not a"
            " valid name: use letters, digits, '_', '.' and '-', starting with a letter or digit"
            " (line 6)",
        ),
    ),
    # Beside them.
    Case(
        "escape-byte-in-the-file",
        edit(("Ana Ruiz", "Ana \x1b[2JRuiz")),
        ("invalid YAML: character #x1b is not allowed (line 6, column 21)",),
    ),
    Case(
        "NUL-byte",
        edit(("Ana Ruiz", "Ana\x00Ruiz")),
        ("the file is not text: it holds a NUL byte (line 6)",),
    ),
    Case(
        "latin-1-not-utf-8",
        lambda site: site.config(site.base().encode().replace(b"Ana Ruiz", b"Ana Mar\xeda")),
        ("the file is not UTF-8 text: invalid continuation byte (line 6)",),
    ),
    Case(
        "4-KB-of-text-as-the-whole-file",
        raw("\u2603" * 4096),
        ("expected a mapping, got '" + "\u2603" * 40 + "'... (4096 characters) (line 1)",),
    ),
    Case(
        "key-of-100000-characters",
        edit(("queues: {crisis: 0}}", ("queues: {crisis: 0, ? " + "k" * 100_000 + " : 1}}"))),
        (
            re.compile(
                r"responders\.r-ana\.queues\.k{37}\.\.\.: unknown queue 'k+\.\.\. \(line 6\)"
            ),
        ),
    ),
    Case(
        "listen-port-of-5000-digits",
        edit(("127.0.0.1:HTTP_PORT", "127.0.0.1:" + "9" * 5000)),
        (
            "http.listen: '127.0.0.1:" + "9" * 30 + "'... (5010 characters) is not host:port, e.g."
            " 127.0.0.1:9470 (line 3)",
        ),
    ),
    Case(
        "timing-of-1e300-seconds",
        edit(extra="calls: {stale_after: 1.0e+300}\n"),
        ("calls.stale_after: must be at most 31622400, got 1e+300 (line 11)",),
    ),
    Case(
        "python-tag",
        edit(("timezone: America/New_York", "timezone: !!python/name:os.system")),
        (
            "invalid YAML: could not determine a constructor for the tag"
            " 'tag:yaml.org,2002:python/name:os.system' (line 1, column 11)",
        ),
    ),
    Case(
        "alias-to-itself",
        edit(("shifts:\n", "shifts: &s\n  - *s\n")),
        ("shifts[0]: an alias refers to a node that contains it (line 8)",),
    ),
    Case(
        "two-documents",
        edit(extra="---\ntimezone: UTC\n"),
        (
            "invalid YAML: expected a single document in the stream: but found another document"
            " (line 11, column 1)",
        ),
    ),
    Case("empty", raw("# nothing yet\n"), ("the file is empty (line 1)",)),
    Case(
        "directory",
        special(lambda directory: directory),
        ("cannot read the file: a directory, not a regular file",),
    ),
    Case(
        "missing",
        special(lambda directory: directory / "absent.yaml"),
        ("cannot read the file: No such file or directory",),
    ),
    Case("unreadable", unreadable, ("cannot read the file: Permission denied",), unprivileged=True),
    Case(
        "symbolic-link-loop",
        special(loop),
        ("cannot read the file: Too many levels of symbolic links",),
    ),
    Case(
        "symbolic-link-to-dev-zero",
        special(lambda d: link("/dev/zero", d)),
        ("cannot read the file: a character device, not a regular file",),
    ),
    Case(
        "malformed-DSN",
        edit(
            extra=RECORDING.replace("127.0.0.1:1/hotline", "[::1/hotline").replace(
                "}", ", password_env: TEST_DB_PASSWORD}", 1
            )
        ),
        (
            "database.dsn: not a PostgreSQL URL: it cannot be parsed, e.g."
            " postgresql://hotline@127.0.0.1:5432/hotline (line 11)",
        ),
    ),
    Case(
        "DSN-holding-the-password",
        edit(extra=RECORDING.replace("hotline@", f"hotline:{SECRET}@")),
        (
            "database.dsn: holds a password: give it in password_file or password_env, never in"
            " this file (line 11)",
        ),
    ),
    # At start.
    Case(
        "http-port-in-use",
        edit(("HTTP_PORT", "BUSY_PORT")),
        (re.compile(r"http\.listen: cannot listen on 127\.0\.0\.1:\d+: Address already in use"),),
        at_start=True,
    ),
    Case(
        "http-address-not-on-this-host",
        edit(("127.0.0.1:HTTP_PORT", "192.0.2.1:HTTP_PORT")),
        (
            re.compile(
                r"http\.listen: cannot listen on 192\.0\.2\.1:\d+:"
                r" Cannot assign requested address"
            ),
        ),
        at_start=True,
    ),
    Case(
        "http-host-that-does-not-exist",
        edit(("127.0.0.1:HTTP_PORT", "nohost.invalid:HTTP_PORT")),
        (
            re.compile(
                r"http\.listen: cannot listen on nohost\.invalid:\d+:"
                r" Name or service not known"
            ),
        ),
        at_start=True,
    ),
    Case(
        "ami-host-that-does-not-exist",
        lambda site: with_tls(site, "pbx.invalid"),
        ("ami.host: cannot resolve 'pbx.invalid': Name or service not known",),
        at_start=True,
    ),
    Case(
        "spool-dir-under-a-file",
        spool_under_a_file,
        (re.compile(r"database\.spool_dir: .*plain-file/spool.*: Not a directory"),),
        at_start=True,
    ),
    Case(
        "ami-secret-file-is-a-fifo",
        secret_is_a_fifo,
        (re.compile(r"ami\.secret_file: .*ami-secret is not a regular file"),),
        at_start=True,
    ),
    Case(
        "keys-file-is-dev-zero",
        keys_are_dev_zero,
        ("privacy.keys_file: /dev/zero is not a regular file",),
        at_start=True,
    ),
]


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str
    wall_s: float
    queued_s: float  # of wall_s, how long it was ready to run but waited for a CPU
    cpu_s: float
    rss_bytes: int

    @property
    def own_s(self) -> float:
        """The time it took, but for the time it waited for a CPU that other work held: what
        it takes on an idle machine, however busy this one is."""
        return self.wall_s - self.queued_s


# Runs one command and reports how it went. A child's peak RSS counts the memory of the process
# it was forked from (Linux keeps the high-water mark across exec), so the child is forked from
# this small process rather than from pytest, which is large. Its time on a run queue (the second
# field of /proc/PID/schedstat) is read once it has exited, before it is reaped.
_LAUNCHER = """
import json, os, signal, sys, time
result, out, err, cwd, hang = sys.argv[1:6]
command = sys.argv[6:]
files = [os.open(os.devnull, os.O_RDONLY)] + [
    os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for name in (out, err)
]
started = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.chdir(cwd)
        for number, fd in enumerate(files):
            os.dup2(fd, number)
        os.execv(command[0], command)
    finally:
        os._exit(127)
hung = False
while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
    if time.monotonic() - started > float(hang):
        hung = True
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        break
    time.sleep(0.002)
wall = time.monotonic() - started
with open(f"/proc/{pid}/schedstat") as schedstat:
    queued = int(schedstat.read().split()[1]) / 1e9
_, status, usage = os.wait4(pid, 0)
with open(result, "w") as report:
    json.dump({"status": os.waitstatus_to_exitcode(status), "hung": hung, "wall_s": wall,
               "queued_s": queued, "cpu_s": usage.ru_utime + usage.ru_stime,
               "rss_kb": usage.ru_maxrss}, report)
"""


_NOT_PASSED = ("NOTIFY_SOCKET", "COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def hotline(args: list[str], cwd: Path, *, unprivileged: bool = False) -> Outcome:
    """`python -m hotline ARGS` in a process of its own, measured by its own rusage."""
    # As deployed: no systemd socket, and no coverage tracer, which makes a process 1.5 to 2
    # times slower (what these processes run is covered in-process by the unit tests).
    env = {k: v for k, v in os.environ.items() if k not in _NOT_PASSED}
    env["TEST_DB_PASSWORD"] = SECRET
    command = [sys.executable, "-m", "hotline", *args]
    if unprivileged and os.geteuid() == 0:
        # Root reads any file: without these two capabilities it is held to the mode bits.
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to test as root"
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    with tempfile.TemporaryDirectory() as scratch:
        result, out, err = (Path(scratch) / name for name in ("result", "out", "err"))
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(result), str(out), str(err)]
        subprocess.run(
            [*launcher, str(cwd), str(HANG_S), *command], env=env, check=True, timeout=HANG_S + 30
        )
        report = json.loads(result.read_text())
        outcome = Outcome(
            status=report["status"],
            stdout=out.read_text("utf-8", "replace"),
            stderr=err.read_text("utf-8", "replace"),
            wall_s=report["wall_s"],
            queued_s=report["queued_s"],
            cpu_s=report["cpu_s"],
            rss_bytes=report["rss_kb"] * 1024,
        )
    assert not report["hung"], f"hotline {args[0]} still running after {HANG_S} s: {outcome}"
    return outcome


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.pem"),
         "-subj", "/CN=hotline test CA", "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return directory / "ca.pem"


@pytest.fixture
def site(tmp_path: Path, ca_file: Path) -> Iterator[Site]:
    secret = tmp_path / "ami-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    keys = tmp_path / "caller-keys"
    keys.write_text("7:" + "ab" * 32 + "\n")
    keys.chmod(0o600)
    with socket.socket() as held:  # a port in use, for the case that needs one
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = int(held.getsockname()[1])
        # Nothing listens on the AMI port: every case ends before connecting.
        ports = {"AMI_PORT": free_port(), "HTTP_PORT": free_port(), "BUSY_PORT": busy}
        yield Site(tmp_path, ca_file, ports)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_78_with_one_clean_line_per_problem(case: Case, site: Site) -> None:
    path = case.make(site)
    command = ["run" if case.at_start else "check-config", "-c", str(path)]
    if case.at_start:
        accepted(path, site.dir)
    failed = hotline(command, site.dir, unprivileged=case.unprivileged)
    assert_one_clean_line_per_problem(failed, path, case.lines)


def test_a_database_without_hotline_s_schema_stops_the_daemon_with_78(
    site: Site, cluster: PgCluster
) -> None:
    cluster.create_database("hotline")  # never migrated
    recording = RECORDING.replace(
        "postgresql://hotline@127.0.0.1:1/hotline", cluster.dsn_for("hotline")
    )
    path = site.config(site.base(extra=recording.replace("SPOOL", "spool")))
    accepted(path, site.dir)
    failed = hotline(["run", "-c", str(path)], site.dir)
    expected = re.compile(r"database: .*no hotline schema.*")
    assert_one_clean_line_per_problem(failed, path, (expected,))


def accepted(path: Path, cwd: Path) -> None:
    """`check-config` accepts the file: only the daemon, at start, can find what is wrong."""
    checked = hotline(["check-config", "-c", str(path)], cwd)
    assert (checked.status, checked.stderr) == (0, ""), checked
    assert checked.stdout.startswith(f"{path}: OK ("), checked


def assert_one_clean_line_per_problem(
    failed: Outcome, path: Path, expected_lines: tuple[str | re.Pattern[str], ...]
) -> None:
    assert failed.status == 78, failed
    assert failed.stdout == ""
    # The daemon's own log (JSON records, one a line) may say more; the problems are the rest.
    lines = problem_lines(failed)
    assert len(lines) == len(expected_lines), failed.stderr
    prefix = f"{path}: "
    for line, expected in zip(lines, expected_lines, strict=True):
        assert line.startswith(prefix), line
        said = line[len(prefix) :]
        if isinstance(expected, str):
            assert said == expected
        else:
            assert expected.fullmatch(said), said
        assert len(said) <= LINE_CHARS
    for line in failed.stderr.splitlines():
        assert line.isprintable(), line  # no CR, LF, ESC or any other control character
    assert "Traceback" not in failed.stderr
    assert SECRET not in failed.stderr
    assert failed.rss_bytes < MAX_RSS_BYTES, failed
    assert failed.own_s < MAX_WALL_S, failed


def problem_lines(outcome: Outcome) -> list[str]:
    """What hotline printed on stderr, but the log records (JSON, with their timestamps)."""
    return [line for line in outcome.stderr.splitlines() if not _log_record(line)]


def _log_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "event" in record
