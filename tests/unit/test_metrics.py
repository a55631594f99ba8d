"""The figures operators watch: counted where the transports run handlers, lags sampled from
the store's positions, and the charts' rates worked out from the samples."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from mussikon import metrics
from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.application.marketplace import Marketplace
from mussikon.application.repository import Repository
from mussikon.application.sagas.state import RecordKind, SagaRecord, SagaState, SagaStatus
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.entrypoints.http.dashboard.samples import Ring, Sample, Sampler
from mussikon.ports.documents import Changes
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec


def musician(n: int) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=f"m{n}", email=f"m{n}@example.com", name="Ana",
                                   genres=("jazz",), location="Santo Domingo")


def value(counter: str, subscription: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        f"{counter}_total", {"subscription": subscription, "broker": "memory", **labels}) or 0.0


async def test_handled_failed_and_dead_lettered_are_counted_per_subscription() -> None:
    store, documents = InMemoryEventStore(), InMemoryDocumentStore()
    transport = InProcessTransport(store, documents, EventCodec(), retry_delays=(0.0,),
                                   poll_interval=0.01)
    name = f"welcome-{uuid.uuid4().hex[:6]}"
    calls: dict[str, int] = {}

    async def handler(envelope: Envelope) -> None:
        calls[envelope.message_id] = calls.get(envelope.message_id, 0) + 1
        event = envelope.event
        assert isinstance(event, MusicianRegisteredEvent)
        if event.musician_id == "m1" or calls[envelope.message_id] == 1:
            raise ValueError("the mail server is down")

    for n in (1, 2):
        event = musician(n)
        await store.append(event.stream_id, [event], 0)
    await transport.start([Subscription(name, frozenset({"MusicianRegisteredEvent"}), handler)])
    await transport.wait_idle(5)
    await transport.stop()

    # m1 fails twice and is dead-lettered; m2 fails once, then is handled.
    assert value("mussikon_messages_handled", name) == 1
    assert value("mussikon_handler_failures", name) == 3
    assert value("mussikon_messages_retried", name, kind="in_process") == 2
    assert value("mussikon_messages_dead_lettered", name) == 1
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    [dead] = [s for s in families["mussikon_messages_dead_lettered"].samples
              if s.labels.get("subscription") == name]
    assert (dead.name, dead.labels, dead.value) == (
        "mussikon_messages_dead_lettered_total", {"subscription": name, "broker": "memory"}, 1)
    durations = {s.labels["le"]: s.value
                 for s in families["mussikon_handler_duration_seconds"].samples
                 if s.name.endswith("_bucket") and s.labels["subscription"] == name}
    assert durations["+Inf"] == 4  # every attempt, failed or not


async def test_a_sample_reads_each_readers_lag_from_its_checkpoint() -> None:
    app = await open_app(Settings(store_url="memory://", broker_url="memory://"))
    try:
        for n in range(3):
            event = musician(n)
            await app.store.append(event.stream_id, [event], 0)
        await app.documents.commit(Changes(), checkpoint=("projection:directory", 1))
        await app.documents.commit(Changes(), checkpoint=("subscription:welcome", 3))
        sample = await Sampler().sample(app)
    finally:
        await app.close()
    assert sample.head == 3
    assert sample.lags == {"projection": 2, "relay": 0, "subscription": 0}
    assert metrics.REGISTRY.get_sample_value(
        "mussikon_reader_lag_events",
        {"reader": "projection:directory", "kind": "projection"}) == 2


async def test_the_outbox_age_is_that_of_the_first_event_the_relay_has_not_passed() -> None:
    app = await open_app(Settings(store_url="memory://", broker_url="memory://"))
    try:
        for n in range(3):
            event = musician(n)
            await app.store.append(event.stream_id, [event], 0)
        [second] = await app.store.read_all(2, limit=1)
        await app.documents.commit(Changes(), checkpoint=("relay:outbox-age", 1))
        await app.documents.commit(Changes(), checkpoint=("relay:up-to-date", 3))
        await Sampler().sample(app)
        seconds = (datetime.now(UTC) - second.recorded_at).total_seconds()
    finally:
        await app.close()
    age = metrics.REGISTRY.get_sample_value("mussikon_outbox_age_seconds",
                                            {"relay": "relay:outbox-age"})
    assert age is not None and 0 < age <= seconds
    assert metrics.REGISTRY.get_sample_value("mussikon_outbox_age_seconds",
                                             {"relay": "relay:up-to-date"}) == 0


def test_the_charts_get_rates_per_second_between_samples() -> None:
    ring = Ring(every=2.0, size=3)
    for at, handled in ((0.0, 0.0), (2.0, 10.0), (4.0, 30.0), (6.0, 31.0)):
        ring.samples.append(Sample(at, handled, 0.0, 0.0, 0, {"projection": int(at)}))
    points = ring.series()["points"]
    # The oldest sample fell out of the ring (three kept): two intervals remain.
    assert [(p["t"], p["handled"], p["projection_lag"]) for p in points] == [
        (4.0, 10.0, 4), (6.0, 0.5, 6)]


async def test_each_append_of_the_repository_is_timed() -> None:
    def appends() -> float:
        return metrics.REGISTRY.get_sample_value(
            "mussikon_store_append_duration_seconds_count") or 0.0

    before = appends()
    market = Marketplace(Repository(InMemoryEventStore()))
    await market.register_organizer(email="o@x.io", name="O", payment_source="tok_visa")
    assert appends() == before + 1


async def test_the_saga_instances_are_counted_by_kind_and_status() -> None:
    app = await open_app(Settings(store_url="memory://", broker_url="memory://"))
    try:
        assert app.sagas is not None
        kind = sorted(app.sagas.engines)[0]
        at = datetime(2030, 1, 1, tzinfo=UTC)
        for n, finish in enumerate((False, False, True)):
            state = SagaState(kind, f"i{n}", ["only"])
            after = state.copy()
            records = [SagaRecord(RecordKind.STARTED)]
            records += [SagaRecord(RecordKind.COMPLETED)] if finish else []
            for record in records:
                after.apply(record, "", at)
            assert await app.sagas.journal.commit(state, after, records, f"m{n}", at)
        await Sampler().count_sagas(app)
    finally:
        await app.close()
    families = text_string_to_metric_families(metrics.exposition().decode())
    counted = {s.labels["status"]: s.value for family in families for s in family.samples
               if s.name == "mussikon_saga_instances" and s.labels["kind"] == kind}
    assert counted == {status.value: 0.0 for status in SagaStatus} | {
        SagaStatus.RUNNING.value: 2.0, SagaStatus.COMPLETED.value: 1.0}
