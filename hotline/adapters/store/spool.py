"""A bounded on-disk spool: JSON lines in numbered segment files, each append written and fsync'd,
read back oldest segment first. It holds what could not reach Postgres and survives a
crash of the process: a line torn by the crash is handed back as unreadable, never fatal. A full
disk keeps the whole lines written before it and no part of the others: what an append reports
written is exactly what is there (docs/data-model.md, "The spool").

Blocking file I/O: callers on the event loop run it in a thread (the store does).
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from hotline.adapters.store.deadletters import DeadLetters, fsync_directory

# Segment names sort in append order: a sequence number, then the creation time (epoch ms), which
# gives the age of the oldest spooled record without reading the file.
_SEGMENT = re.compile(r"^(\d{10})-(\d{13})\.jsonl$")
# Segments are removed whole once replayed: small enough that a replay interrupted by a new
# outage repeats little, large enough that a long outage does not make thousands of files.
SEGMENT_BYTES = 1 << 20


@dataclass(frozen=True, order=True)
class Segment:
    seq: int
    created_ms: int
    path: Path


@dataclass(frozen=True)
class Unreadable:
    """A line that is not a JSON object: torn by a crash mid-write, or damaged."""

    raw: bytes


@dataclass(frozen=True)
class SegmentContent:
    lines: list[dict[str, Any] | Unreadable] = field(default_factory=list)  # in append order

    @property
    def items(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if not isinstance(line, Unreadable)]

    @property
    def skipped(self) -> int:
        return sum(isinstance(line, Unreadable) for line in self.lines)


class Appended(NamedTuple):
    """How many of the lines offered were appended, durably: always a prefix of them. `error`
    says why the next one was not (the disk: full or failing); None when it did not fit the
    bound, or when all were appended."""

    written: int
    error: OSError | None = None


class Spool:
    """JSON lines in `directory`, at most `max_bytes` of segments in all, and the dead letters
    beside them (`dead_letters`, bounded by `max_bytes` too)."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        # Caller keys are pseudonymous personal data: the spool is for this user only
        # (docs/data-model.md, "Spool file modes").
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir leaves an existing directory's mode as it is (systemd's StateDirectory= makes
        # 0755): made 0700 at every start, or OSError (docs/security.md, "File modes").
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            directory.chmod(0o700)
            structlog.get_logger("hotline.spool").warning(
                "spool_dir_made_private", path=str(directory), was=f"{mode:04o}", now="0700"
            )
        self.dead_letters = DeadLetters(directory, max_bytes)
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
        """Append all of `items`, durably, or none of them if they would exceed `max_bytes`.
        Raises OSError when the disk fails, having appended a prefix of them."""
        lines = [encode(item) for item in items]
        with self._lock:
            if self._bytes + sum(len(line) for line in lines) > self.max_bytes:
                return False
            error = self._write(lines, now).error
        if error is not None:
            raise error
        return True

    def append_fitting(
        self, items: Sequence[Mapping[str, Any]], now: float | None = None, limit: int | None = None
    ) -> Appended:
        """`append_lines` of the items, encoded."""
        return self.append_lines([encode(item) for item in items], now, limit)

    def append_lines(
        self, lines: Sequence[bytes], now: float | None = None, limit: int | None = None
    ) -> Appended:
        """Append the longest prefix of `lines` (each one `encode`d item) that keeps the spool
        within `limit` bytes (default `max_bytes`) and that the disk takes, durably."""
        bound = self.max_bytes if limit is None else min(limit, self.max_bytes)
        with self._lock:
            room = bound - self._bytes
            fitting = 0
            for line in lines:
                if len(line) > room:
                    break
                room -= len(line)
                fitting += 1
            return self._write(lines[:fitting], now)

    def _write(self, lines: Sequence[bytes], now: float | None) -> Appended:
        """Append whole lines, durably; the caller holds the lock. A big append is cut across
        segments, so that no segment grows much beyond `segment_bytes`."""
        start = 0
        while start < len(lines):
            try:
                fd, segment = self._active_segment(now)
            except OSError as exc:
                return Appended(start, exc)
            room = self.segment_bytes - self._sizes[segment.path]
            end, size = start, 0
            while end < len(lines) and (end == start or size + len(lines[end]) <= room):
                size += len(lines[end])
                end += 1
            written, error = self._write_chunk(fd, segment, lines[start:end])
            start += written
            if error is not None:
                return Appended(start, error)
        return Appended(start)

    def _write_chunk(
        self, fd: int, segment: Segment, lines: Sequence[bytes]
    ) -> tuple[int, OSError | None]:
        """Write and fsync `lines` at the end of the segment: (lines kept, the disk's error)."""
        data = b"".join(lines)
        before = self._sizes[segment.path]
        written = 0
        try:
            view = memoryview(data)
            while written < len(data):
                written += os.write(fd, view[written:])
        except OSError as exc:
            return self._keep_whole_lines(fd, segment, lines, written), exc
        try:
            os.fsync(fd)
        except OSError as exc:
            # After a failed fsync nothing of the chunk is known to be on disk: none of it counts.
            return self._keep_whole_lines(fd, segment, lines, 0), exc
        self._grown(segment, before + len(data), len(lines))
        return len(lines), None

    def _keep_whole_lines(
        self, fd: int, segment: Segment, lines: Sequence[bytes], written: int
    ) -> int:
        """After the disk failed part-way through `lines` with `written` bytes of them written:
        cut the file back to the last whole line, make those lines durable and return how many
        they are. A partial line never stays behind, so the segment can still be appended to."""
        before = self._sizes[segment.path]
        whole = _whole_lines(lines, written)
        end = sum(len(line) for line in lines[:whole])
        try:
            os.ftruncate(fd, before + end)
            if whole:
                os.fsync(fd)
        except OSError:
            whole, end = 0, 0
            try:
                os.ftruncate(fd, before)
            except OSError:
                # The file's end is unknown: never append after it again. A partial line in it
                # is read back as unreadable, and the whole lines it holds are replayed.
                with suppress(OSError):
                    end = max(0, os.fstat(fd).st_size - before)
                whole = _whole_lines(lines, end)
                self._grown(segment, before + end, whole)
                self._seal()
                return whole
        self._grown(segment, before + end, whole)
        return whole

    def _grown(self, segment: Segment, size: int, lines: int) -> None:
        path = segment.path
        self._bytes += size - self._sizes[path]
        self._sizes[path] = size
        self._lines[path] += lines
        self._count += lines
        if size >= self.segment_bytes:
            self._seal()

    def _active_segment(self, now: float | None) -> tuple[int, Segment]:
        if self._active is not None and self._active_fd is not None:
            return self._active_fd, self._active
        seq = self._segments[-1].seq + 1 if self._segments else 1
        created_ms = int((now if now is not None else time.time()) * 1000)
        path = self.directory / f"{seq:010d}-{created_ms:013d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        # The new name must survive a power cut too, or the fsync'd lines in it would be orphaned.
        try:
            fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
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
        lines: list[dict[str, Any] | Unreadable] = []
        for raw in data.split(b"\n"):
            if not raw:
                continue
            try:
                item = json.loads(raw, parse_constant=_no_constant)
            except ValueError:  # torn by a crash mid-write (the last line), or damaged
                lines.append(Unreadable(raw))
                continue
            lines.append(item if isinstance(item, dict) else Unreadable(raw))
        return SegmentContent(lines)

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


def encode(item: Mapping[str, Any]) -> bytes:
    """One spool line; ValueError or TypeError for what JSON cannot hold (NaN, a set...)."""
    return json.dumps(item, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: encode never writes them, so a line holding one is damaged."""
    raise ValueError(f"{name} is not JSON")


def _whole_lines(lines: Sequence[bytes], size: int) -> int:
    whole, end = 0, 0
    for line in lines:
        end += len(line)
        if end > size:
            break
        whole += 1
    return whole
