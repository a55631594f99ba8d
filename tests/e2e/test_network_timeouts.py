"""Every network call has a timeout: an SMTP server or a broker that accepts the connection and
never answers fails the send or the connection after the configured seconds
(`MUSSIKON_SMTP_TIMEOUT`, `MUSSIKON_BROKER_CONNECT_TIMEOUT`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.command_line import (
    SilentServer,
    environment,
    mussikon,
    one_error_line,
    prints,
    store_with_one_registration,
    worker_until,
)
from tests.polling import eventually

from mussikon.adapters.notifications import SmtpNotifier
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.ports.notifier import Notification, NotificationError


async def test_an_smtp_server_that_never_answers_fails_the_send_after_the_timeout() -> None:
    notification = Notification(key="welcome:1:ana@example.com", kind="welcome",
                                recipient="ana@example.com", recipient_name="Ana Díaz",
                                subject="Welcome", body="Hello")
    async with SilentServer() as smtp:
        notifier = SmtpNotifier(f"smtp://127.0.0.1:{smtp.port}", "MussikOn <no-reply@m.example>",
                                InMemoryDocumentStore(), timeout=0.3)
        started = time.monotonic()
        with pytest.raises(NotificationError, match=r"no answer within 0\.3 s"):
            await notifier.send(notification)
        took = time.monotonic() - started
        await eventually(lambda: _closed(smtp), 5)
    assert 0.3 <= took < 3
    [held] = smtp.connections
    assert held.closed_at is not None and 0.25 <= held.closed_at - held.accepted_at < 3


async def _closed(server: SilentServer) -> bool:
    return all(c.closed_at is not None for c in server.connections)


async def test_the_worker_gives_up_on_a_silent_smtp_server_and_dead_letters_the_email(
        tmp_path: Path) -> None:
    url = await store_with_one_registration(tmp_path)

    async with SilentServer() as smtp:
        env = environment(store_url=url, smtp_url=f"smtp://127.0.0.1:{smtp.port}",
                          smtp_timeout="0.4", bus_retry_delays="0.01",
                          poll_interval="0.02", poll_max_interval="0.2")
        await worker_until(prints("1 dead letter(s)", "dlq", "list", cwd=tmp_path,
                                  env=environment(store_url=url)), cwd=tmp_path, env=env)
    # Two attempts (one in-process retry), each given up by the client after the timeout.
    assert len(smtp.connections) == 2
    for held in smtp.connections:
        assert held.closed_at is not None and 0.35 <= held.closed_at - held.accepted_at < 3
    app = await open_app(Settings(store_url=url, broker_url="memory://"), read_only=True)
    try:
        [letter] = await app.transport.dead_letters()
    finally:
        await app.close()
    assert letter.exception == "NotificationError"
    assert "no answer within 0.4 s" in letter.reason


async def test_a_broker_that_never_answers_fails_the_command_after_the_connect_timeout(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mussikon.db"
    made = mussikon("db", "migrate", cwd=tmp_path, env=environment(store_url=url))
    assert made.returncode == 0, made.stderr
    async with SilentServer() as broker:
        env = environment(store_url=url,
                          broker_url=f"amqp://guest:s3cret@127.0.0.1:{broker.port}/",
                          broker_connect_timeout="0.5")
        started = time.monotonic()
        result = await asyncio.to_thread(mussikon, "dlq", "list", cwd=tmp_path, env=env)
        took = time.monotonic() - started
        assert await broker.accepted()
    line = one_error_line(result)
    assert line == (f"error: MUSSIKON_BROKER_URL: RabbitMQ is not reachable at "
                    f"amqp://guest:***@127.0.0.1:{broker.port}/: no answer within 0.5 s")
    assert took < 15  # the interpreter's start included; aiormq alone would wait forever
