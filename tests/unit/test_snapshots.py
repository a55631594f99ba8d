"""Snapshots: loading starts from the newest one, so its cost stops growing with the stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.application.marketplace import Marketplace
from mussikon.application.repository import Repository
from mussikon.application.snapshots import SNAPSHOTS, Snapshots
from mussikon.domain.contract import Contract, ContractStatus
from mussikon.domain.events import EventClosedEvent
from mussikon.domain.gig import Gig, GigStatus
from mussikon.domain.instant import Instant
from mussikon.ports.documents import Changes
from mussikon.ports.event_store import RecordedEvent


class CountingStore(InMemoryEventStore):
    """Counts the events read from streams."""

    read = 0

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        records = await super().read_stream(stream_id, from_version)
        self.read += len(records)
        return records


async def test_loading_reads_only_the_events_after_the_newest_snapshot() -> None:
    store, documents = CountingStore(), InMemoryDocumentStore()
    repo = Repository(store, snapshots=Snapshots(documents, every=100))
    market = Marketplace(repo)
    organizer = await market.register_organizer(email="o@x.io", name="O",
                                                payment_source="tok_visa")
    gig_id = await market.create_gig(organizer_id=organizer, title="Long",
                                     event_date=datetime.now(UTC) + timedelta(days=5),
                                     location="Santiago", genre="Jazz", budget=Decimal("10.50"))
    gig = await repo.load(Gig, gig_id)
    # A long stream, written the way history piles up (the rules are not the point here).
    for version in range(1, 1000):
        closed = EventClosedEvent(gig_id=gig_id, reason=f"r{version}")
        await store.append(gig.stream_id, [closed], version)
    store.read = 0
    full = await repo.load(Gig, gig_id)
    assert store.read == 1000
    assert repo.snapshots is not None
    await repo.snapshots.save(full)
    store.read = 0
    from_snapshot = await repo.load(Gig, gig_id)
    assert store.read == 0
    assert from_snapshot.version == 1000
    assert vars(from_snapshot) == vars(full)
    await store.append(gig.stream_id, [EventClosedEvent(gig_id=gig_id, reason="late")], 1000)
    store.read = 0
    await repo.load(Gig, gig_id)
    assert store.read == 1


async def test_a_snapshot_is_taken_when_a_save_crosses_every_n_events() -> None:
    store, documents = InMemoryEventStore(), InMemoryDocumentStore()
    snapshots = Snapshots(documents, every=2)
    repo = Repository(store, snapshots=snapshots)
    market = Marketplace(repo)
    organizer = await market.register_organizer(email="o@x.io", name="O",
                                                payment_source="tok_visa")
    assert await documents.get(SNAPSHOTS, f"organizer-{organizer}") is None  # version 1
    gig_id = await market.create_gig(organizer_id=organizer, title="T",
                                     event_date=datetime.now(UTC) + timedelta(days=5),
                                     location="Santiago", genre="Jazz", budget=Decimal(5))
    await market.close_gig(gig_id, "booked")
    doc = await documents.get(SNAPSHOTS, f"gig-{gig_id}")
    assert doc is not None
    assert doc["version"] == 2
    gig = await repo.load(Gig, gig_id)
    assert gig.status is GigStatus.CLOSED
    assert gig.budget == Decimal(5)


async def test_every_kind_of_state_survives_a_snapshot() -> None:
    documents = InMemoryDocumentStore()
    snapshots = Snapshots(documents, every=1)
    contract = Contract("c1")
    contract.status = ContractStatus.SIGNED
    contract.amount = Decimal("1200.50")
    contract.event_date = Instant(2027, 1, 15, 23, 0, 0, 1, UTC, tick=7)
    contract.signed_by = {"m1", "o1"}
    contract.musician_id, contract.organizer_id = "m1", "o1"
    contract.version = 3
    await snapshots.save(contract)
    back = await snapshots.load(Contract, "c1")
    assert back is not None
    assert vars(back) == vars(contract)
    assert back.status is ContractStatus.SIGNED


async def test_a_snapshot_written_with_other_attributes_is_ignored() -> None:
    documents = InMemoryDocumentStore()
    snapshots = Snapshots(documents, every=1)
    gig = Gig("g1")
    gig.version = 4
    await snapshots.save(gig)
    doc = await documents.get(SNAPSHOTS, "gig-g1")
    assert doc is not None
    doc["state"]["renamed_attribute"] = doc["state"].pop("title")
    repo = Repository(InMemoryEventStore(), snapshots=snapshots)
    await documents.commit(Changes(puts={(SNAPSHOTS, "gig-g1"): doc}))
    assert await snapshots.load(Gig, "g1") is None
    assert (await repo.load(Gig, "g1")).version == 0
