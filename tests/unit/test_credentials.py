"""Credentials: a secret is printable ASCII without whitespace, a credential file is private to
the daemon's user (by its mode and by its POSIX ACL), and every message names the source, never
the value."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.config import ConfigError, SecretRef, credentials, parse_config, read_private_file
from hotline.config.credentials import others_with_access, secret_flaw

SECRET = "n0t-For-Your-Eyes"
RULE = "a secret must be printable ASCII without whitespace (0x21 to 0x7e)"


def private(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def problem_of(ref: SecretRef) -> str:
    with pytest.raises(ConfigError) as caught:
        ref.read()
    (problem,) = caught.value.problems
    assert SECRET not in str(caught.value)
    return problem


# --- what a secret may hold ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "flaw"),
    [
        (SECRET.encode() + b"\xff", "a byte that is not ASCII"),
        (SECRET.encode() + "é".encode(), "a byte that is not ASCII"),
        (b"n0t-For\nYour-Eyes", "a line break"),
        (b"n0t-For\rYour-Eyes", "a line break"),
        (b"n0t-For Your-Eyes", "whitespace"),
        (b"n0t-For\tYour-Eyes", "whitespace"),
        (b"n0t-For\x00Your-Eyes", "a control character"),
        (b"n0t-For\x7fYour-Eyes", "a control character"),
    ],
)
def test_a_secret_file_holding_anything_but_printable_ascii_is_refused_naming_the_file(
    tmp_path: Path, content: bytes, flaw: str
) -> None:
    path = private(tmp_path / "ami-secret", content + b"\n")
    problem = problem_of(SecretRef(file=path, env=None, setting="ami"))
    assert problem == f"ami.secret_file: {path} holds {flaw}: {RULE}"


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_one_trailing_line_break_is_not_part_of_the_secret(tmp_path: Path, ending: bytes) -> None:
    path = private(tmp_path / "ami-secret", SECRET.encode() + ending)
    assert SecretRef(file=path, env=None, setting="ami").read() == SECRET


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    path = private(tmp_path / "pg-password", b"\n")
    problem = problem_of(SecretRef(file=path, env=None, setting="database"))
    assert problem == f"database.password_file: {path} is empty"


@pytest.mark.parametrize(
    ("value", "flaw"),
    [
        (SECRET.encode() + b"\xff", "a byte that is not ASCII"),
        (SECRET.encode() + b"\n", "a line break"),
        (b"n0t-For Your-Eyes", "whitespace"),
    ],
)
def test_a_secret_in_the_environment_is_held_to_the_same_rule_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: bytes, flaw: str
) -> None:
    monkeypatch.setitem(os.environb, b"HOTLINE_TEST_SECRET", value)
    problem = problem_of(SecretRef(file=None, env="HOTLINE_TEST_SECRET", setting="ami"))
    source = "environment variable HOTLINE_TEST_SECRET"
    assert problem == f"ami.secret_env: {source} holds {flaw}: {RULE}"


def test_an_empty_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TEST_SECRET", "")
    problem = problem_of(SecretRef(file=None, env="HOTLINE_TEST_SECRET", setting="database"))
    assert problem == "database.password_env: environment variable HOTLINE_TEST_SECRET is empty"


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_every_printable_ascii_string_is_a_secret(text: str) -> None:
    assert secret_flaw(text.encode()) is None


@given(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E)),
    st.characters().filter(lambda c: not 0x21 <= ord(c) <= 0x7E),
)
def test_any_other_character_anywhere_makes_it_unfit(text: str, other: str) -> None:
    middle = len(text) // 2
    assert secret_flaw((text[:middle] + other + text[middle:]).encode("utf-8", "surrogatepass"))


# --- credential files are private ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "who"),
    [
        (0o644, "its group and other users"),
        (0o640, "its group"),
        (0o604, "other users"),
        (0o620, "its group"),
        (0o602, "other users"),
    ],
)
def test_a_credential_file_others_may_read_or_write_is_refused_naming_file_and_mode(
    tmp_path: Path, mode: int, who: str
) -> None:
    path = private(tmp_path / "ami-secret", SECRET.encode(), mode)
    problem = problem_of(SecretRef(file=path, env=None, setting="ami"))
    assert problem.startswith(f"ami.secret_file: {path} is open to {who} (mode {mode:04o}): ")
    assert f"chmod 600 {path}" in problem
    assert path.stat().st_mode & 0o777 == mode, "refused, never changed"


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700, 0o500])
def test_a_credential_file_for_its_owner_alone_is_read(tmp_path: Path, mode: int) -> None:
    path = private(tmp_path / "ami-secret", SECRET.encode(), mode)
    assert SecretRef(file=path, env=None, setting="ami").read() == SECRET


def test_the_keys_file_and_any_credential_file_are_checked_by_the_same_reader(
    tmp_path: Path,
) -> None:
    path = private(tmp_path / "caller-keys", b"1:" + b"ab" * 32 + b"\n", 0o644)
    with pytest.raises(ConfigError) as caught:
        read_private_file(path, "privacy.keys_file")
    assert caught.value.problems[0].startswith(f"privacy.keys_file: {path} is open to ")
    path.chmod(0o600)
    assert read_private_file(path, "privacy.keys_file").startswith(b"1:abab")


def test_a_directory_or_a_missing_file_is_not_a_credential(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as directory:
        read_private_file(tmp_path, "ami.secret_file")
    assert directory.value.problems == [f"ami.secret_file: {tmp_path} is not a regular file"]
    with pytest.raises(ConfigError) as missing:
        read_private_file(tmp_path / "absent", "ami.secret_file")
    assert missing.value.problems == [
        f"ami.secret_file: cannot read {tmp_path / 'absent'}: No such file or directory"
    ]


def acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL as Linux stores it in system.posix_acl_access."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ME = 990
# What systemd's LoadCredential= makes when the service runs as another user: mode 0440 on the
# surface (the group bits are the ACL's mask), but only root and the service's user may read.
SYSTEMD = acl((USER_OBJ, 4, 0), (USER, 4, ME), (GROUP_OBJ, 0, 0), (MASK, 4, 0), (OTHER, 0, 0))


def test_a_systemd_credential_readable_by_the_service_user_through_its_acl_is_private() -> None:
    assert others_with_access(0o440, SYSTEMD, ME) == []


@pytest.mark.parametrize(
    ("entries", "who"),
    [
        (((USER_OBJ, 6, 0), (USER, 4, 1234), (GROUP_OBJ, 0, 0), (MASK, 4, 0), (OTHER, 0, 0)),
         ["user 1234"]),
        (((USER_OBJ, 6, 0), (USER, 4, ME), (GROUP_OBJ, 4, 0), (MASK, 4, 0), (OTHER, 0, 0)),
         ["its group"]),
        (((USER_OBJ, 6, 0), (GROUP_OBJ, 0, 0), (GROUP, 6, 27), (MASK, 6, 0), (OTHER, 0, 0)),
         ["group 27"]),
        (((USER_OBJ, 6, 0), (USER, 4, ME), (GROUP_OBJ, 0, 0), (MASK, 4, 0), (OTHER, 4, 0)),
         ["other users"]),
    ],
)  # fmt: skip
def test_an_acl_entry_for_anyone_else_makes_a_credential_file_public(
    entries: tuple[tuple[int, int, int], ...], who: list[str]
) -> None:
    assert others_with_access(0o640, acl(*entries), ME) == who


def test_the_acl_mask_limits_named_entries_but_not_other() -> None:
    masked = acl((USER_OBJ, 6, 0), (USER, 4, 1234), (GROUP_OBJ, 4, 0), (MASK, 0, 0), (OTHER, 0, 0))
    assert others_with_access(0o600, masked, ME) == []


def test_an_acl_hotline_cannot_parse_is_taken_as_public() -> None:
    assert others_with_access(0o600, b"\x02\x00\x00\x00\x01", ME) != []
    assert others_with_access(0o600, acl((0x40, 4, 0)), ME) != []


def test_a_file_with_a_systemd_style_acl_is_read_and_one_open_to_others_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = private(tmp_path / "ami-secret", SECRET.encode(), 0o440)
    me = os.geteuid()
    systemd = acl((USER_OBJ, 4, 0), (USER, 4, me), (GROUP_OBJ, 0, 0), (MASK, 4, 0), (OTHER, 0, 0))
    monkeypatch.setattr(credentials, "_acl_of", lambda _fd: systemd)
    assert SecretRef(file=path, env=None, setting="ami").read() == SECRET
    stranger = acl(
        (USER_OBJ, 4, 0), (USER, 4, me + 1), (GROUP_OBJ, 0, 0), (MASK, 4, 0), (OTHER, 0, 0)
    )
    monkeypatch.setattr(credentials, "_acl_of", lambda _fd: stranger)
    problem = problem_of(SecretRef(file=path, env=None, setting="ami"))
    assert f"is open to user {me + 1} (mode 0440)" in problem


# --- the configuration ---------------------------------------------------------------------

BASE = """\
timezone: UTC
ami: {AMI}
queues: {crisis: {}}
responders: {}
"""


def config_problems(ami: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.replace("{AMI}", ami) + extra, Path("hotline.yaml"))
    return caught.value.problems


def test_a_dsn_with_a_password_is_refused_without_repeating_it() -> None:
    database = (
        "database: {dsn: 'postgresql://hotline:" + SECRET + "@db/hotline'}\n"
        "privacy: {keys_file: keys}\n"
    )
    problems = config_problems("{username: hotline, secret_env: S}", database)
    assert problems == [
        "database.dsn: holds a password: give it in password_file or password_env, never in "
        "this file (line 5)"
    ]
    query = "database: {dsn: 'postgresql://db/hotline?password=x'}\nprivacy: {keys_file: k}\n"
    assert len(config_problems("{username: hotline, secret_env: S}", query)) == 1


def test_ami_to_another_host_needs_tls() -> None:
    assert config_problems("{host: pbx.example.org, username: hotline, secret_env: S}") == [
        "ami.host: is not a loopback address: AMI to another host needs tls (line 2)"
    ]
    for host in ("127.0.0.1", "127.0.0.53", "localhost", "::1"):
        text = BASE.replace("{AMI}", f"{{host: '{host}', username: hotline, secret_env: S}}")
        assert parse_config(text, Path("hotline.yaml")).ami.tls is None


def test_tls_trusts_the_named_ca_and_checks_the_host_name_by_default() -> None:
    ami = "{host: pbx.example.org, username: hotline, secret_env: S, tls: {ca_file: ca.pem}}"
    config = parse_config(BASE.replace("{AMI}", ami), Path("/etc/hotline/hotline.yaml"))
    assert config.ami.port == 5039
    assert config.ami.tls is not None
    assert config.ami.tls.ca_file == Path("/etc/hotline/ca.pem")
    assert config.ami.tls.server_name == "pbx.example.org"
    plain = parse_config(
        BASE.replace("{AMI}", "{username: hotline, secret_env: S}"), Path("hotline.yaml")
    )
    assert (plain.ami.port, plain.ami.tls) == (5038, None)
