"""The store workloads, written against the `EventStore` port so every backend runs the same ones.

Each timed function returns `(events, seconds)`. What is timed is what an application
does, as `../shared/anchors/` measures it and issue 2's targets assume:

- appends (new streams, batches): make the events (the command on the aggregate), then
  store them: encode, write, commit;
- get-and-append: read the stream, rebuild the aggregate, run the command, append its
  event with the expected version;
- loads: read the stream and rebuild the aggregate from it.

Streams to extend or to read are written before the clock starts.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from mussikon.domain.contract import MUSICIAN, ORGANIZER, Contract
from mussikon.domain.events import (
    ContractDraftedEvent,
    ContractPartySignedEvent,
    ContractPaymentFailedEvent,
    ContractSignedEvent,
    DomainEvent,
)
from mussikon.domain.gig import Gig
from mussikon.domain.musician import Musician
from mussikon.store import NO_STREAM, EventStore

APPEND_NEW_STREAM = "append-new-stream"
APPEND_EXISTING_STREAM = "append-existing-stream"
APPEND_BATCH_100 = "append-batch-100"
READ_STREAM_1000 = "read-stream-1000"
WORKLOADS = (APPEND_NEW_STREAM, APPEND_EXISTING_STREAM, APPEND_BATCH_100, READ_STREAM_1000)
UNIT = "events/s"
BATCH = 100
LONG_STREAM = 1000


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each workload does in one round, from one knob: `events`."""

    events: int = 1000

    @property
    def single(self) -> int:
        """Single-event appends (new streams, and get-and-append)."""
        return self.events

    @property
    def batches(self) -> int:
        """Appends of 100 events: 5 × `events` events in all, at least 10 appends."""
        return max(10, self.events * 5 // BATCH)

    @property
    def loads(self) -> int:
        """Loads of the 1,000-event stream: `events`/25 (40 by default), at least 5."""
        return max(5, self.events // 25)


Timing = tuple[int, float]


def timed_sync(fn: Callable[[], int]) -> Timing:
    """Run `fn` (which returns how many events it handled) on a clean heap; time it."""
    gc.collect()
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start


async def timed(fn: Callable[[], Awaitable[int]]) -> Timing:
    """`timed_sync` for a coroutine function."""
    gc.collect()
    start = time.perf_counter()
    n = await fn()
    return n, time.perf_counter() - start


# --- the events the workloads write -------------------------------------------------------


def new_id() -> str:
    """A fresh aggregate id."""
    return str(uuid.uuid4())


def register_musician(musician_id: str) -> Musician:
    """A musician with its registration pending."""
    musician = Musician(musician_id)
    musician.register(email="ana@example.com", name="Ana Peña", genres=("jazz", "salsa"),
                      location="Santo Domingo")
    return musician


GIG_DATE = datetime(2031, 6, 20, 21, 30, tzinfo=UTC)


def create_gig(gig_id: str) -> Gig:
    """A gig with its creation pending."""
    gig = Gig(gig_id)
    gig.create(organizer_id="org-1", title="Jazz night", event_date=GIG_DATE,
               location="Santo Domingo", genre="jazz", budget=Decimal("1500.00"),
               now=GIG_DATE - timedelta(days=30))
    return gig


def contract_history(contract_id: str, count: int, start: int = 1) -> list[DomainEvent]:
    """Events `start`…`start+count-1` of a contract whose payments keep failing.

    Drafted, signed by both parties, signed; then one failed payment after another: a
    legal history of any length, which `Contract.rebuild` replays.
    """
    head: list[DomainEvent] = [
        ContractDraftedEvent(contract_id=contract_id, application_id="app-1", musician_id="mus-1",
                             organizer_id="org-1", event_id="gig-1", amount=Decimal("1200.50"),
                             event_date=GIG_DATE),
        ContractPartySignedEvent(contract_id=contract_id, party_id="mus-1", role=MUSICIAN),
        ContractPartySignedEvent(contract_id=contract_id, party_id="org-1", role=ORGANIZER),
        ContractSignedEvent(contract_id=contract_id, musician_id="mus-1", event_id="gig-1",
                            amount=Decimal("1200.50"), event_date=GIG_DATE),
    ]
    events: list[DomainEvent] = []
    for version in range(start, start + count):
        if version <= len(head):
            events.append(head[version - 1])
        else:
            events.append(ContractPaymentFailedEvent(contract_id=contract_id,
                                                     payment_id=f"pay-{version}",
                                                     reason="card declined"))
    return events


# --- ours, on any EventStore --------------------------------------------------------------


async def append_new_streams(store: EventStore, n: int) -> Timing:
    """Register n musicians: one append of one event to a new stream each."""
    async def run() -> int:
        for _ in range(n):
            musician = register_musician(new_id())
            await store.append(musician.stream_id, musician.pending, NO_STREAM)
            musician.mark_saved()
        return n
    return await timed(run)


async def prepare_gigs(store: EventStore, n: int) -> list[str]:
    """n gig streams of one event each, for get-and-append (not timed)."""
    ids = [new_id() for _ in range(n)]
    for gig_id in ids:
        gig = create_gig(gig_id)
        await store.append(gig.stream_id, gig.pending, NO_STREAM)
    return ids


async def get_and_append(store: EventStore, gig_ids: list[str]) -> Timing:
    """For each gig: read its stream, rebuild it, close it, append with the expected version."""
    async def run() -> int:
        for gig_id in gig_ids:
            stream = Gig.stream_id_for(gig_id)
            gig = Gig.rebuild(gig_id, [r.event for r in await store.read_stream(stream)])
            gig.close("booked")
            await store.append(stream, gig.pending, gig.version)
            gig.mark_saved()
        return len(gig_ids)
    return await timed(run)


async def append_batches(store: EventStore, batches: int) -> Timing:
    """Appends of 100 new events each, to a new contract stream each."""
    async def run() -> int:
        for _ in range(batches):
            contract_id = new_id()
            await store.append(Contract.stream_id_for(contract_id),
                               contract_history(contract_id, BATCH), NO_STREAM)
        return batches * BATCH
    return await timed(run)



async def prepare_long_stream(store: EventStore) -> str:
    """A contract stream of 1,000 events, written 100 at a time (not timed); its id."""
    contract_id = new_id()
    stream = Contract.stream_id_for(contract_id)
    for start in range(1, LONG_STREAM + 1, BATCH):
        await store.append(stream, contract_history(contract_id, BATCH, start), start - 1)
    return contract_id


async def load_long_stream(store: EventStore, contract_id: str, loads: int) -> Timing:
    """Read the 1,000-event stream and rebuild the contract from it, `loads` times."""
    stream = Contract.stream_id_for(contract_id)

    async def run() -> int:
        for _ in range(loads):
            contract = Contract.rebuild(contract_id, [r.event for r in
                                                      await store.read_stream(stream)])
            if contract.version != LONG_STREAM:
                raise AssertionError(f"loaded {contract.version} events, not {LONG_STREAM}")
        return loads * LONG_STREAM
    return await timed(run)

