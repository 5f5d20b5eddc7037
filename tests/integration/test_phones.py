"""Responders' desk phones end to end: a real SIP user agent (baresip) registered over TLS with
SRTP to the development PBX's phone transport, with a certificate from a CA the test makes; queue
calls it answers, its media on the wire, the call record; what a plain UDP REGISTER and a phone
without SRTP get; the feature codes; and the transports the README promises."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from hotline.daemon import Daemon
from tests.conftest import StartDaemon
from tests.harness import REPO, AmiTestClient, ManualClock, Pbx, wait_for
from tests.integration.conftest import Recorded, scrape
from tests.sip import (
    G711_FRAME_BYTES,
    SRTP_TAG_BYTES,
    Capture,
    Certificates,
    Phone,
    byte_chi_square,
    getvar,
    make_certificates,
    plain_register,
    read_pcap,
    rms,
    rtp_payload,
    tone_share,
    ulaw_encode,
    verify_server,
)

NY = ZoneInfo("America/New_York")
ROSTER = """
timezone: America/New_York
queues:
  crisis: {min_responders: 1}
responders:
  r-ana: {name: Ana, interface: PJSIP/2001, queues: {crisis: 0}}
  r-ben: {name: Ben, interface: PJSIP/2002, queues: {crisis: 0}}
shifts:
  - {name: ana, days: [daily], start: "10:00", end: "10:10", responders: [r-ana]}
  - {name: ben, days: [daily], start: "10:10", end: "10:20", responders: [r-ben]}
"""
ANA_ON_SHIFT = datetime(2026, 12, 2, 10, 0, 30, tzinfo=NY)
BEN_ON_SHIFT = datetime(2026, 12, 2, 10, 10, 30, tzinfo=NY)
# A row of the README's transport table: name, protocol, bind.
README_TRANSPORT = re.compile(r"^\| `(transport-[a-z0-9-]+)` \| (\w+) \| `([^`]+)` \|", re.M)


@dataclass(frozen=True)
class PhonePbx:
    pbx: Pbx
    certificates: Certificates
    # The CA of the instance's first certificate, which no longer signs what the PBX presents.
    old_ca: Path


@dataclass(frozen=True)
class Rig:
    pbx: Pbx
    phones: dict[str, Phone]


@pytest.fixture(scope="module")
def phone_pbx(pbx: Pbx, tmp_path_factory: pytest.TempPathFactory) -> PhonePbx:
    """The session's PBX, restarted with a SIP TLS certificate from a CA this test makes (as a
    site installs its own: deploy/pbx.sh takes sip-tls.pem and sip-tls.key from the state)."""
    certificates = make_certificates(tmp_path_factory.mktemp("sip-ca"), pbx.phone_address)
    old_ca = pbx.state_dir / "sip-ca.pem"
    shutil.copy(certificates.cert, pbx.state_dir / "sip-tls.pem")
    shutil.copy(certificates.key, pbx.state_dir / "sip-tls.key")
    pbx.stop()
    pbx.start()
    return PhonePbx(pbx, certificates, old_ca)


@pytest.fixture
async def rig(phone_pbx: PhonePbx, tmp_path: Path) -> AsyncIterator[Rig]:
    """Phones for the development endpoints 2001 (SRTP) and 2002 (plain RTP only), not started."""
    pbx = phone_pbx.pbx
    made = {
        ext: Phone(
            extension=ext,
            password=(pbx.state_dir / "phones" / ext).read_text().strip(),
            pbx_address=pbx.phone_address,
            pbx_port=pbx.sip_tls_port,
            directory=tmp_path / f"phone-{ext}",
            srtp=srtp,
        )
        for ext, srtp in (("2001", True), ("2002", False))
    }
    yield Rig(pbx, made)
    for phone in made.values():
        await phone.stop()  # baresip unregisters as it stops: no contact is left behind


def _contacts(pbx: Pbx) -> Callable[[], Awaitable[str]]:
    async def contacts() -> str:
        return await asyncio.to_thread(pbx.cli, "pjsip show contacts")

    return contacts


async def _registered(pbx: Pbx, extension: str, within: float = 15) -> str:
    """Until the phone's contact is qualified (Avail); its line in `pjsip show contacts`."""

    async def contact() -> str:
        out = await _contacts(pbx)()
        return next((line for line in out.splitlines() if f"Contact:  {extension}/" in line), "")

    return await wait_for(contact, lambda line: "Avail" in line, within, f"{extension} Avail")


