"""No object that holds a secret shows it in its repr: the daemon's Secrets, the AMI link, the
store with its DSN, the pseudonymiser and its key, the configuration, the daemon itself. And the
spool directory is made private at start, or the start is refused."""

from __future__ import annotations

import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from hotline import daemon
from hotline.adapters.store import Spool
from hotline.config import parse_config
from hotline.core.privacy import load_keys
from tests.harness import ManualClock

AMI_SECRET = "Ami-S3cret-value"
PASSWORD = "Pg-pa55word-value"


def wired(tmp_path: Path) -> tuple[daemon.Daemon, daemon.Secrets, str]:
    key = secrets.token_hex(32)
    text = (
        "timezone: UTC\n"
        "ami: {username: hotline, secret_env: HOTLINE_UNUSED}\n"
        f"database: {{dsn: 'postgresql://hotline@127.0.0.1:1/hotline', spool_dir: {tmp_path}/s}}\n"
        "privacy: {keys_file: keys}\n"
        "queues: {crisis: {}}\nresponders: {}\n"
    )
    config = parse_config(text, tmp_path / "hotline.yaml")
    dsn = f"postgresql://hotline:{PASSWORD}@127.0.0.1:1/hotline"
    held = daemon.Secrets(AMI_SECRET, load_keys(f"3:{key}\n"), dsn)
    clock = ManualClock(datetime(2026, 12, 1, tzinfo=UTC))
    return daemon.Daemon(config, held, clock, CollectorRegistry()), held, key


async def test_no_secret_is_in_the_repr_of_anything_that_holds_one(tmp_path: Path) -> None:
    running, held, key = wired(tmp_path)
    assert running.store is not None
    shown = [
        repr(held),
        repr(held.pseudonymiser),
        repr(running.link),
        repr(running.store),
        repr(running.config),
        repr(running),
        str(held),
    ]
    for text in shown:
        for secret in (AMI_SECRET, PASSWORD, key, key.upper()):
            assert secret not in text
    # Only the key's id, never the key: the fields with a secret are left out of the repr.
    assert repr(held).startswith("Secrets(pseudonymiser=Pseudonymiser(key_id='3'")


async def test_an_existing_spool_directory_open_to_others_is_made_private(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o755)
    spool_dir.chmod(0o755)
    with capture_logs() as logs:
        Spool(spool_dir, 10_000_000)
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    assert [(e["event"], e["was"], e["now"]) for e in logs] == [
        ("spool_dir_made_private", "0755", "0700")
    ]
    with capture_logs() as again:
        Spool(spool_dir, 10_000_000)
    assert again == []


async def test_a_spool_directory_that_cannot_be_made_private_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s").mkdir(mode=0o755)
    (tmp_path / "s").chmod(0o755)

    def refuse(_path: Path, _mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "chmod", refuse)
    with pytest.raises(daemon.StartupError) as caught:
        wired(tmp_path)
    assert str(caught.value) == (
        f"database.spool_dir: {tmp_path}/s cannot be made private to the daemon's user "
        "(mode 0700): Operation not permitted"
    )
