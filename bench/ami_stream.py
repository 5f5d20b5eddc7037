"""Benchmark support for bench/recording.py: a synthetic app_queue event stream in Asterisk 22's
wire format (docs/asterisk-ami.md, "Queue events"), and a fake AMI server that replays it (at full
speed or at a set rate) from a process of its own, noting when it handed each sampled
AgentComplete to the kernel.

Per call: answered (75 %): QueueCallerJoin, AgentCalled, DialEnd NOANSWER, AgentRingNoAnswer,
AgentCalled (a second responder), QueueCallerLeave, AgentConnect, QueueMemberStatus (in use),
AgentComplete, Hangup (member leg), Hangup (caller), QueueMemberStatus (idle); abandoned (20 %):
QueueCallerJoin, AgentCalled, DialEnd CANCEL, QueueCallerAbandon, QueueCallerLeave, Hangup;
refused (5 %): UserEvent QueueResult JOINEMPTY, UserEvent QueueRollover, Hangup. Every event has
the caller's channel snapshot (member legs as Dest*) and ChanVariable HOTLINE_CAMPAIGN=988, under
Asterisk's own class: agent for app_queue, call for DialEnd and Hangup, user for UserEvent.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

EOL = "\r\n"
QUEUE = "crisis"
CAMPAIGN = "988"
RESPONDERS = 60
MEAN_GAP_S = 0.7  # between call arrivals: ~5,000 calls an hour, a large centre
EVENTS_PER_CALL = 10.3  # what the mix below averages, to anchor the stream's end at about now
FULL_SPEED_CHUNK = 64 * 1024  # bytes per write when replaying as fast as the socket takes it
PACED_CHUNK = 4 * 1024  # a few events per write when replaying at a set rate
# Call mix: answered after one missed ring, abandoned while waiting, refused at join (nobody on).
ABANDONED_SHARE = 0.20
REFUSED_SHARE = 0.05
_STATES = {0: "Down", 5: "Ringing", 6: "Up"}
_UNKNOWN = "<unknown>"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the pipeline must know about a stream before it is replayed."""

    events: int
    calls: int  # records that end with an outcome: one per call
    answered: int
    abandoned: int
    refused: int
    size_bytes: int
    samples: tuple[str, ...]  # caller uniqueids of the sampled answered calls, by sample id


@dataclass(frozen=True, slots=True)
class Replayed:
    """What the server reports once the last byte of the stream is in the kernel."""

    first_byte_at: float  # time.monotonic(): system-wide, so comparable across processes
    last_byte_at: float
    written_at: tuple[float, ...]  # per sample id: its AgentComplete's last byte handed over
    cpu_s: float  # the server process's CPU time during the replay
    longest_wait_s: float  # longest a write waited for room in the socket (reader too slow)


@dataclass(frozen=True, slots=True)
class Stream:
    plan: Plan
    events: tuple[tuple[bytes, int], ...]  # one message each, and its sample id or -1


@dataclass(frozen=True, slots=True)
class _Channel:
    name: str
    caller_num: str
    caller_name: str
    context: str
    exten: str
    priority: int
    uniqueid: str
    linkedid: str
    connected_num: str = _UNKNOWN
    connected_name: str = _UNKNOWN

    def snapshot(self, state: int, prefix: str = "") -> str:
        p = prefix
        return (
            f"{p}Channel: {self.name}{EOL}"
            f"{p}ChannelState: {state}{EOL}"
            f"{p}ChannelStateDesc: {_STATES[state]}{EOL}"
            f"{p}CallerIDNum: {self.caller_num}{EOL}"
            f"{p}CallerIDName: {self.caller_name}{EOL}"
            f"{p}ConnectedLineNum: {self.connected_num}{EOL}"
            f"{p}ConnectedLineName: {self.connected_name}{EOL}"
            f"{p}Language: en{EOL}"
            f"{p}AccountCode: {EOL}"
            f"{p}Context: {self.context}{EOL}"
            f"{p}Exten: {self.exten}{EOL}"
            f"{p}Priority: {self.priority}{EOL}"
            f"{p}Uniqueid: {self.uniqueid}{EOL}"
            f"{p}Linkedid: {self.linkedid}{EOL}"
            f"{p}ChanVariable: HOTLINE_CAMPAIGN={CAMPAIGN}{EOL}"
        )


@dataclass(frozen=True, slots=True)
class _Member:
    name: str  # MemberName: the responder id
    interface: str
    ext: str


