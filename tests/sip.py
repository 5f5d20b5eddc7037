"""Real SIP phones for the tests: Debian's baresip as a responder's desk phone (TLS, SRTP or not),
driven over its ctrl_tcp socket; a CA and certificates made by the test with openssl; a tcpdump
capture of the phone's media, and what tells SRTP from plain RTP on the wire."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import struct
import subprocess
import uuid
import wave
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import free_port, wait_for

# Where the phones live: loopback, beside the PBX's phone address (tests/harness.py Pbx).
PHONE_HOST = "127.0.0.1"
# SRTP's AES_CM_128_HMAC_SHA1_80 appends an 80-bit authentication tag to every packet.
SRTP_TAG_BYTES = 10
# One 20 ms G.711 frame.
G711_FRAME_BYTES = 160


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA's certificate, what a phone would trust
    cert: Path  # the PBX's certificate, signed by the CA, for the phones' address
    key: Path


def make_certificates(directory: Path, address: str, name: str = "test") -> Certificates:
    """A CA of the test's own and, signed by it, a server certificate for `address` (RSA, as
    desk phones take)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / f"{name}-ca.pem", directory / f"{name}-ca.key"
    cert, key = directory / f"{name}-server.pem", directory / f"{name}-server.key"
    csr, ext = directory / f"{name}-server.csr", directory / f"{name}-server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{address}\n"
    )
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         f"/CN=hotline tests {name} CA", "-keyout", ca_key, "-out", ca,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={address}",
         "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-days", "2",
         "-set_serial", f"0x{uuid.uuid4().hex}", "-extfile", ext, "-out", cert],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    key.chmod(0o600)
    return Certificates(ca, cert, key)


