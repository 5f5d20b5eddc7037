"""A scripted AMI server on loopback, for faults a real Asterisk cannot be made to produce:
a half-open link, garbage bytes, malformed events. It speaks just enough AMI: the banner, Login,
Ping, an empty QueueStatus, and FullyBooted after login."""

from __future__ import annotations

import asyncio

EOL = b"\r\n"


def message(*headers: tuple[str, str]) -> bytes:
    return b"".join(f"{k}: {v}".encode() + EOL for k, v in headers) + EOL


class FakeAmi:
    """`mute` stops every reply while keeping the socket open (a half-open link as the client
    sees it); `writers` lets a test send whatever bytes it likes."""

    def __init__(self, secret: str = "s3cret") -> None:
        self.secret = secret
        self.mute = False
        self.sessions = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0" + EOL)
        try:
            while True:
                block = await reader.readuntil(EOL + EOL)
                if self.mute:
                    continue
                lines = block.decode().strip().split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines if ": " in line)
                writer.write(self.reply(headers.get("Action", ""), headers))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def reply(self, action: str, headers: dict[str, str]) -> bytes:
        action_id = ("ActionID", headers.get("ActionID", ""))
        if action == "Login":
            if headers.get("Secret") != self.secret:
                return message(
                    ("Response", "Error"), action_id, ("Message", "Authentication failed")
                )
            return message(
                ("Response", "Success"), action_id, ("Message", "Authentication accepted")
            ) + message(
                ("Event", "FullyBooted"),
                ("Privilege", "system,all"),
                ("Uptime", "42"),
                ("LastReload", "42"),
                ("Status", "Fully Booted"),
            )
        if action == "Ping":
            return message(("Response", "Success"), action_id, ("Ping", "Pong"))
        if action == "QueueStatus":
            return message(
                ("Response", "Success"),
                action_id,
                ("EventList", "start"),
                ("Message", "Queue status will follow"),
            ) + message(
                ("Event", "QueueStatusComplete"),
                action_id,
                ("EventList", "Complete"),
                ("ListItems", "0"),
            )
        return message(
            ("Response", "Error"), action_id, ("Message", f"Invalid/unknown command: {action}.")
        )
