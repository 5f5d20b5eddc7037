"""Test harness: a throwaway PostgreSQL cluster in a temporary directory, on a free loopback port
and a Unix socket beside its data, that tests can stop (even crash) and start again.

Works as root on a fresh Debian machine (the server refuses to run as root, so initdb and the
server run as the `postgres` OS user) and as an ordinary user. If the cluster cannot start, the
error says why: tests must fail, never skip, when Postgres is missing.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

READY_WITHIN_S = 30.0


class PgError(RuntimeError):
    pass


def bindir() -> Path:
    """Where the server binaries are: `pg_config --bindir`, else the newest Debian install."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        proc = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            candidates.append(Path(proc.stdout.strip()))
    # Debian's /usr/bin/pg_config (libpq-dev) may point at /usr/bin, where initdb is not.
    by_version = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    candidates.extend(Path(p) for p in reversed(by_version))
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise PgError(
        "PostgreSQL server binaries not found (no initdb via pg_config --bindir or in"
        " /usr/lib/postgresql/*/bin): run deploy/setup-host.sh, which installs `postgresql`"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A PostgreSQL cluster of its own. `start()` creates it on first use; `destroy()` removes it.

    Trust authentication, on loopback and a private socket only: this is a test instance.
    """

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="hotline-pg-", dir=base))
        self.data = self.root / "data"
        self.socket_dir = self.root  # short: a socket path may not exceed 107 bytes
        self.log = self.root / "server.log"
        self.port = port or free_port()
        # The server refuses to run as root; run it (and initdb) as the postgres OS user.
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._server_tool(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",  # a throwaway cluster need not survive a power cut
            )
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                # Crash tests stop the server, not the machine: what was written survives.
                "-c fsync=off",
                "-c max_connections=50",
                "-c shared_buffers=16MB",
            ]
        )
        # -W: pg_ctl does not wait; readiness is pg_isready's answer, polled with a deadline.
        self._server_tool(
            "pg_ctl", "start", "-W", "-D", str(self.data), "-l", str(self.log), "-o", options
        )
        self.wait_ready()

    def wait_ready(self, within: float = READY_WITHIN_S) -> None:
        deadline = time.monotonic() + within
        while True:
            proc = subprocess.run(
                [str(self.bin / "pg_isready"), *self._where(), "-d", "postgres", "-t", "2"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PgError(
                    f"PostgreSQL did not become ready within {within} s"
                    f" ({proc.stdout.strip()}); server log:\n{self.log_tail()}"
                )
            time.sleep(0.05)  # between polls of a condition that has a deadline

    def stop(self, mode: Literal["immediate", "fast", "smart"] = "fast") -> None:
        """Stop the server; "immediate" is a crash (no checkpoint, clients cut off)."""
        self._server_tool("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    @property
    def running(self) -> bool:
        proc = subprocess.run(
            [*self._as, str(self.bin / "pg_ctl"), "status", "-D", str(self.data)],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists() and self.running:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- clients -----------------------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL (stop at the first error); the unaligned, tuples-only output."""
        proc = subprocess.run(
            [
                str(self.bin / "psql"),
                *self._where(),
                "-d",
                database,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise PgError(f"psql failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def json_rows(self, sql: str, database: str = "postgres") -> list[dict[str, object]]:
        """The rows of a `SELECT row_to_json(...)` query, decoded: one JSON object a line."""
        return [json.loads(line) for line in self.psql(sql, database).splitlines() if line.strip()]

    def pg_dump(self, database: str, *args: str) -> str:
        """The dump of a database as SQL text (e.g. `--schema-only`)."""
        proc = subprocess.run(
            [str(self.bin / "pg_dump"), *self._where(), "-d", database, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise PgError(f"pg_dump failed ({proc.returncode}): {proc.stderr.strip()}")
        # Since 15.14 (CVE-2025-8714) a dump is wrapped in \restrict KEY ... \unrestrict KEY with
        # a random key: drop those lines so that two dumps of the same schema compare equal.
        return "".join(
            line
            for line in proc.stdout.splitlines(keepends=True)
            if not line.startswith(("\\restrict ", "\\unrestrict "))
        )

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no server log: {exc})"

    # -- plumbing ----------------------------------------------------------------------------

    def _where(self) -> list[str]:
        return ["-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]

    def _server_tool(self, tool: str, *args: str) -> None:
        proc = subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,  # the postgres user cannot read root's working directory
            timeout=120,
        )
        if proc.returncode != 0:
            raise PgError(
                f"{tool} {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}"
                f"\nserver log:\n{self.log_tail()}"
            )
