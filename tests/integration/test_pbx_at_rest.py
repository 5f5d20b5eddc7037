"""Nothing identifying at rest on the PBX (docs/pbx-at-rest.md): after real calls with known
caller numbers, no file Asterisk can write to (the PBX root's /var and /tmp, and the instance's
own directories: logs, spool, astdb) holds any of the numbers in any common form."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, Pbx, local, wait_for
from tests.integration.test_recording import ANSWERING, NOBODY, RINGING, ROSTER


@dataclass(frozen=True)
class Caller:
    e164: str
    presented: str  # the caller ID as the call brings it in

    @property
    def reported(self) -> str:
        """The number as Asterisk reports it: the presented one without spaces and dashes."""
        return re.sub(r"[ ()\-.]", "", self.presented)


# Callers, each presented to the PBX in a different common form.
ANSWERED = Caller("+15550142987", "+1 555 014 2987")
ABANDONED = Caller("+15550163871", "15550163871")
TIMED_OUT = Caller("+15550174659", "5550174659")  # national form
REFUSED = Caller("+15550185723", "+15550185723")  # nobody on duty
UNKNOWN_PEER = "+15550196348"  # a SIP INVITE from a peer the PBX has no endpoint for
CALLERS = (ANSWERED.e164, ABANDONED.e164, TIMED_OUT.e164, REFUSED.e164, UNKNOWN_PEER)
# Never given to Asterisk: the test writes it into the instance's log directory itself, one file
# per form, to show that the scan looks where Asterisk writes and recognises every form.
CONTROL = "+15550137264"
CONTROL_FILES = {  # file name: (content, a form the scan must report for it)
    "control-e164": (b"+15550137264", "E.164 with +"),
    "control-no-plus": (b"15550137264", "without +"),
    "control-national": (b"5550137264", "national"),
    "control-last7": (b"0137264", "last 7 digits"),
    "control-punctuated": (b"+1 (555) 013-7264", "E.164 with + (punctuated)"),
    "control-utf16": ("5550137264".encode("utf-16-le"), "national (UTF-16)"),
}

# A queue member the test adds after the calls: with persistentmembers Asterisk writes it to
# astdb, so finding it there shows the scan read the astdb Asterisk flushed at its stop.
CONTROL_MEMBER = f"at-rest-control-{uuid.uuid4().hex[:12]}"
CONTROL_INTERFACE = local(1999)

# Punctuation people and systems put inside phone numbers, removed before a second search.
_SEPARATORS = b" .-()/\t"


def pbx_root() -> Path:
    return Path(os.environ.get("HOTLINE_PBX_ROOT", "/var/cache/hotline/pbx-root"))


def forms(e164: str) -> dict[str, str]:
    """The common written forms of a North American E.164 number."""
    digits = e164.removeprefix("+")
    return {
        "E.164 with +": e164,
        "without +": digits,
        "national": digits[1:],
        "last 7 digits": digits[-7:],
    }


@dataclass
class Scan:
    files: list[Path] = field(default_factory=list)
    bytes_read: int = 0
    # path -> number -> the forms found, each as "<form>" or "<form> (punctuated|UTF-16)"
    found: dict[Path, dict[str, list[str]]] = field(default_factory=dict)

    def report(self, root: Path) -> str:
        return "\n".join(
            f"  {path.relative_to(root)}: {number} as {', '.join(kinds)}"
            for path, numbers in sorted(self.found.items())
            for number, kinds in numbers.items()
        )


def scan(roots: Iterable[Path], numbers: Iterable[str]) -> Scan:
    """Search every regular file under `roots` (symbolic links not followed) for every form of
    `numbers`: as written, with phone punctuation removed, and as UTF-16."""
    numbers = list(numbers)
    # Every form contains the last 7 digits: one pass finds the files worth a closer look.
    tails = [forms(n)["last 7 digits"] for n in numbers]
    prefilter = re.compile(
        b"|".join(re.escape(t.encode(codec)) for t in tails for codec in ("ascii", "utf-16-le"))
    )
    result = Scan()
    for root in roots:
        for directory, _, names in os.walk(root):
            for name in names:
                path = Path(directory, name)
                if path.is_symlink() or not path.is_file():
                    continue
                try:
                    data = path.read_bytes()
                except FileNotFoundError:  # gone since the walk listed it
                    continue
                result.files.append(path)
                result.bytes_read += len(data)
                squeezed = data.translate(None, _SEPARATORS)
                if not (prefilter.search(data) or prefilter.search(squeezed)):
                    continue
                for number in numbers:
                    kinds: list[str] = []
                    for kind, text in forms(number).items():
                        if text.encode() in data:
                            kinds.append(kind)
                        elif text.encode() in squeezed:
                            kinds.append(f"{kind} (punctuated)")
                        elif text.encode("utf-16-le") in data:
                            kinds.append(f"{kind} (UTF-16)")
                    if kinds:
                        result.found.setdefault(path, {})[number] = kinds
    return result


async def test_no_caller_number_is_written_anywhere_on_the_pbx(
    pbx: Pbx, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    root = pbx_root()
    instance = root / "srv" / "hotline" / pbx.name
    # Where Asterisk can write: its instance's directories (etc, run, lib = astdb, log, spool,
    # cache; deploy/pbx.sh) and the root's /var and /tmp, where Debian's defaults would put them.
    roots = [instance, root / "var", root / "tmp"]
    assert (instance / "log" / "messages.log").is_file(), f"no PBX instance at {instance}"

    before = await asyncio.to_thread(scan, roots, [*CALLERS, CONTROL])
    if before.found:
        pytest.fail(
            "the test's numbers are on the PBX before any call (pick others):\n"
            + before.report(root),
            pytrace=False,
        )

    await _place_calls(pbx, ami, start_daemon)
    await ami.action(
        {
            "Action": "QueueAdd",
            "Queue": "spanish",
            "Interface": CONTROL_INTERFACE,
            "MemberName": CONTROL_MEMBER,
        }
    )
    # A clean stop: the logger drains its queue and closes its files, astdb commits.
    await asyncio.to_thread(pbx.stop)
    try:
        after = await asyncio.to_thread(_scan_with_controls, instance, roots)
    finally:
        await asyncio.to_thread(pbx.start)
        await asyncio.to_thread(pbx.cli, f"queue remove member {CONTROL_INTERFACE} from spanish")

    if after.found:
        pytest.fail(
            f"caller numbers at rest on the PBX ({len(after.files)} files,"
            f" {after.bytes_read} bytes scanned):\n" + after.report(root),
            pytrace=False,
        )
    # queue_log is off (asterisk-config/logger.conf): Asterisk never even created the file.
    assert not (instance / "log" / "queue_log").exists()


def _scan_with_controls(instance: Path, roots: list[Path]) -> Scan:
    """The positive controls, then the scan for the callers. Runs while Asterisk is stopped."""
    log = instance / "log"
    try:
        for name, (content, _) in CONTROL_FILES.items():
            (log / name).write_bytes(content)
        control = scan(roots, [CONTROL])
    finally:
        for name in CONTROL_FILES:
            (log / name).unlink(missing_ok=True)
    report = control.report(pbx_root())
    assert sorted(control.found) == sorted(log / name for name in CONTROL_FILES), report
    for name, (_, kind) in CONTROL_FILES.items():
        assert kind in control.found[log / name][CONTROL], report
    astdb = instance / "lib" / "astdb.sqlite3"
    for path in (log / "messages.log", astdb):
        assert path in control.files, f"{path} was not scanned"
    assert CONTROL_MEMBER.encode() in astdb.read_bytes(), "astdb was not flushed before the scan"
    # The unparseable INVITE was logged (a warning): the messages.log scanned is the live one.
    assert b"syntax error" in (log / "messages.log").read_bytes(), "messages.log is not live"
    return scan(roots, CALLERS)


async def _place_calls(pbx: Pbx, ami: AmiTestClient, start_daemon: StartDaemon) -> None:
    """An answered call, an abandoned one, one timed out into rollover, one refused because
    nobody is on duty, and an INVITE from an unknown SIP peer; each phase over before the next,
    and each call shown by AMI to have reached Asterisk with its number."""
    clock = ManualClock(ANSWERING)
    await start_daemon(ROSTER, clock)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 5, "r-ana on duty")
    await ami.call("988", caller=ANSWERED.presented, hold_s=30, talk_s=3)
    # AgentConnect, not AgentComplete: Asterisk may publish the latter once the caller's channel
    # is gone, without its fields (docs/metrics.md, hotline_events_unattributed_total).
    await _event(ami, "AgentConnect", ANSWERED, within=20)
    await _no_calls(pbx)

    clock.set(RINGING)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-away"]}, 5, "r-away on duty")
    await ami.call("988", caller=ABANDONED.presented, hold_s=5)
    await ami.call("741", caller=TIMED_OUT.presented, hold_s=12)
    await _event(ami, "QueueCallerAbandon", ABANDONED, within=15)
    await _event(ami, "UserEvent", TIMED_OUT, within=20, UserEvent="QueueResult", Status="TIMEOUT")
    await _no_calls(pbx)

    clock.set(NOBODY)
    await wait_for(ami.names, lambda n: n == {}, 5, "nobody on duty")
    await ami.call("988", caller=REFUSED.presented, hold_s=4)
    await _event(ami, "UserEvent", REFUSED, within=15, UserEvent="QueueResult", Status="JOINEMPTY")
    await _no_calls(pbx)

    for caller in (ANSWERED, ABANDONED, TIMED_OUT):
        await _event(ami, "QueueCallerJoin", caller, within=1)

    reply = await asyncio.to_thread(_invite_from_unknown_peer, pbx.sip_port, UNKNOWN_PEER)
    assert reply.startswith("SIP/2.0 401"), reply


async def _event(
    ami: AmiTestClient, name: str, caller: Caller, within: float, **fields: str
) -> None:
    """Wait until Asterisk reports event `name` (with `fields`) for `caller`."""

    async def matching() -> int:
        return sum(
            1
            for e in ami.events
            if e.name == name
            and e.fields.get("CallerIDNum") == caller.reported
            and all(e.fields.get(k) == v for k, v in fields.items())
        )

    await wait_for(matching, bool, within, f"{name} {fields} for {caller.presented}")


async def _no_calls(pbx: Pbx) -> None:
    async def channels() -> str:
        return await asyncio.to_thread(pbx.cli, "core show channels count")

    await wait_for(channels, lambda out: out.startswith("0 active channels"), 20, "no calls")


def _invite_from_unknown_peer(port: int, number: str) -> str:
    """Send the PBX two SIP INVITEs from `number` at a peer it has no endpoint for: one it cannot
    parse (pjproject logs such a packet), then a well-formed one; return the status line of the
    reply to the second (a challenge: res_pjsip answers unknown peers like known ones). The
    transport reads in order, so by then the first was handled."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        here = sock.getsockname()[1]
        contact = f"<sip:{number}@127.0.0.1:{here}>"
        for contact_header in (f"{contact[:-1]};;;>>", contact):  # the first cannot be parsed
            call_id = uuid.uuid4().hex
            invite = (
                f"INVITE sip:988@127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK{call_id[:16]};rport\r\n"
                "Max-Forwards: 70\r\n"
                f'From: "Caller" <sip:{number}@127.0.0.1>;tag={call_id[:8]}\r\n'
                "To: <sip:988@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\n"
                "CSeq: 1 INVITE\r\n"
                f"Contact: {contact_header}\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(invite.encode(), ("127.0.0.1", port))
        while True:  # a provisional 100 Trying may come first
            status = sock.recv(65536).decode(errors="replace").partition("\r\n")[0]
            if not status.startswith("SIP/2.0 1"):
                return status