def verify_server(address: str, port: int, ca: Path) -> tuple[bool, str]:
    """Whether `openssl s_client` verifies the TLS server at address:port against `ca` alone
    (the chain and the IP address in the certificate); and its verdict line."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:{port}", "-CAfile", str(ca),
         "-verify_ip", address, "-verify_return_error", "-brief"],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    verdict = next((line for line in out.splitlines() if "erif" in line), out.strip()[-200:])
    return proc.returncode == 0 and "Verification: OK" in out, verdict


# -- the phone -----------------------------------------------------------------------------------


@dataclass
class Phone:
    """A baresip user agent registered as PJSIP endpoint `extension` over TLS."""

    extension: str
    password: str = field(repr=False)
    pbx_address: str
    pbx_port: int
    directory: Path
    srtp: bool = True  # offer SRTP only (mediaenc=srtp-mand), or plain RTP only
    sip_port: int = field(default_factory=free_port)
    ctrl_port: int = field(default_factory=free_port)
    rtp_ports: tuple[int, int] = (0, 0)
    events: list[dict[str, object]] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None
    _ctrl: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    _reader: asyncio.Task[None] | None = None
    _replies: asyncio.Queue[dict[str, object]] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        if self.rtp_ports == (0, 0):
            base = free_media_ports()
            self.rtp_ports = (base, base + 9)

    @property
    def log(self) -> str:
        path = self.directory / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lo, hi = self.rtp_ports
        (self.directory / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen {PHONE_HOST}:{self.sip_port}",
                    # The phone's own address in its SDP (else the host's first interface).
                    f"net_interface {PHONE_HOST}",
                    f"rtp_ports {lo}-{hi}",
                    # A 440 Hz tone into every call; what the phone hears is written to a file.
                    "audio_source ausine,440",
                    "audio_player aubridge,nil",
                    "audio_alert aubridge,nil",
                    "ausrc_srate 48000",
                    "ausrc_channels 2",
                    f"snd_path {self.directory}",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module ausine.so",
                    "module aubridge.so",
                    "module srtp.so",
                    "module sndfile.so",
                    "module_tmp account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen {PHONE_HOST}:{self.ctrl_port}",
                    "",
                ]
            )
        )
        media = ";mediaenc=srtp-mand" if self.srtp else ""
        (self.directory / "accounts").write_text(
            f"<sip:{self.extension}@{self.pbx_address}:{self.pbx_port};transport=tls>"
            f";auth_pass={self.password}{media};answermode=auto;regint=60\n"
        )
        (self.directory / "accounts").chmod(0o600)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.write_config()
        with (self.directory / "baresip.log").open("ab") as log:
            # Headless: no -d (it would daemonise and lose the pid); a session of its own.
            return subprocess.Popen(
                ["baresip", "-f", str(self.directory)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self) -> None:
        self._proc = await asyncio.to_thread(self._spawn)

        async def connected() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(f"baresip exited {self._proc.returncode}:\n{self.log}")
            try:
                self._ctrl = await asyncio.open_connection(PHONE_HOST, self.ctrl_port)
            except OSError:
                return False
            return True

        await wait_for(connected, bool, 15, f"baresip {self.extension}'s control socket")
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ctrl is not None:
            self._ctrl[1].close()
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self._proc.wait, 10)

    async def command(self, name: str, params: str = "") -> dict[str, object]:
        """Run a baresip command (ctrl_tcp, netstring JSON) and return its reply."""
        assert self._ctrl is not None, "the phone is not started"
        body = json.dumps({"command": name, "params": params, "token": name}).encode()
        self._ctrl[1].write(f"{len(body)}:".encode() + body + b",")
        await self._ctrl[1].drain()
        async with asyncio.timeout(10):
            return await self._replies.get()

    async def dial(self, number: str) -> dict[str, object]:
        return await self.command("dial", number)

    def closed_calls(self) -> list[str]:
        """The reason of every call that ended, in order (baresip's CALL_CLOSED parameter)."""
        return [str(e.get("param", "")) for e in self.events if e.get("type") == "CALL_CLOSED"]

    def recordings(self) -> list[Path]:
        """What the phone heard in each call, decoded (sndfile's *-dec.wav)."""
        return sorted(self.directory.glob("*-dec.wav"))

    async def _read(self) -> None:
        assert self._ctrl is not None
        reader = self._ctrl[0]
        while True:
            length = int((await reader.readuntil(b":"))[:-1])
            message = json.loads(await reader.readexactly(length))
            await reader.readexactly(1)  # the netstring's ","
            if message.get("response"):
                await self._replies.put(message)
            elif message.get("event"):
                self.events.append(message)


def free_media_ports() -> int:
    """The first of ten consecutive UDP ports free on the phones' host, outside Asterisk's RTP
    range (5000-31000 without rtp.conf)."""
    for _ in range(200):
        base = 40000 + (uuid.uuid4().int % 2000) * 10
        socks = []
        try:
            for port in range(base, base + 10):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((PHONE_HOST, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise AssertionError("no ten free UDP ports for a phone's media")


# -- plain SIP -----------------------------------------------------------------------------------


def plain_register(address: str, port: int, extension: str, timeout: float = 2.0) -> str | None:
    """Send a REGISTER for `extension` over plain UDP to address:port, as a phone (or an
    attacker) would; the reply's status line, or None if nothing answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PHONE_HOST, 0))
        sock.settimeout(timeout)
        here = sock.getsockname()[1]
        tag = uuid.uuid4().hex
        request = (
            f"REGISTER sip:{address}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {PHONE_HOST}:{here};branch=z9hG4bK{tag[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{extension}@{address}>;tag={tag[:8]}\r\n"
            f"To: <sip:{extension}@{address}>\r\n"
            f"Call-ID: {tag}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{extension}@{PHONE_HOST}:{here}>\r\n"
            "Expires: 60\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (address, port))
        try:
            while True:
                status = sock.recv(65536).decode(errors="replace").partition("\r\n")[0]
                if not status.startswith("SIP/2.0 1"):
                    return status
        except (TimeoutError, ConnectionRefusedError):  # no answer; ICMP port unreachable
            return None


# -- the wire ------------------------------------------------------------------------------------


class Capture:
    """tcpdump on loopback, of the UDP packets to or from a port range, into a pcap file."""

    def __init__(self, path: Path, ports: tuple[int, int]) -> None:
        self.path = path
        self._proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-U", "-w", str(path),
             "udp", "and", "portrange", f"{ports[0]}-{ports[1]}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    async def started(self) -> None:
        """Until tcpdump listens (it says so on stderr)."""
        assert self._proc.stderr is not None
        line = await asyncio.to_thread(self._proc.stderr.readline)
        assert b"listening" in line, line

    def stop(self) -> list[Datagram]:
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(10)
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        return list(read_pcap(self.path))


@dataclass(frozen=True)
class Datagram:
    src_port: int
    dst_port: int
    payload: bytes


def read_pcap(path: Path) -> Iterator[Datagram]:
    """The IPv4 UDP datagrams of a classic pcap file (tcpdump -w; loopback's Ethernet framing)."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic == b"\xd4\xc3\xb2\xa1" else ">"
    link = struct.unpack(endian + "I", data[20:24])[0]
    offset = 24
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ip = frame[14:] if link == 1 else frame[16:] if link == 113 else frame[4:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        header = (ip[0] & 0x0F) * 4
        if len(ip) < header + 8:  # the last record of a capture still being written
            continue
        src, dst, length = struct.unpack("!HHH", ip[header : header + 6])
        yield Datagram(src, dst, ip[header + 8 : header + length])


def rtp_payload(datagram: bytes) -> bytes | None:
    """The payload of an RTP packet (version 2, no CSRCs or extension counted), or None."""
    if len(datagram) < 12 or datagram[0] >> 6 != 2:
        return None
    header = 12 + 4 * (datagram[0] & 0x0F)
    if datagram[0] & 0x10 and len(datagram) >= header + 4:
        header += 4 + 4 * struct.unpack("!H", datagram[header + 2 : header + 4])[0]
    return datagram[header:]


def byte_chi_square(payloads: list[bytes]) -> float:
    """Pearson's chi-square of the payload bytes against uniform: about 255 (+-23 for one
    standard deviation) for ciphertext; tens of thousands for G.711 audio, whose byte values
    bunch around the quiet end of the mu-law scale."""
    counts = Counter(b for p in payloads for b in p)
    total = sum(counts.values())
    expected = total / 256
    return sum((counts.get(v, 0) - expected) ** 2 / expected for v in range(256))


def tone_share(payloads: list[bytes], hz: float = 440.0, rate: int = 8000) -> float:
    """The share of the signal's power at `hz` when the payloads are read as mu-law audio
    (Goertzel): near 1 for the phone's plain tone, near 0 for ciphertext read as audio."""
    samples = [_ulaw(b) for p in payloads for b in p]
    if not samples:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * hz / rate)
    share, block = 0.0, 160
    blocks = 0
    for start in range(0, len(samples) - block + 1, block):
        chunk = samples[start : start + block]
        s1 = s2 = 0.0
        for x in chunk:
            s1, s2 = x + coefficient * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
        energy = sum(x * x for x in chunk) * block / 2
        share += power / energy if energy else 0.0
        blocks += 1
    return share / blocks if blocks else 0.0


def _ulaw(byte: int) -> int:
    u = ~byte & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - magnitude) if u & 0x80 else (magnitude - 0x84)


def ulaw_encode(sample: int) -> int:
    """G.711 mu-law of a 16-bit sample (for the tests' plain-RTP control)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def rms(wav: Path) -> float:
    """The root mean square of a 16-bit PCM WAV file's samples."""
    with wave.open(str(wav)) as audio:
        frames = audio.readframes(audio.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames[: len(frames) // 2 * 2])
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


# -- AMI -----------------------------------------------------------------------------------------


async def getvar(port: int, secret: str, channel: str, variable: str) -> str | None:
    """A channel variable or function's value through the test AMI account (the daemon's link
    keeps no reply headers but the message)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # the banner
        for action in (
            {"Action": "Login", "Username": "hotline-test", "Secret": secret, "Events": "off"},
            {"Action": "Getvar", "Channel": channel, "Variable": variable, "ActionID": "v"},
        ):
            writer.write("".join(f"{k}: {v}\r\n" for k, v in action.items()).encode() + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            while True:
                block = (await reader.readuntil(b"\r\n\r\n")).decode(errors="replace")
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if fields.get("ActionID") == "v":
                    return fields.get("Value") if fields.get("Response") == "Success" else None
    finally:
        writer.close()