async def _readyz(hotline: Daemon) -> tuple[int, str]:
    url = f"http://127.0.0.1:{hotline.config.http.port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def _call(ami: AmiTestClient, caller: str, seconds: int) -> None:
    """A caller into the inbound context who plays music into the call for `seconds`."""
    await ami.action(
        {
            "Action": "Originate",
            "Channel": "Local/988@hotline-inbound/n",
            "Application": "MusicOnHold",
            "Data": f"default,{seconds}",
            "CallerID": f'"Test Caller" <{caller}>',
            "Async": "true",
        }
    )


async def _phone_channel(pbx: Pbx, extension: str) -> str:
    async def up() -> str:
        out = await asyncio.to_thread(pbx.cli, "core show channels concise")
        return next(
            (
                line.split("!")[0]
                for line in out.splitlines()
                if line.startswith(f"PJSIP/{extension}-") and "!Up!" in line
            ),
            "",
        )

    return await wait_for(up, bool, 20, f"PJSIP/{extension} answered")


async def test_the_pbx_presents_the_certificate_of_the_tests_ca(phone_pbx: PhonePbx) -> None:
    """baresip does not check the PBX's certificate; openssl does, against the test's CA alone."""
    pbx = phone_pbx.pbx
    ok, verdict = await asyncio.to_thread(
        verify_server, pbx.phone_address, pbx.sip_tls_port, phone_pbx.certificates.ca
    )
    assert ok, verdict
    ok, verdict = await asyncio.to_thread(
        verify_server, pbx.phone_address, pbx.sip_tls_port, phone_pbx.old_ca
    )
    assert not ok, f"a CA that did not sign the PBX's certificate verified it: {verdict}"


