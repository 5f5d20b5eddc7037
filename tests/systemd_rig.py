"""Test rig: a Debian 12 host booted with systemd in a systemd-nspawn container, for installing
hotline the way production does (deploy/install.sh) and driving it with systemctl.

The root is built once by deploy/systemd-root.sh and cached; every boot is volatile (an overlay
on tmpfs), so each container starts clean and leaves nothing behind. The container shares the
host's network: hotline inside reaches the test session's PBX and Postgres on 127.0.0.1, and the
test reaches hotline's HTTP port the same way.

This host's PID 1 is not systemd and its cgroups are v1 with a cgroup2 "unified" mount, so
nspawn runs with SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 from a cgroup of its own under the unified
mount, without registering with machined (--register=no --keep-unit). machinectl, `systemctl -M`
and `systemd-run -M` cannot reach such a container; commands run inside it through nsenter into
the namespaces of its PID 1. Anything that cannot start fails with the reason, never a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
ROOT_SCRIPT = REPO / "deploy" / "systemd-root.sh"
INSTALL_SCRIPT = REPO / "deploy" / "install.sh"
UNIT_SOURCE = REPO / "deploy" / "systemd" / "hotline.service"
CGROUP_NAMED = Path("/sys/fs/cgroup/systemd")
# Runtime wheels survive across sessions here, so a wheelhouse needs the network only when the
# lock changes; hotline's own wheel is built for every session from the working tree.
WHEEL_CACHE = Path("/var/cache/hotline/wheels")
INSIDE_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_WITHIN_S = 60.0
POWEROFF_WITHIN_S = 15.0
T = TypeVar("T")


class RigError(RuntimeError):
    pass


def unified_hierarchy() -> Path:
    """Where cgroup2 is mounted: beside the v1 hierarchies on a hybrid host, else the root."""
    hybrid = Path("/sys/fs/cgroup/unified")
    return hybrid if (hybrid / "cgroup.procs").exists() else Path("/sys/fs/cgroup")


def root_path() -> Path:
    return Path(os.environ.get("HOTLINE_SYSTEMD_ROOT", "/var/cache/hotline/systemd-root"))


def build_root() -> Path:
    """The cached Debian 12 root, built on first use (about a minute; needs Debian's archive)."""
    for tool in ("systemd-nspawn", "nsenter", "debootstrap"):
        if shutil.which(tool) is None:
            raise RigError(f"{tool} is not installed: run deploy/setup-host.sh as root")
    if os.geteuid() != 0:
        raise RigError("booting a systemd container needs root")
    if not (unified_hierarchy() / "cgroup.procs").exists():
        raise RigError("no cgroup2 hierarchy (neither /sys/fs/cgroup/unified nor a v2 mount)")
    proc = subprocess.run(
        [str(ROOT_SCRIPT), "build"], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        raise RigError(f"deploy/systemd-root.sh build failed ({proc.returncode}):\n{proc.stderr}")
    return root_path()


def build_wheelhouse(into: Path) -> Path:
    """An offline install's wheels for this checkout, made by the documented command
    (deploy/install.sh --build-wheelhouse) with this interpreter, which has the build backend."""
    into.mkdir(parents=True, exist_ok=True)
    if WHEEL_CACHE.is_dir():
        for wheel in WHEEL_CACHE.glob("*.whl"):
            if not wheel.name.startswith("hotline-"):
                shutil.copy2(wheel, into / wheel.name)
    proc = subprocess.run(
        [str(INSTALL_SCRIPT), "--build-wheelhouse", str(into)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RigError(f"deploy/install.sh --build-wheelhouse failed:\n{proc.stderr}")
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    for wheel in into.glob("*.whl"):
        cached = WHEEL_CACHE / wheel.name
        if not wheel.name.startswith("hotline-") and not cached.exists():
            partial = cached.with_name(f".{wheel.name}.{os.getpid()}")
            shutil.copy2(wheel, partial)
            partial.replace(cached)
    return into


def until(
    probe: Callable[[], T],
    accept: Callable[[T], bool],
    within: float,
    what: str,
    every: float = 0.1,
) -> T:
    """Poll `probe` until `accept` holds; fail with the last value after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}; last: {value!r}")
        time.sleep(every)


class Container:
    """One booted container. Use `boot()` as a context manager: it always powers off."""

    def __init__(self, name: str, root: Path, binds: Mapping[Path, str], log_dir: Path) -> None:
        self.name = name
        self.root = root
        self.binds = dict(binds)
        self.log = log_dir / f"{name}.console.log"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0  # the container's PID 1, as this host sees it

    def _cgroup(self) -> Path:
        return unified_hierarchy() / self.name

    def start(self) -> None:
        args = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.root}",
            f"--machine={self.name}",
            "--boot",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--system-call-filter=bpf",
            "--console=passive",
        ]
        args += [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        # nspawn must start in a cgroup of its own on the unified hierarchy: a shell moves itself
        # there and becomes nspawn.
        script = 'mkdir -p "$1" && echo $$ >"$1/cgroup.procs" && shift && exec "$@"'
        with self.log.open("wb") as console:
            self._nspawn = subprocess.Popen(
                ["sh", "-c", script, "sh", str(self._cgroup()), *args],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
                start_new_session=True,
            )
        try:
            self.leader = until(self._find_leader, bool, 15, "the container's PID 1")
            state = until(
                self._system_state,
                lambda s: s in ("running", "degraded"),
                BOOT_WITHIN_S,
                f"container {self.name} to finish booting",
            )
        except AssertionError as exc:
            raise RigError(f"{exc}\nconsole:\n{self.console_tail()}") from None
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-pager", check=False).stdout
            sys.stderr.write(f"container {self.name} booted degraded:\n{failed}\n")

    def _find_leader(self) -> int:
        nspawn = self._nspawn
        if nspawn is None or nspawn.poll() is not None:
            raise RigError(f"systemd-nspawn exited during boot:\n{self.console_tail()}")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with suppress(OSError):
                status = (entry / "status").read_text()
                # nspawn's first child only sets up namespaces and exits; the container's PID 1
                # is the child that is PID 1 in its own namespace and has become systemd.
                if (
                    re.search(rf"^PPid:\s+{nspawn.pid}$", status, re.MULTILINE)
                    and re.search(r"^NSpid:\s.*\s1$", status, re.MULTILINE)
                    and re.search(r"^Name:\s+systemd$", status, re.MULTILINE)
                ):
                    return int(entry.name)
        return 0

    def _system_state(self) -> str:
        proc = self.run("systemctl", "is-system-running", check=False, timeout=10)
        return proc.stdout.strip() or proc.stderr.strip()

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Power off (SIGTERM to nspawn halts the container), kill if it does not, and remove
        the cgroups made for it."""
        nspawn = self._nspawn
        if nspawn is not None and nspawn.poll() is None:
            nspawn.send_signal(signal.SIGTERM)
            try:
                nspawn.wait(POWEROFF_WITHIN_S)
            except subprocess.TimeoutExpired:
                os.killpg(nspawn.pid, signal.SIGKILL)
                nspawn.wait(10)
        _remove_cgroup(self._cgroup())
        # nspawn mirrors its cgroup in the named v1 hierarchy systemd uses, on a hybrid host.
        if CGROUP_NAMED.is_dir():
            _remove_cgroup(CGROUP_NAMED / self.name)

    def run(
        self,
        *argv: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside, as root, with a clean environment."""
        command = ["nsenter", "-t", str(self.leader), "-a", "env", "-i", INSIDE_PATH, *argv]
        proc = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise RigError(
                f"in {self.name}: {' '.join(argv)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def sh(self, script: str, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.run("sh", "-c", script, "sh", *args, check=check, input=input).stdout

    def write(self, path: str, text: str, mode: str = "0644", owner: str = "root:root") -> None:
        self.sh(
            'mkdir -p "$(dirname "$1")" && umask 077 && cat >"$1" && chown "$3" "$1" '
            '&& chmod "$2" "$1"',
            path,
            mode,
            owner,
            input=text,
        )

    def read(self, path: str) -> str:
        return self.run("cat", path).stdout

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return self.run("systemctl", *args, check=check, timeout=timeout).stdout

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal_cursor(self, unit: str) -> str:
        out = self.run("journalctl", "-u", unit, "-n", "0", "--show-cursor", "--no-pager").stdout
        match = re.search(r"^-- cursor: (.+)$", out, re.MULTILINE)
        if match is None:
            raise RigError(f"journalctl printed no cursor: {out!r}")
        return match.group(1)

    def journal(self, unit: str, after: str | None = None) -> list[str]:
        """The unit's messages (hotline's own and systemd's about it), oldest first."""
        args = ["journalctl", "-u", unit, "-o", "cat", "--no-pager"]
        if after is not None:
            args.append(f"--after-cursor={after}")
        return self.run(*args).stdout.splitlines()

    def listing(self, *roots: str) -> dict[str, dict[str, object]]:
        """Every file and directory under `roots`: type, owner, group, mode, and a content hash
        for files and the target for symbolic links."""
        out = self.run("python3", "-c", _LISTING, *roots, timeout=120).stdout
        listed: dict[str, dict[str, object]] = json.loads(out)
        return listed


def _remove_cgroup(path: Path) -> None:
    """Remove a cgroup and its children, deepest first, once their processes have left."""
    if not path.exists():
        return
    deadline = time.monotonic() + 10
    while True:
        directories = sorted(
            (p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        )
        try:
            for directory in [*directories, path]:
                directory.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def boot(
    root: Path, binds: Mapping[Path, str], log_dir: Path, name: str | None = None
) -> Iterator[Container]:
    """A booted container that is always powered off and cleaned up afterwards."""
    name = name or f"hotline-sd-{os.getpid()}-{next(_serial)}"
    container = Container(name, root, binds, log_dir)
    try:
        container.start()
        yield container
    finally:
        container.stop()


def _counter() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_serial = _counter()


def service_properties(unit_text: str, leave_out: Sequence[str]) -> list[str]:
    """The [Service] settings of a unit file as `systemd-run -p` arguments, except those named
    in `leave_out` (how the process is started and supervised, as opposed to its sandbox)."""
    properties: list[str] = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]" and key not in leave_out:
            properties += ["-p", f"{key}={value}"]
    return properties


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hotline-systemd-"))


# Run inside the container with its python3: a JSON listing of the given trees (missing roots
# are left out), with owner and group by name, so that it compares across installs.
_LISTING = r"""
import grp, hashlib, json, os, pwd, stat, sys

def name(table, ident):
    try:
        return table(ident)[0]
    except KeyError:
        return str(ident)

listed = {}
for root in sys.argv[1:]:
    if not os.path.lexists(root):
        continue
    paths = [root]
    if os.path.isdir(root) and not os.path.islink(root):
        for base, dirs, files in os.walk(root):
            paths += [os.path.join(base, n) for n in dirs + files]
    for path in paths:
        st = os.lstat(path)
        entry = {
            "type": stat.S_IFMT(st.st_mode),
            "mode": oct(stat.S_IMODE(st.st_mode)),
            "owner": name(pwd.getpwuid, st.st_uid),
            "group": name(grp.getgrgid, st.st_gid),
        }
        if stat.S_ISLNK(st.st_mode):
            entry["target"] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
        listed[path] = entry
print(json.dumps(listed))
"""
