"""`mussikon worker` killed with SIGKILL again and again while another service (pika playing
the .NET Musicians service) publishes a thousand registrations, on SQLite and on PostgreSQL:
each musician gets one welcome email and counts once in analytics, each event is recorded
once, nothing is dead-lettered and nothing is published back to the events exchange.

Each kill leaves messages unacknowledged, which the broker delivers again to the next
worker, some of them handled halfway (recorded, not yet welcomed, counted or marked in the
inbox), and leases on the read models and the relay that the next worker takes over once
they expire (MUSSIKON_LEASE_SECONDS). The emails are the recording notifier's (no SMTP
server): its record of a notification is the email.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mussikon.application.projections.analytics import USER_REGISTERED
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from tests.command_line import Workers, environment, mussikon
from tests.integration.rabbitmq_kit import BrokerNamespace, dotnet_publish_all
from tests.polling import eventually

pytestmark = pytest.mark.rabbitmq

MUSICIANS = 1_000
KILL_AFTER = (150, 400, 700)
"""Events recorded in the store at which the running worker is killed."""

REGISTERED = json.loads(
    (Path(__file__).parent.parent / "golden" / "MusicianRegisteredEvent.json").read_bytes())


@dataclass(frozen=True)
class Registration:
    """One musician's registration as the .NET service publishes it."""

    event_id: str
    musician_id: str
    email: str

    def body(self) -> bytes:
        return json.dumps({**REGISTERED, "Id": self.event_id, "MusicianId": self.musician_id,
                           "Email": self.email}).encode()


def registrations(count: int) -> list[Registration]:
    return [Registration(str(uuid.uuid4()), str(uuid.uuid4()), f"musician{n}@example.org")
            for n in range(count)]


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    """The test's slice of the broker, its topology declared as the workers declare it."""
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    tools = namespace.transport(relay=False)  # the workers' topology: quorum, FAST's retries
    await tools.topology.declare(await namespace.channel())
    yield namespace
    await namespace.cleanup()


@pytest.fixture
async def spy(broker: BrokerNamespace) -> AsyncIterator[str]:
    """A queue bound with `#` to the events exchange: it gets every message published there."""
    name, exchange = f"{broker.prefix}spy", broker.transports[0].topology.events_exchange
    channel = await broker.channel()
    await channel.queue_declare(name, durable=False)
    await channel.queue_bind(name, exchange, routing_key="#")
    yield name
    await channel.queue_delete(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, unique_name: str,
                tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The store settings (`MUSSIKON_*` names, lower case): a SQLite file, or PostgreSQL in a
    schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        yield {"store_url": f"sqlite:///{tmp_path / 'mussikon.db'}"}
        return
    url = request.getfixturevalue("postgres_url")
    yield {"store_url": url, "postgres_schema": unique_name}
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
    finally:
        await admin.close()


async def queued(broker: BrokerNamespace, queue: str) -> int:
    """Messages ready in the queue."""
    channel = await broker.channel()
    try:
        return (await channel.queue_declare(queue, passive=True)).message_count or 0
    finally:
        await channel.close()


async def reading(settings: dict[str, str]) -> App:
    """The application on the workers' store, to look into it while they run."""
    return await open_app(Settings.model_validate({**settings, "postgres_pool_size": 2}),
                          read_only=True)


async def registered(app: App) -> int:
    return (await app.analytics.summary()).by_kind[USER_REGISTERED]


async def test_a_thousand_registrations_survive_a_worker_killed_three_times(
        broker: BrokerNamespace, spy: str, store: dict[str, str], tmp_path: Path) -> None:
    topology = broker.transports[0].topology
    # A short lease: the next worker takes over the read models and the relay from the one
    # killed soon after it started. More handlers at once: more of them cut off by each kill.
    settings = {**store, "broker_url": broker.url, "rabbitmq_prefix": broker.prefix,
                "rabbitmq_retry_delays": "0.2,0.4", "poll_interval": "0.02",
                "poll_max_interval": "0.2", "lease_seconds": "1.5", "bus_concurrency": "32"}
    workers = Workers(tmp_path, environment(**settings))

    musicians = registrations(MUSICIANS)
    publishing = asyncio.create_task(asyncio.to_thread(
        dotnet_publish_all, broker.url, topology.events_exchange, "musician.registered",
        [m.body() for m in musicians], "MusicianRegisteredEvent"))
    app: App | None = None
    try:
        await workers.start()
        app = await reading(settings)
        for threshold in KILL_AFTER:
            async def recorded(at_least: int = threshold) -> bool:
                assert app is not None
                return await app.store.count_after(0) >= at_least

            await eventually(recorded, 60, what=f"{threshold} events recorded", interval=0.05)
            await workers.kill()
            assert await registered(app) < MUSICIANS  # killed in the midst of the work
            await workers.start()
        assert len(set(await publishing)) == MUSICIANS

        async def all_handled() -> bool:
            assert app is not None
            relayed = await app.documents.checkpoint(broker.transports[0].relay_name)
            return (len(await app.notifier.sent(MUSICIANS + 1)) >= MUSICIANS
                    and await registered(app) >= MUSICIANS
                    and relayed >= await app.store.head_position())

        await eventually(all_handled, 60, interval=0.25)
        await workers.terminate()
    finally:
        if not publishing.done():
            publishing.cancel()
        await workers.close()
        if app is not None:
            await app.close()

    app = await reading(settings)
    try:
        stored = await app.store.read_all(1, 2 * MUSICIANS)
        assert await registered(app) == MUSICIANS
    finally:
        await app.close()
    assert sorted((str(r.event.id), r.origin) for r in stored) == sorted(
        (m.event_id, "rabbitmq") for m in musicians)

    listed = await asyncio.to_thread(mussikon, "notifications", "list", "--limit",
                                     str(2 * MUSICIANS), "--json", cwd=tmp_path,
                                     env=workers.env)
    assert listed.returncode == 0, listed.stderr
    sent: list[dict[str, Any]] = json.loads(listed.stdout)
    assert sorted((n["kind"], n["recipient"]) for n in sent) == sorted(
        ("welcome", m.email) for m in musicians)

    for queue in [*topology.event_queues(), *(s.queue for s in topology.retry_stages)]:
        assert await queued(broker, queue) == 0, queue  # every message acknowledged
    assert await queued(broker, topology.dead_letter_queue) == 0, workers.output()
    assert await queued(broker, spy) == MUSICIANS  # the .NET service's, none of ours
    assert "Traceback" not in workers.output()
