"""A bounded on-disk spool: JSON lines in numbered segment files, each append written and fsync'd,
read back oldest segment first. It holds what could not reach Postgres and survives a
crash of the process: a line torn by the crash is skipped and counted, never fatal
(docs/data-model.md, "The spool").

Blocking file I/O: callers on the event loop run it in a thread (the store does).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Segment names sort in append order: a sequence number, then the creation time (epoch ms), which
# gives the age of the oldest spooled record without reading the file.
_SEGMENT = re.compile(r"^(\d{10})-(\d{13})\.jsonl$")
DEAD_LETTERS = "dead-letters.jsonl"
# Segments are removed whole once replayed: small enough that a replay interrupted by a new
# outage repeats little, large enough that a long outage does not make thousands of files.
SEGMENT_BYTES = 1 << 20


@dataclass(frozen=True, order=True)
class Segment:
    seq: int
    created_ms: int
    path: Path


@dataclass(frozen=True)
class SegmentContent:
    items: list[dict[str, Any]]
    skipped: int  # lines that were torn by a crash or are not a JSON object


class Spool:
    """JSON lines in `directory`, at most `max_bytes` of segments in all (dead letters apart)."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        # Caller keys are pseudonymous personal data: the spool is for this user only
        # (docs/data-model.md, "Spool file modes").
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Writers hold the lock; readers on the event loop never take it (it may be held for an
        # fsync): they read the totals and the segment tuple, which are replaced, not mutated.
        self._lock = threading.Lock()
        found: list[Segment] = []
        self._sizes: dict[Path, int] = {}
        self._lines: dict[Path, int] = {}
        for path in directory.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                found.append(Segment(int(match[1]), int(match[2]), path))
                data = path.read_bytes()
                self._sizes[path] = len(data)
                self._lines[path] = data.count(b"\n")
        self._segments = tuple(sorted(found))
        self._bytes = sum(self._sizes.values())
        self._count = sum(self._lines.values())
        # A segment left by an earlier process is never appended to: its last line may be torn,
        # and a new line written after it would be glued to the torn one.
        self._active: Segment | None = None
        self._active_fd: int | None = None

    # -- sizes ------------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def count(self) -> int:
        """Lines in the spool (a torn last line is not counted)."""
        return self._count

    def oldest_age_s(self, now: float) -> float:
        """Seconds since the oldest segment was started (`now`: epoch seconds); 0 when empty."""
        segments = self._segments
        if not segments:
            return 0.0
        return max(0.0, now - segments[0].created_ms / 1000)

    # -- writing ----------------------------------------------------------------------------

    def append(self, items: Sequence[Mapping[str, Any]], now: float | None = None) -> bool:
        """Append all of `items`, durably, or none of them if they would exceed `max_bytes`."""
        lines = [_encode(item) for item in items]
        with self._lock:
            if self._bytes + sum(len(line) for line in lines) > self.max_bytes:
                return False
            self._write(lines, now)
        return True

    def append_fitting(
        self, items: Sequence[Mapping[str, Any]], now: float | None = None, limit: int | None = None
    ) -> int:
        """Append the longest prefix of `items` that keeps the spool within `limit` bytes
        (default `max_bytes`), durably; return how many were appended."""
        bound = self.max_bytes if limit is None else min(limit, self.max_bytes)
        encoded = [_encode(item) for item in items]
        with self._lock:
            room = bound - self._bytes
            lines: list[bytes] = []
            for line in encoded:
                if len(line) > room:
                    break
                room -= len(line)
                lines.append(line)
            if lines:
                self._write(lines, now)
        return len(lines)

    def _write(self, lines: list[bytes], now: float | None) -> None:
        """Append whole lines, durably; the caller holds the lock. A big append is cut across
        segments, so that no segment grows much beyond `segment_bytes`."""
        start = 0
        while start < len(lines):
            fd, segment = self._active_segment(now)
            room = self.segment_bytes - self._sizes[segment.path]
            end, size = start, 0
            while end < len(lines) and (end == start or size + len(lines[end]) <= room):
                size += len(lines[end])
                end += 1
            self._write_chunk(fd, segment, lines[start:end])
            start = end

    def _write_chunk(self, fd: int, segment: Segment, lines: list[bytes]) -> None:
        data = b"".join(lines)
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError:
            # A full disk can leave part of a line behind: account for what is there, and never
            # append after it again (reading skips the partial line like a torn one).
            grown = os.fstat(fd).st_size - self._sizes[segment.path]
            self._sizes[segment.path] += grown
            self._bytes += grown
            self._seal()
            raise
        self._sizes[segment.path] += len(data)
        self._lines[segment.path] += len(lines)
        self._bytes += len(data)
        self._count += len(lines)
        if self._sizes[segment.path] >= self.segment_bytes:
            self._seal()

    def _active_segment(self, now: float | None) -> tuple[int, Segment]:
        if self._active is not None and self._active_fd is not None:
            return self._active_fd, self._active
        seq = self._segments[-1].seq + 1 if self._segments else 1
        created_ms = int((now if now is not None else time.time()) * 1000)
        path = self.directory / f"{seq:010d}-{created_ms:013d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        # The new name must survive a power cut too, or the fsync'd lines in it would be orphaned.
        _fsync_directory(self.directory)
        segment = Segment(seq, created_ms, path)
        self._segments = (*self._segments, segment)
        self._sizes[path] = 0
        self._lines[path] = 0
        self._active, self._active_fd = segment, fd
        return fd, segment

    def _seal(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active, self._active_fd = None, None

    def dead_letter(self, items: Sequence[Mapping[str, Any]]) -> bool:
        """Keep records Postgres refused (a data or constraint error) for a human to look at,
        durably; False if the dead-letter file has reached `max_bytes` and they were not kept."""
        data = b"".join(_encode(item) for item in items)
        path = self.directory / DEAD_LETTERS
        with self._lock:
            size = path.stat().st_size if path.exists() else 0
            if size + len(data) > self.max_bytes:
                return False
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if size == 0:
                _fsync_directory(self.directory)
        return True

    # -- reading ----------------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        """The segments, oldest first."""
        return list(self._segments)

    def read(self, segment: Segment) -> SegmentContent:
        """The items of a segment in append order. Reading the segment being appended to closes
        it for appends, so what was read is all it will ever hold and it can be removed after."""
        with self._lock:
            if self._active == segment:
                self._seal()
        data = segment.path.read_bytes()
        items: list[dict[str, Any]] = []
        skipped = 0
        for raw in data.split(b"\n"):
            if not raw:
                continue
            try:
                item = json.loads(raw)
            except ValueError:  # torn by a crash mid-write (the last line), or damaged
                skipped += 1
                continue
            if isinstance(item, dict):
                items.append(item)
            else:
                skipped += 1
        return SegmentContent(items, skipped)

    def remove(self, segment: Segment) -> None:
        with self._lock:
            if self._active == segment:
                self._seal()
            segment.path.unlink(missing_ok=True)
            self._segments = tuple(s for s in self._segments if s != segment)
            self._bytes -= self._sizes.pop(segment.path)
            self._count -= self._lines.pop(segment.path)

    def close(self) -> None:
        with self._lock:
            self._seal()


def _encode(item: Mapping[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
