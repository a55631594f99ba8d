"""`mussikon worker` on RabbitMQ stopped by a second signal while a handler hangs on an SMTP
server that never answers: it exits at once, and the broker delivers the message it had not
acknowledged to the next worker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mussikon.bootstrap import open_app
from mussikon.config import Settings
from tests.command_line import SilentServer, environment, prints, worker_until
from tests.integration.rabbitmq_kit import BrokerNamespace
from tests.polling import eventually

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    namespace.transport(relay=False)  # names the topology the workers declare, for cleanup
    yield namespace
    await namespace.cleanup()


async def _line_with(stream: asyncio.StreamReader | None, text: str) -> str:
    assert stream is not None
    while line := (await asyncio.wait_for(stream.readline(), 30)).decode():
        if text in line:
            return line
    raise AssertionError(f"{text!r} never came")


async def test_a_second_sigint_stops_at_once_and_the_broker_delivers_the_message_again(
        broker: BrokerNamespace, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mussikon.db"
    app = await open_app(Settings(store_url=url, broker_url="memory://"))
    try:  # stored, not published: the worker's relay publishes it
        await app.marketplace.register_musician(email="ana@example.com", name="Ana Díaz",
                                                genres=["jazz"], location="Santo Domingo")
    finally:
        await app.close()
    settings = {"store_url": url, "broker_url": broker.url, "rabbitmq_prefix": broker.prefix,
                "rabbitmq_retry_delays": "0.2,0.4", "bus_retry_delays": "0.01",
                "poll_interval": "0.02", "poll_max_interval": "0.2"}

    async with SilentServer() as smtp:
        env = environment(**settings, smtp_url=f"smtp://127.0.0.1:{smtp.port}",
                          smtp_timeout="60")
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mussikon", "worker", cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await _line_with(worker.stdout, "worker running")
            await eventually(smtp.accepted, 30)  # the welcome email is in flight
            worker.send_signal(signal.SIGINT)
            await _line_with(worker.stdout, "stopping")
            worker.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(worker.communicate(), 5)
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    assert worker.returncode == 130
    assert "Traceback" not in err.decode()

    # The next worker (mail recorded, not sent) gets the unacknowledged message.
    await worker_until(prints("ana@example.com", "notifications", "list", cwd=tmp_path,
                              env=environment(store_url=url)),
                       cwd=tmp_path, env=environment(**settings))
