"""`hotline migrate` and `hotline purge` against a real Postgres, as an operator runs them."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from hotline.adapters.store.migrations import SCHEMA_VERSION, migrations
from hotline.cli import main
from tests.harness import free_port
from tests.pg import PgCluster


def config(tmp_path: Path, dsn: str) -> Path:
    (tmp_path / "keys").write_text(f"1:{secrets.token_hex(32)}\n")
    (tmp_path / "keys").chmod(0o600)
    path = tmp_path / "hotline.yaml"
    path.write_text(
        "timezone: UTC\nami: {username: hotline, secret_env: UNUSED}\n"
        f'database: {{dsn: "{dsn}", spool_dir: spool, retention_days: 30}}\n'
        "privacy: {keys_file: keys}\nqueues: {crisis: {}}\nresponders: {}\n"
    )
    return path


def test_migrate_creates_the_schema_once_and_purge_deletes_only_old_records(
    cluster: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.create_database("hotline")
    path = config(tmp_path, cluster.dsn_for("hotline"))
    assert main(["migrate", "-c", str(path)]) == 0
    applied = ", ".join(m.name for m in migrations())
    assert f"applied {applied}; schema version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert main(["migrate", "-c", str(path)]) == 0
    assert "nothing to do" in capsys.readouterr().out

    cluster.psql(
        "INSERT INTO hotline.calls (uniqueid, queue, visit, entered_at, ended_at, outcome,"
        " caller_withheld, rolled_over, rank, revision) VALUES"
        " ('old.1', 'crisis', 1, now() - interval '40 days', now() - interval '40 days',"
        "  'answered', true, false, 4, 1),"
        " ('new.1', 'crisis', 1, now() - interval '2 days', now() - interval '2 days',"
        "  'answered', true, false, 4, 1)",
        "hotline",
    )
    assert main(["purge", "-c", str(path)]) == 0
    assert "deleted 1 rows older than 30 days" in capsys.readouterr().out
    left = cluster.psql("SELECT uniqueid FROM hotline.calls", "hotline").split()
    assert left == ["new.1"]


def test_an_unreachable_database_is_reported_with_exit_status_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, f"postgresql://hotline@127.0.0.1:{free_port()}/hotline")
    assert main(["migrate", "-c", str(path)]) == 1
    assert "cannot reach the database" in capsys.readouterr().err
