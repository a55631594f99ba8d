"""What the tests of `mussikon worker` run as a process share: an SMTP server that holds
a message at DATA (a handler in flight for as long as a test wants), reading the worker's
lines, and stopping it with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP


@dataclass
class SlowMailServer:
    """An SMTP server on loopback that holds every message at DATA until `release` is set."""

    port: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    refuse: bool = False
    attempts: int = 0
    received: list[EmailMessage] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?timeout=30"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        if self.refuse:
            return "554 Transaction failed: mailbox unavailable"
        self.held.set()
        await self.release.wait()
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        return "250 Message accepted for delivery"


@contextlib.asynccontextmanager
async def slow_mail_server() -> AsyncIterator[SlowMailServer]:
    """A `SlowMailServer` serving on a free port, released and closed on the way out."""
    box = SlowMailServer()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="localhost"), "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        box.release.set()
        server.close()
        await server.wait_closed()


async def read_line_with(stream: asyncio.StreamReader | None, text: str,
                         timeout: float = 30) -> list[str]:
    """Lines read from `stream` up to and including the first that contains `text`."""
    assert stream is not None
    lines: list[str] = []

    async def until() -> None:
        while line := (await stream.readline()).decode():
            lines.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} never came; got {lines}")

    await asyncio.wait_for(until(), timeout)
    return lines


async def terminate(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then the process's stderr once it has exited (which must be cleanly)."""
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return err.decode()