def _event(name: str, privilege: str, at: float, body: str) -> str:
    return f"Event: {name}{EOL}Privilege: {privilege},all{EOL}Timestamp: {at:.6f}{EOL}{body}{EOL}"


def _fields(**fields: object) -> str:
    return "".join(f"{k}: {v}{EOL}" for k, v in fields.items())


class _Generator:
    def __init__(self, rng: random.Random, start: float) -> None:
        self.rng = rng
        self.start = start
        self.seq = 0
        self.members = [
            _Member(f"r-{i:03d}", f"PJSIP/{2000 + i}", str(2000 + i)) for i in range(RESPONDERS)
        ]
        self.calls_taken = dict.fromkeys((m.name for m in self.members), 0)
        # (time, order, text, sample id or -1)
        self.events: list[tuple[float, int, str, int]] = []

    def _uniqueid(self, at: float) -> str:
        self.seq += 1
        return f"{int(at)}.{self.seq}"

    def _add(self, at: float, text: str, sample: int = -1) -> None:
        self.events.append((at, len(self.events), text, sample))

    def _leg(self, caller: _Channel, member: _Member, at: float) -> _Channel:
        """The member's channel: its caller id is the responder's extension, its connected line
        the caller (so the caller's number reaches AMI a second time, as Asterisk does)."""
        uid = self._uniqueid(at)
        return _Channel(
            f"{member.interface}-{self.seq:08x}",
            member.ext,
            member.name,
            "hotline-responders",
            member.ext,
            1,
            uid,
            caller.linkedid,
            caller.caller_num,
            caller.caller_name,
        )

    def _member_status(self, at: float, member: _Member, in_call: bool) -> None:
        body = _fields(
            Queue=QUEUE,
            MemberName=member.name,
            Interface=member.interface,
            StateInterface=member.interface,
            Membership="dynamic",
            Penalty=0,
            CallsTaken=self.calls_taken[member.name],
            LastCall=int(at),
            LastPause=0,
            LoginTime=int(self.start),
            InCall=int(in_call),
            Status=2 if in_call else 1,
            Paused=0,
            PausedReason="",
            Ringinuse=0,
            Wrapuptime=0,
        )
        self._add(at, _event("QueueMemberStatus", "agent", at, body))

    def _agent(
        self,
        name: str,
        at: float,
        caller: _Channel,
        leg: _Channel,
        member: _Member,
        **extra: object,
    ) -> str:
        body = (
            caller.snapshot(6)
            + leg.snapshot(6 if name in ("AgentConnect", "AgentComplete") else 5, "Dest")
            + _fields(Queue=QUEUE, Interface=member.interface, MemberName=member.name, **extra)
        )
        return _event(name, "agent", at, body)

    def call(self, at: float, number: str, kind: str, sample: int) -> str:
        """Add the events of one call; return the caller's uniqueid."""
        rng = self.rng
        uid = self._uniqueid(at)
        caller = _Channel(
            f"PJSIP/carrier-{self.seq:08x}",
            number,
            "WIRELESS CALLER",
            "hotline-inbound",
            CAMPAIGN,
            4,
            uid,
            uid,
        )
        snap = caller.snapshot(6)
        if kind == "refused":
            queue = _fields(Queue=QUEUE, Status="JOINEMPTY", Campaign=CAMPAIGN)
            result = replace(caller, priority=5).snapshot(6)
            self._add(
                at, _event("UserEvent", "user", at, f"{result}UserEvent: QueueResult{EOL}{queue}")
            )
            rolled = replace(caller, context="hotline-rollover", exten="s", priority=1)
            body = f"{rolled.snapshot(6)}UserEvent: QueueRollover{EOL}" + _fields(
                Queue=QUEUE, Campaign=CAMPAIGN
            )
            self._add(at + 0.001, _event("UserEvent", "user", at + 0.001, body))
            end = at + rng.uniform(20, 300)  # talking to the partner centre
            hangup = rolled.snapshot(6) + _fields(Cause=16, **{"Cause-txt": "Normal Clearing"})
            self._add(end, _event("Hangup", "call", end, hangup))
            return uid
        position = rng.randint(1, 4)
        join = _fields(Queue=QUEUE, Position=position, Count=position)
        self._add(at, _event("QueueCallerJoin", "agent", at, snap + join))
        first, second = rng.sample(self.members, 2)
        rang = at + 0.005
        leg_a = self._leg(caller, first, rang)
        self._add(rang, self._agent("AgentCalled", rang, caller, leg_a, first))
        if kind == "abandoned":
            gone = at + rng.uniform(3, 85)
            dial_end = snap + leg_a.snapshot(5, "Dest") + _fields(DialStatus="CANCEL")
            self._add(gone, _event("DialEnd", "call", gone, dial_end))
            held = int(gone - at)
            abandon = _fields(Queue=QUEUE, Position=1, OriginalPosition=position, HoldTime=held)
            self._add(gone, _event("QueueCallerAbandon", "agent", gone, snap + abandon))
            leave = _fields(Queue=QUEUE, Position=1, Count=0)
            self._add(gone, _event("QueueCallerLeave", "agent", gone, snap + leave))
            hangup = snap + _fields(Cause=16, **{"Cause-txt": "Normal Clearing"})
            self._add(gone + 0.002, _event("Hangup", "call", gone + 0.002, hangup))
            return uid
        # Answered: the first responder rings out (15 s), the second answers.
        missed = rang + 15.0
        dial_end = snap + leg_a.snapshot(5, "Dest") + _fields(DialStatus="NOANSWER")
        self._add(missed, _event("DialEnd", "call", missed, dial_end))
        no_answer = self._agent("AgentRingNoAnswer", missed, caller, leg_a, first, RingTime=15000)
        self._add(missed + 0.001, no_answer)
        retry = missed + 2.0
        leg_b = self._leg(caller, second, retry)
        self._add(retry, self._agent("AgentCalled", retry, caller, leg_b, second))
        ring_s = rng.uniform(2, 10)
        answered = retry + ring_s
        leave = _fields(Queue=QUEUE, Position=1, Count=0)
        self._add(answered, _event("QueueCallerLeave", "agent", answered, snap + leave))
        caller = replace(caller, connected_num=second.ext, connected_name=second.name)
        hold = int(answered - at)
        connect = self._agent(
            "AgentConnect", answered, caller, leg_b, second, HoldTime=hold, RingTime=int(ring_s)
        )
        self._add(answered + 0.001, connect)
        self.calls_taken[second.name] += 1
        self._member_status(answered + 0.002, second, in_call=True)
        talk = rng.lognormvariate(5.7, 0.7)  # median about 5 min
        ended = answered + talk
        reason = rng.choice(("caller", "agent"))
        complete = self._agent(
            "AgentComplete",
            ended,
            caller,
            leg_b,
            second,
            HoldTime=hold,
            TalkTime=int(talk),
            Reason=reason,
        )
        self._add(ended, complete, sample)
        cause = _fields(Cause=16, **{"Cause-txt": "Normal Clearing"})
        self._add(ended + 0.01, _event("Hangup", "call", ended + 0.01, leg_b.snapshot(6) + cause))
        self._add(ended + 0.02, _event("Hangup", "call", ended + 0.02, caller.snapshot(6) + cause))
        self._member_status(ended + 0.03, second, in_call=False)
        return uid


