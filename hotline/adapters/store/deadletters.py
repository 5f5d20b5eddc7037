"""The dead letters: records the store set aside rather than write (Postgres refused them, or they
could not be encoded or decoded), kept for a human as JSON lines in one file per UTC day, so that
retention can delete them by day like the rows they stand for (docs/data-model.md, "Dead
letters").

Blocking file I/O: callers on the event loop run it in a thread (the store does).
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

DIRECTORY = "dead-letters"
# Where earlier versions kept every dead letter, in one file, forever; adopted at start.
LEGACY_FILE = "dead-letters.jsonl"
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")


@dataclass(frozen=True)
class Pruned:
    files: int
    records: int
    bytes: int


class DeadLetters:
    """`<spool_dir>/dead-letters/<YYYY-MM-DD>.jsonl` (UTC days), at most `max_bytes` in all."""

    def __init__(self, spool_dir: Path, max_bytes: int) -> None:
        self.directory = spool_dir / DIRECTORY
        self.max_bytes = max_bytes
        # Dead letters are whole records: pseudonyms, so for this user only, like the spool.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.directory.stat().st_mode) & 0o077:  # mkdir keeps an existing mode
            self.directory.chmod(0o700)
        self._lock = threading.Lock()
        self._sizes = {path: path.stat().st_size for _, path in self._days()}
        legacy = spool_dir / LEGACY_FILE
        if legacy.exists():
            self._adopt(legacy)

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    def files(self) -> list[Path]:
        """The day files, oldest first."""
        return [path for _, path in sorted(self._days())]

    def read(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest day first (for a human, and for tests)."""
        return [
            json.loads(line)
            for path in self.files()
            for line in path.read_text("utf-8").splitlines()
            if line
        ]

    def add(self, items: Sequence[Mapping[str, Any]], at: datetime) -> bool:
        """Append `items`, all set aside at `at`, to that day's file, durably; False when they would
        take the dead letters past `max_bytes` (nothing is written). On a disk error (a full disk)
        raises OSError with nothing of them left in the file."""
        data = b"".join(_encode(item) for item in items)
        with self._lock:
            if self.size_bytes + len(data) > self.max_bytes:
                return False
            self._append(self.directory / f"{at.astimezone(UTC).date().isoformat()}.jsonl", data)
        return True

    def prune(self, older_than_days: int, now: datetime) -> Pruned:
        """Delete the days whose every entry is more than `older_than_days` old at `now`: an entry
        goes within a day of passing the retention period, as the daily run finds it."""
        with self._lock:
            pruned, removed = _prune(self.directory, older_than_days, now)
            for path in removed:
                self._sizes.pop(path, None)
        return pruned

    # -- plumbing ------------------------------------------------------------------------------

    def _days(self) -> list[tuple[date, Path]]:
        return _days(self.directory)

    def _append(self, path: Path, data: bytes) -> None:
        """Write `data` at the end of `path` and fsync it, or leave the file as it was and raise."""
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # A full disk can leave part of a line behind: take it back, so the file holds
                # whole entries only and what was not kept is exactly what was counted.
                os.ftruncate(fd, before)
                raise
        finally:
            os.close(fd)
        if new:
            fsync_directory(self.directory)
        self._sizes[path] = before + len(data)

    def _adopt(self, legacy: Path) -> None:
        """File each line of the old single file under the day it was set aside (its "at"; the
        file's own time if it has none), then remove it, so retention reaches it too."""
        fallback = datetime.fromtimestamp(legacy.stat().st_mtime, UTC).date()
        by_day: dict[date, list[bytes]] = defaultdict(list)
        for line in legacy.read_bytes().splitlines():
            if line.strip():
                by_day[_day_of(line, fallback)].append(line + b"\n")
        with self._lock:
            for day, lines in sorted(by_day.items()):
                self._append(self.directory / f"{day.isoformat()}.jsonl", b"".join(lines))
            legacy.unlink()
            fsync_directory(legacy.parent)


def prune_dead_letters(spool_dir: Path, older_than_days: int, now: datetime) -> Pruned:
    """`DeadLetters.prune` from outside the daemon (`hotline purge`): creates nothing, so a run as
    another user leaves the daemon's directories as they are."""
    directory = spool_dir / DIRECTORY
    if not directory.is_dir():
        return Pruned(0, 0, 0)
    return _prune(directory, older_than_days, now)[0]


def _prune(directory: Path, older_than_days: int, now: datetime) -> tuple[Pruned, list[Path]]:
    cutoff = now - timedelta(days=older_than_days)
    removed: list[Path] = []
    records = size = 0
    for day, path in _days(directory):
        end_of_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        if end_of_day > cutoff:
            continue
        data = path.read_bytes()
        path.unlink()
        removed.append(path)
        records, size = records + data.count(b"\n"), size + len(data)
    if removed:
        fsync_directory(directory)
    return Pruned(len(removed), records, size), removed


def _days(directory: Path) -> list[tuple[date, Path]]:
    found: list[tuple[date, Path]] = []
    for path in directory.iterdir():
        match = _DAY_FILE.match(path.name)
        if match:
            try:
                found.append((date.fromisoformat(match[1]), path))
            except ValueError:  # a name like 2026-13-45: not ours
                continue
    return found


def _day_of(line: bytes, fallback: date) -> date:
    try:
        item = json.loads(line)
        return datetime.fromisoformat(item["at"]).astimezone(UTC).date()
    except (ValueError, KeyError, TypeError, AttributeError):
        return fallback


def _encode(item: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(item, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # a value JSON cannot hold: keep its text rather than lose it
        text = json.dumps({"unencodable": repr(dict(item))}, separators=(",", ":"))
    return text.encode() + b"\n"


def fsync_directory(directory: Path) -> None:
    """Make a file created, renamed or removed in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
