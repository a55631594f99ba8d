"""What the tests of `mussikon worker` run as a process share: an SMTP server that holds
a message at DATA (a handler in flight for as long as a test wants), and stopping the worker
with SIGTERM, with such a handler in flight or not."""

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

import pytest
from aiosmtpd.smtp import SMTP

from tests.command_line import line_with


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


async def stop_with_a_handler_in_flight(worker: asyncio.subprocess.Process,
                                        mail_server: SlowMailServer) -> tuple[str, str, str]:
    """SIGTERM to `mussikon worker` once it holds an email at DATA: it must stop taking
    messages and wait for that handler (still running a second later), then exit once the
    email goes through. Its "stopping" line, then the rest of its stdout and its stderr."""
    await line_with(worker.stdout, "worker running")
    await asyncio.wait_for(mail_server.held.wait(), 30)
    worker.send_signal(signal.SIGTERM)
    stopping = await line_with(worker.stdout, "stopping")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(worker.wait()), 1.0)
    mail_server.release.set()
    out, err = await asyncio.wait_for(worker.communicate(), 30)
    return stopping, out.decode(), err.decode()


async def terminate(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then the process's stderr once it has exited (which must be cleanly)."""
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return err.decode()
