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

from tests.command_line import (
    SilentServer,
    environment,
    line_with,
    prints,
    store_with_one_registration,
    worker_until,
)
from tests.integration.rabbitmq_kit import BrokerNamespace
from tests.polling import eventually

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    namespace.transport(relay=False)  # names the topology the workers declare, for cleanup
    yield namespace
    await namespace.cleanup()



async def test_a_second_sigint_stops_at_once_and_the_broker_delivers_the_message_again(
        broker: BrokerNamespace, tmp_path: Path) -> None:
    url = await store_with_one_registration(tmp_path)
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
            await line_with(worker.stdout, "worker running")
            await eventually(smtp.accepted, 30)  # the welcome email is in flight
            worker.send_signal(signal.SIGINT)
            await line_with(worker.stdout, "stopping")
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