def generate(events: int, seed: int = 988, sample_every: int = 50) -> Stream:
    """At least `events` events of whole calls, ordered by their Timestamp: a call every
    MEAN_GAP_S on average, talks of ~5 min, ending about now. The span stays well under the
    daemon's 6 h stale bound for the default size, so its timers act as in production."""
    rng = random.Random(seed)
    span = events / EVENTS_PER_CALL * MEAN_GAP_S
    gen = _Generator(rng, time.time() - span - 600)
    at = gen.start
    counts = {"answered": 0, "abandoned": 0, "refused": 0}
    samples: list[str] = []
    numbers = rng.sample(range(10_000_000), k=max(1, events // 3))  # more than enough callers
    n = 0
    while len(gen.events) < events:
        at += rng.expovariate(1 / MEAN_GAP_S)
        draw = rng.random()
        kind = (
            "refused"
            if draw < REFUSED_SHARE
            else "abandoned"
            if draw < REFUSED_SHARE + ABANDONED_SHARE
            else "answered"
        )
        sampled = kind == "answered" and counts["answered"] % sample_every == 0
        counts[kind] += 1
        uid = gen.call(at, f"+1555{numbers[n]:07d}", kind, len(samples) if sampled else -1)
        if sampled:
            samples.append(uid)
        n += 1
    gen.events.sort()
    encoded = tuple((text.encode(), sample) for _at, _order, text, sample in gen.events)
    plan = Plan(
        events=len(encoded),
        calls=n,
        answered=counts["answered"],
        abandoned=counts["abandoned"],
        refused=counts["refused"],
        size_bytes=sum(len(data) for data, _ in encoded),
        samples=tuple(samples),
    )
    return Stream(plan, encoded)


def chunked(stream: Stream, max_bytes: int) -> list[tuple[bytes, int, tuple[int, ...]]]:
    """(bytes, events, samples) to write in one go: at most about `max_bytes`, and cut right
    after each sampled AgentComplete, so that the instant its write returns is its own."""
    chunks: list[tuple[bytes, int, tuple[int, ...]]] = []
    parts: list[bytes] = []
    size = 0
    for data, sample in stream.events:
        parts.append(data)
        size += len(data)
        if sample >= 0 or size >= max_bytes:
            chunks.append((b"".join(parts), len(parts), (sample,) if sample >= 0 else ()))
            parts, size = [], 0
    if parts:
        chunks.append((b"".join(parts), len(parts), ()))
    return chunks


# -- the fake AMI server ------------------------------------------------------------------------


def _reply(action_id: str, **fields: str) -> bytes:
    return (f"Response: Success{EOL}ActionID: {action_id}{EOL}" + _fields(**fields) + EOL).encode()


class _Server:
    """Banner, Login, FullyBooted and Ping, as Asterisk answers them; after the first login on
    each connection, the stream (the benchmark connects once per measurement: the pipeline and
    each baseline read the same bytes)."""

    def __init__(self, stream: Stream, conn: Connection, rate: float | None) -> None:
        self.plan = stream.plan
        self.chunks = chunked(stream, PACED_CHUNK if rate else FULL_SPEED_CHUNK)
        self.conn = conn
        self.rate = rate
        self.replays: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        # drain() then returns only once every byte written is in the kernel's socket buffer.
        writer.transport.set_write_buffer_limits(high=0, low=0)
        writer.write(f"Asterisk Call Manager/11.0.0{EOL}".encode())
        replaying = False
        try:
            while True:
                block = await reader.readuntil((EOL + EOL).encode())
                lines = block.decode().strip().split(EOL)
                headers = dict(line.split(": ", 1) for line in lines if ": " in line)
                action, action_id = headers.get("Action", ""), headers.get("ActionID", "")
                if action == "Login":
                    writer.write(_reply(action_id, Message="Authentication accepted"))
                    booted = _fields(Uptime=3600, LastReload=3600, Status="Fully Booted")
                    writer.write(_event("FullyBooted", "system", time.time(), booted).encode())
                    await writer.drain()
                    if not replaying:
                        replaying = True
                        self.replays.append(asyncio.create_task(self._replay(writer)))
                elif action == "Ping":
                    # No drain: the replay may be waiting in one; this goes out after its chunk.
                    writer.write(_reply(action_id, Ping="Pong", Timestamp=f"{time.time():.6f}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _replay(self, writer: asyncio.StreamWriter) -> None:
        written_at = [0.0] * len(self.plan.samples)
        cpu = time.process_time()
        first = time.monotonic()
        sent = 0
        longest = 0.0
        for data, events, samples in self.chunks:
            if self.rate:
                ahead = first + sent / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            began = time.monotonic()
            writer.write(data)
            await writer.drain()
            now = time.monotonic()
            longest = max(longest, now - began)
            sent += events
            for sample in samples:
                written_at[sample] = now
        last = time.monotonic()
        cpu = time.process_time() - cpu
        result = Replayed(first, last, tuple(written_at), cpu, longest)
        self.conn.send(("replayed", result))


async def _serve(conn: Connection, stream: Stream, rate: float | None) -> None:
    server = _Server(stream, conn, rate)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = int(listener.sockets[0].getsockname()[1])
    conn.send(("ready", port, stream.plan))
    # Serve until the benchmark says stop (it reads each replay's result first).
    await asyncio.to_thread(conn.recv)
    listener.close()
    for writer in server.writers:
        writer.close()


def serve_in_process(
    conn: Connection, events: int, seed: int, sample_every: int, rate: float | None
) -> None:
    """multiprocessing target: generate the stream, listen on loopback, replay it to each
    connection once logged in (at full speed, or at `rate` events/s)."""
    stream = generate(events, seed, sample_every)
    asyncio.run(_serve(conn, stream, rate))