async def test_a_phone_over_tls_takes_a_queue_call_with_srtp_both_ways_and_it_is_recorded(
    rig: Rig,
    recorded: Recorded,
    ami: AmiTestClient,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    pbx, phone = rig.pbx, rig.phones["2001"]
    await phone.start()
    await _registered(pbx, "2001")
    hotline = await start_daemon(ROSTER, ManualClock(ANA_ON_SHIFT), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 10, "r-ana on duty")

    async def ready() -> tuple[int, str]:
        return await _readyz(hotline)

    await wait_for(ready, lambda r: r[0] == 200, 10, "/readyz ready with r-ana's phone up")
    assert (await scrape(hotline))[("hotline_phone_reachable", (("responder", "r-ana"),))] == 1

    capture = Capture(tmp_path / "media.pcap", phone.rtp_ports)
    await capture.started()
    await _call(ami, "+15550200001", seconds=6)
    channel = await _phone_channel(pbx, "2001")
    # Asterisk's own word: signalling over TLS, the audio stream SRTP.
    for variable in ("CHANNEL(pjsip,secure)", "CHANNEL(rtp,secure,audio)"):
        value = await getvar(pbx.ami_port, pbx.test_secret, channel, variable)
        assert value == "1", f"{variable} is {value!r} on {channel}"

    async def media() -> tuple[int, int]:
        packets = await asyncio.to_thread(_rtp, capture, phone)
        return len(packets[0]), len(packets[1])

    await wait_for(media, lambda n: min(n) >= 100, 15, "2 s of media each way")
    sent, received = await asyncio.to_thread(_rtp, capture, phone)
    capture.stop()

    # SRTP on the wire: RTP headers, every payload a 20 ms G.711 frame plus the 80-bit tag, and
    # bytes that look like ciphertext, not audio (the same checks flag plain G.711: the control).
    for direction, payloads in (("phone -> PBX", sent), ("PBX -> phone", received)):
        assert {len(p) for p in payloads} == {G711_FRAME_BYTES + SRTP_TAG_BYTES}, direction
        bodies = [p[:G711_FRAME_BYTES] for p in payloads]
        assert byte_chi_square(bodies) < 400, f"{direction}: payload bytes are not uniform"
    assert tone_share([p[:G711_FRAME_BYTES] for p in sent]) < 0.2, "the phone's tone is audible"
    plain = [
        bytes(ulaw_encode(round(8000 * _sine(n))) for n in range(i, i + 160))
        for i in range(0, 16000, 160)
    ]
    assert tone_share(plain) > 0.5, "the control: a plain tone is not recognised"
    assert byte_chi_square(plain) > 5000, "the control: plain G.711 looks uniform"

    # The caller hangs up after 6 s; the record names the responder whose phone answered.
    await _until_closed(recorded, "+15550200001")
    [row] = recorded.by_caller("+15550200001")
    assert row["outcome"] == "answered", row
    assert row["answered_by"] == "r-ana", row
    # What the phone heard, decrypted: the caller's music, not silence.
    [heard] = phone.recordings()
    assert rms(heard) > 100, f"the phone heard silence ({rms(heard):.0f})"


def _sine(n: int) -> float:
    return math.sin(2 * math.pi * 440 * n / 8000)


def _rtp(capture: Capture, phone: Phone) -> tuple[list[bytes], list[bytes]]:
    """The RTP payloads (G.711 only: RTCP shares the range) the phone sent and received."""
    lo, hi = phone.rtp_ports
    sent: list[bytes] = []
    received: list[bytes] = []
    for datagram in read_pcap(capture.path):
        if len(datagram.payload) < 2 or datagram.payload[1] & 0x7F not in (0, 8):
            continue
        payload = rtp_payload(datagram.payload)
        if payload is None:
            continue
        if lo <= datagram.src_port <= hi:
            sent.append(payload)
        elif lo <= datagram.dst_port <= hi:
            received.append(payload)
    return sent, received


async def _until_closed(recorded: Recorded, number: str, within: float = 20) -> None:
    async def rows() -> list[dict[str, object]]:
        return await asyncio.to_thread(recorded.by_caller, number)

    await wait_for(
        rows, lambda rs: bool(rs) and all(r["outcome"] for r in rs), within, f"{number} closed"
    )


async def test_a_plain_udp_register_gets_no_answer_and_the_tls_contact_stays(rig: Rig) -> None:
    """Asterisk would accept a plain REGISTER for the phone and evict its TLS contact; with the
    shipped transports nothing on the phones' address answers plain SIP at all."""
    pbx, phone = rig.pbx, rig.phones["2001"]
    await phone.start()
    before = await _registered(pbx, "2001")
    for port in (5060, pbx.sip_tls_port, pbx.sip_port):
        reply = await asyncio.to_thread(plain_register, pbx.phone_address, port, "2001")
        assert reply is None, f"plain REGISTER to {pbx.phone_address}:{port} got {reply!r}"
    # The development overlay's plain transport is on loopback's own address, not the phones':
    # it answers (with a challenge), which is why the shipped configuration has none.
    reply = await asyncio.to_thread(plain_register, "127.0.0.1", pbx.sip_port, "2001")
    assert reply is not None, "the development overlay's loopback transport did not answer"
    assert reply.startswith("SIP/2.0 401"), reply
    # The same contact (URI and hash), still qualified; only its round-trip time may differ.
    after = await _registered(pbx, "2001")
    assert after.split()[:4] == before.split()[:4], f"the TLS contact changed: {after}"


async def test_a_phone_without_srtp_takes_no_call_and_readyz_says_why(
    rig: Rig, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    """A phone that offers plain RTP registers over TLS and answers qualify, but refuses every
    call it is offered (488): the daemon says so on /readyz and in its metrics."""
    pbx, phone = rig.pbx, rig.phones["2002"]
    await phone.start()
    await _registered(pbx, "2002")
    hotline = await start_daemon(ROSTER, ManualClock(BEN_ON_SHIFT))
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ben"]}, 10, "r-ben on duty")

    async def ready() -> tuple[int, str]:
        return await _readyz(hotline)

    await wait_for(ready, lambda r: r[0] == 200, 10, "/readyz ready: r-ben's phone answers qualify")
    await ami.call("988", caller="+15550200002", hold_s=5)
    _, body = await wait_for(ready, lambda r: r[0] == 503, 10, "/readyz not ready")
    assert "phones_refuse_calls" in body, body
    # Offered and refused at once, never answered.
    assert any(e.name == "AgentRingNoAnswer" for e in ami.events)
    assert not any(e.name == "AgentConnect" for e in ami.events)
    metrics = await scrape(hotline)
    assert metrics[("hotline_phone_refused_calls_total", (("responder", "r-ben"),))] >= 1
    assert metrics[("hotline_phone_reachable", (("responder", "r-ben"),))] == 0
    assert metrics[("hotline_phones_on_shift", (("state", "refusing"),))] == 1


async def test_readyz_says_when_no_on_shift_phone_can_be_reached(
    rig: Rig, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    """r-ana is on shift but her phone is not registered: no on-shift phone can be reached."""
    await wait_for(_contacts(rig.pbx), lambda out: "2001/" not in out, 10, "2001 unregistered")
    hotline = await start_daemon(ROSTER, ManualClock(ANA_ON_SHIFT))
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 10, "r-ana on duty")

    async def ready() -> tuple[int, str]:
        return await _readyz(hotline)

    _, body = await wait_for(ready, lambda r: r[0] == 503, 10, "/readyz not ready")
    assert "no_phone_reachable" in body, body
    assert (await scrape(hotline))[("hotline_phone_reachable", (("responder", "r-ana"),))] == 0
    # Her phone registers: ready again.
    await rig.phones["2001"].start()
    await _registered(rig.pbx, "2001")
    await wait_for(ready, lambda r: r[0] == 200, 15, "/readyz ready once the phone registered")


async def test_feature_codes_pause_with_a_reason_unpause_and_refuse_outside_numbers(
    rig: Rig, recorded: Recorded, ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    """The phone dials *21<digit> (the digit of a reason in pauses.reasons, rendered into the
    dialplan by deploy/pbx.sh), *20 and *22; Asterisk pauses its member with the reason, hotline
    records the pause; an outside number is refused without a dial."""
    pbx, phone = rig.pbx, rig.phones["2001"]
    await phone.start()
    await _registered(pbx, "2001")
    await start_daemon(ROSTER, ManualClock(ANA_ON_SHIFT), extra=recorded.config)
    await wait_for(ami.names, lambda n: n == {"crisis": ["r-ana"]}, 10, "r-ana on duty")
    await _no_calls(pbx)

    await phone.dial("*211")  # break: digit 1 in the default pauses.reasons
    await wait_for(_pause_of(ami), lambda p: p == (True, "break"), 10, "paused for a break")
    await wait_for(_pauses(recorded), lambda rows: rows == [("break", False)], 10, "pause row")

    await _no_calls(pbx)
    await phone.dial("*20")
    await wait_for(_pause_of(ami), lambda p: p == (False, ""), 10, "unpaused")
    await wait_for(_pauses(recorded), lambda rows: rows == [("break", True)], 10, "pause ended")

    await _no_calls(pbx)
    await phone.dial("*22")  # the last call was hard: pauses.hard_call_reason
    await wait_for(_pause_of(ami), lambda p: p == (True, "decompression"), 10, "decompression")
    await wait_for(
        _pauses(recorded),
        lambda rows: rows == [("break", True), ("decompression", False)],
        10,
        "the decompression pause row",
    )

    # An outside number, a code no reason has: refused (403), nothing dialled.
    for number in ("0800555123", "*219", "+15550100000"):
        await _no_calls(pbx)
        closed = len(phone.closed_calls())
        dials = sum(1 for e in ami.events if e.name == "DialBegin")
        await phone.dial(number)

        async def ended() -> list[str]:
            return phone.closed_calls()[closed:]  # noqa: B023 - awaited in this iteration

        [reason] = await wait_for(ended, bool, 10, f"the call to {number} ended")
        assert "403" in reason or "Forbidden" in reason, f"{number}: {reason}"
        assert sum(1 for e in ami.events if e.name == "DialBegin") == dials, f"{number} dialled"
    # Still paused for decompression: refused numbers change nothing.
    assert await _pause_of(ami)() == (True, "decompression")


def _pause_of(ami: AmiTestClient) -> Callable[[], Awaitable[tuple[bool, str]]]:
    """PJSIP/2001's pause state and reason in the crisis queue, as Asterisk reports them."""

    async def pause() -> tuple[bool, str]:
        for member in await ami.members("crisis"):
            if member.interface == "PJSIP/2001":
                return member.paused, member.paused_reason
        return False, "not a member"

    return pause


def _pauses(recorded: Recorded) -> Callable[[], Awaitable[list[tuple[str, bool]]]]:
    """r-ana's pauses in hotline.pauses, oldest first: (reason, ended)."""

    async def rows() -> list[tuple[str, bool]]:
        out = await asyncio.to_thread(
            recorded.cluster.psql,
            "SELECT reason || '|' || (ended_at IS NOT NULL) FROM hotline.pauses"
            " WHERE responder = 'r-ana' AND interface = 'PJSIP/2001' ORDER BY started_at",
            recorded.database,
        )
        return [
            (reason, ended == "true")
            for reason, _, ended in (line.strip().rpartition("|") for line in out.splitlines())
            if reason
        ]

    return rows


async def _no_calls(pbx: Pbx) -> None:
    async def channels() -> str:
        return await asyncio.to_thread(pbx.cli, "core show channels count")

    await wait_for(channels, lambda out: out.startswith("0 active channels"), 10, "no calls")


def _shipped_transports() -> dict[str, dict[str, str]]:
    """The transport sections of the shipped pjsip.conf, with their settings."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in (REPO / "asterisk-config" / "pjsip.conf").read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if header := re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line):
            current = sections.setdefault(header[1], {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return {name: s for name, s in sections.items() if s.get("type") == "transport"}


async def test_the_shipped_transports_are_tls_only_and_the_pbx_shows_what_the_readme_says(
    phone_pbx: PhonePbx,
) -> None:
    shipped = _shipped_transports()
    assert {name: s.get("protocol") for name, s in shipped.items()} == {"transport-tls": "tls"}
    assert all("bind" not in s for s in shipped.values()), "a shipped bind: it is the site's"

    pbx = phone_pbx.pbx
    promised = {
        (name, protocol, bind.replace("127.0.1.1", pbx.phone_address)
         .replace(":5061", f":{pbx.sip_tls_port}").replace(":5060", f":{pbx.sip_port}"))
        for name, protocol, bind in README_TRANSPORT.findall((REPO / "README.md").read_text())
    }  # fmt: skip
    out = await asyncio.to_thread(pbx.cli, "pjsip show transports")
    shown = {
        (fields[1], fields[2], fields[5])
        for fields in (line.split() for line in out.splitlines())
        if len(fields) == 6 and fields[0] == "Transport:" and not fields[1].startswith("<")
    }
    assert len(promised) == 2, promised
    assert shown == promised
    # No wildcard and no plain transport where the phones are.
    assert not any(bind.startswith(("0.0.0.0", "[::]")) for _, _, bind in shown)
    assert {p for _, p, bind in shown if bind.startswith(pbx.phone_address)} == {"tls"}
