"""Fixtures for the integration tests that record calls: a Postgres cluster of the test's own and
a daemon configuration that turns recording on."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotline.adapters.store.migrations import migrate
from hotline.core.privacy import Pseudonymiser, load_keys
from tests.pg import PgCluster


@dataclass
class Recorded:
    cluster: PgCluster
    database: str
    keys: Pseudonymiser
    spool: Path
    config: str  # the YAML that turns recording on

    def rows(self) -> list[dict[str, object]]:
        out = self.cluster.psql(
            "SELECT row_to_json(c) FROM (SELECT uniqueid, queue, visit, caller_key, "
            "caller_withheld, campaign, outcome, answered_by, wait_s, talk_s, rolled_over, "
            "partner_result, attempts FROM hotline.calls) c",
            self.database,
        )
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def by_caller(self, number: str) -> list[dict[str, object]]:
        key = self.keys.pseudonym(number)
        return [r for r in self.rows() if r["caller_key"] == key]


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    instance = PgCluster()
    try:
        instance.start()
    except Exception as exc:  # turned into a failure with the reason, never a skip
        instance.destroy()
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    yield instance
    instance.destroy()


@pytest.fixture
async def recorded(cluster: PgCluster, tmp_path: Path) -> Recorded:
    cluster.create_database("hotline")
    await migrate(cluster.dsn_for("hotline"))
    keys_file = tmp_path / "caller-keys"
    keys_file.write_text(f"7:{secrets.token_hex(32)}\n")
    keys_file.chmod(0o600)
    spool = tmp_path / "spool"
    config = (
        f"database: {{dsn: '{cluster.dsn_for('hotline')}', spool_dir: {spool}}}\n"
        f"privacy: {{keys_file: {keys_file}}}\n"
        "calls: {abandon_grace: 2}\n"
    )
    return Recorded(cluster, "hotline", load_keys(keys_file.read_text()), spool, config)
