"""`mussikon worker` on Service Bus, run as an operator runs it, against the local peer whose
entities `mussikon broker provision` made: SIGTERM while a handler is in flight (a welcome
email held at DATA) lets it finish and complete its message, and the worker exits cleanly;
the next worker handles the next message and not that one again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from tests.command_line import environment, mussikon, worker_until
from tests.integration.servicebus_kit import peeked
from tests.integration.worker_kit import (
    SlowMailServer,
    slow_mail_server,
    stop_with_a_handler_in_flight,
)
from tests.servicebus_peer import ServiceBusPeer

pytestmark = pytest.mark.servicebus

TOPIC = "mussikon-events"


@pytest.fixture
async def mail_server() -> AsyncIterator[SlowMailServer]:
    async with slow_mail_server() as box:
        yield box


async def register_musician(store: Path, name: str, email_address: str) -> None:
    """Register a musician in the store, as the API would (the worker's relay publishes it)."""
    app = await open_app(Settings(store_url=f"sqlite:///{store}", broker_url="memory://"))
    try:
        await app.marketplace.register_musician(email=email_address, name=name,
                                                genres=["jazz"], location="Santo Domingo")
    finally:
        await app.close()


async def test_sigterm_lets_the_worker_finish_the_email_in_flight_then_exit_cleanly(
        servicebus_peer: ServiceBusPeer, mail_server: SlowMailServer, tmp_path: Path) -> None:
    store = tmp_path / "mussikon.db"
    env = environment(store_url=f"sqlite:///{store}",
                      broker_url=servicebus_peer.connection_string, smtp_url=mail_server.url,
                      bus_retry_delays="0.01", poll_interval="0.02", poll_max_interval="0.2")
    provisioned = await asyncio.to_thread(mussikon, "broker", "provision", cwd=tmp_path,
                                          env=env)
    assert provisioned.returncode == 0, provisioned.stderr

    await register_musician(store, "Ana Díaz", "ana@example.com")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mussikon", "worker", cwd=tmp_path, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stopping, out, err = await stop_with_a_handler_in_flight(worker, mail_server)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert worker.returncode == 0, err
    assert "stopping: finishing messages in flight" in stopping
    assert "Traceback" not in out + err
    assert [m["To"] for m in mail_server.received] == ["Ana Díaz <ana@example.com>"]
    assert mail_server.attempts == 1
    # Completed: nothing waits in the welcome subscription, and the store has the email.
    assert await peeked(servicebus_peer.connection_string, TOPIC,
                        "musicians.on-registered") == []
    db = await SqliteDatabase(str(store)).open()
    try:
        sent = await SqliteDocumentStore(db).scan("notifications")
    finally:
        await db.close()
    assert [doc["recipient"] for _, doc in sent] == ["ana@example.com"]

    # A second worker sends the next welcome and not Ana's again.
    await register_musician(store, "Luis Pérez", "luis@example.com")

    async def two_sent() -> bool:
        return len(mail_server.received) == 2

    await worker_until(two_sent, cwd=tmp_path, env=env)
    assert [m["To"] for m in mail_server.received] == ["Ana Díaz <ana@example.com>",
                                                       "Luis Pérez <luis@example.com>"]
    assert mail_server.attempts == 2
