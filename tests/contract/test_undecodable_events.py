"""A stored row no code can read, met by every reader of the global order over every store:
the projections and the in-process transport's subscriptions each skip it the same way,
recorded with the reason under the reader's checkpoint, and go on with the events after it
(the outbox relay: tests/integration/test_rabbitmq_delivery.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.adapters.messaging.memory import checkpoint_name as subscription_checkpoint
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.application.projections.runner import checkpoint_name as projection_checkpoint
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.followers.undecodable import UNDECODABLE_EVENTS
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import UndecodableEventError
from mussikon.ports.transport import Envelope, Subscription
from tests.contract.store_adapters import ADAPTERS, StoresUnderTest, open_stores
from tests.contract.test_projections import CountMusicians, count


@pytest.fixture(params=ADAPTERS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoresUnderTest]:
    async with open_stores(request.param, tmp_path, request) as opened:
        yield opened


def musician(n: int) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=f"m{n}", email="a@b.io", name="A",
                                   genres=("Jazz",), location="Santiago")


def failing_upcaster(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "Genres": body["Instruments"]}


async def good_bad_good(stores: StoresUnderTest) -> tuple[list[str], int]:
    """A musician, a row whose upcaster raises KeyError, another musician: their ids and the
    bad row's position."""
    stores.codec.register_upcaster("MusicianRegisteredEvent", 0, failing_upcaster)
    first, last = musician(1), musician(2)
    await stores.events.append(first.stream_id, [first], 0)
    await stores.insert_raw("musician-old", 1, "MusicianRegisteredEvent",
                            '{"MusicianId": "old", "Version": 0}')
    await stores.events.append(last.stream_id, [last], 0)
    await stores.settle()
    [stored_first] = await stores.events.read_all(1)
    with pytest.raises(UndecodableEventError) as raised:
        await stores.events.read_all(stored_first.position + 1)
    return [str(first.id), str(last.id)], raised.value.position


async def assert_skipped(documents: DocumentStore, reader: str, position: int) -> None:
    [(key, skipped)] = await documents.scan(UNDECODABLE_EVENTS)
    assert key == f"{reader}:{position}"
    assert (skipped["reader"], skipped["position"], skipped["stream_id"],
            skipped["version"]) == (reader, position, "musician-old", 1)
    assert "KeyError: 'Instruments'" in skipped["reason"]
    assert datetime.fromisoformat(skipped["skipped_at"]).tzinfo is not None


def assert_logged(caplog: pytest.LogCaptureFixture, reader: str, position: int) -> None:
    assert any(r.levelno == logging.ERROR and reader in r.getMessage()
               and f"position {position}" in r.getMessage() for r in caplog.records)


async def test_a_projection_skips_the_row_records_why_and_applies_what_follows(
        stores: StoresUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    _, bad = await good_bad_good(stores)
    runner = ProjectionRunner(stores.events, stores.documents, [CountMusicians()])

    head = await runner.catch_up("count")

    assert head == await stores.events.head_position()
    assert await count(stores) == 2
    assert await stores.documents.checkpoint(projection_checkpoint("count")) == head
    await assert_skipped(stores.documents, projection_checkpoint("count"), bad)
    assert_logged(caplog, projection_checkpoint("count"), bad)
    await runner.stop()


async def test_a_subscription_skips_the_row_records_why_and_handles_what_follows(
        stores: StoresUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    ids, bad = await good_bad_good(stores)
    handled: list[str] = []

    async def handle(envelope: Envelope) -> None:
        handled.append(envelope.message_id)

    transport = InProcessTransport(stores.events, stores.documents, stores.codec,
                                   poll_interval=0.01, poll_max_interval=0.05)
    await transport.start([Subscription("welcome", frozenset({"MusicianRegisteredEvent"}),
                                        handle)])
    try:
        await transport.wait_idle(10)
    finally:
        await transport.stop()

    assert handled == ids
    assert await transport.dead_letters() == []  # a row with no event is not a message
    assert await stores.documents.checkpoint(subscription_checkpoint("welcome")) == \
        await stores.events.head_position()
    await assert_skipped(stores.documents, subscription_checkpoint("welcome"), bad)
    assert_logged(caplog, subscription_checkpoint("welcome"), bad)
