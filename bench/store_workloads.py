"""The store workloads, written against the `EventStore` port so every backend runs the same ones.

Each timed function returns `(events, seconds)`. What is timed is the store's work, and
every contender gets the same things to store:

- appends (new streams, batches, concurrent writers): the domain events are made before
  the clock starts (as the peers' aggregates and the raw driver's rows are); what is timed
  is `append` / `append_streams`: encode, write, commit;
- get-and-append stays read-modify-write: read the stream, rebuild the aggregate, run the
  command, append its event with the expected version;
- loads: read the stream and rebuild the aggregate from it; reads of the global order:
  `read_all` page after page.

Streams to extend or to read are written before the clock starts.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
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
from mussikon.ports.event_store import NO_STREAM, EventStore

APPEND_NEW_STREAM = "append-new-stream"
APPEND_EXISTING_STREAM = "append-existing-stream"
APPEND_BATCH_100 = "append-batch-100"
READ_STREAM_1000 = "read-stream-1000"
WORKLOADS = (APPEND_NEW_STREAM, APPEND_EXISTING_STREAM, APPEND_BATCH_100, READ_STREAM_1000)
UNIT = "events/s"
BATCH = 100
LONG_STREAM = 1000
PAGE = 1000
"""Events a reader of the global order asks for at a time."""
LAG_POLL_INTERVAL = 0.001
"""Seconds the subscriber of the lag workload sleeps when it finds nothing new."""


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


def shares(total: int, parts: int) -> list[int]:
    """`total` cut into `parts` nearly equal whole shares (the first ones one larger)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def timed_sync(fn: Callable[[], int]) -> Timing:
    """Run `fn` (which returns how many events it handled) and time it, on a clean heap whose
    older objects the collector leaves alone (`gc.freeze`): a full collection then costs
    what the timed code allocated, not what the benchmark process holds."""
    gc.collect()
    gc.freeze()
    try:
        start = time.perf_counter()
        n = fn()
        return n, time.perf_counter() - start
    finally:
        gc.unfreeze()


async def timed(fn: Callable[[], Awaitable[int]]) -> Timing:
    """`timed_sync` for a coroutine function."""
    gc.collect()
    gc.freeze()
    try:
        start = time.perf_counter()
        n = await fn()
        return n, time.perf_counter() - start
    finally:
        gc.unfreeze()


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
                             organizer_id="org-1", gig_id="gig-1", amount=Decimal("1200.50"),
                             event_date=GIG_DATE),
        ContractPartySignedEvent(contract_id=contract_id, party_id="mus-1", role=MUSICIAN),
        ContractPartySignedEvent(contract_id=contract_id, party_id="org-1", role=ORGANIZER),
        ContractSignedEvent(contract_id=contract_id, musician_id="mus-1", gig_id="gig-1",
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


def registrations(n: int) -> list[tuple[str, list[DomainEvent]]]:
    """n musicians' registrations, made before the clock starts: (stream, [event]) each."""
    return [(m.stream_id, m.pending) for m in (register_musician(new_id()) for _ in range(n))]


async def append_new_streams(store: EventStore, n: int) -> Timing:
    """n registrations (made beforehand), one append of one event to a new stream each."""
    made = registrations(n)

    async def run() -> int:
        for stream_id, events in made:
            await store.append(stream_id, events, NO_STREAM)
        return n
    return await timed(run)


async def append_new_streams_concurrently(store: EventStore, n: int, writers: int) -> Timing:
    """n registrations (made beforehand) appended by `writers` tasks at once, each appending
    its share one after the other."""
    made = [registrations(k) for k in shares(n, writers)]

    async def writer(part: list[tuple[str, list[DomainEvent]]]) -> None:
        for stream_id, events in part:
            await store.append(stream_id, events, NO_STREAM)

    async def run() -> int:
        await asyncio.gather(*(writer(part) for part in made))
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
    """`append_streams` calls of 100 registrations each (made beforehand): 100 new streams of
    one event, all or nothing, per call."""
    made = [[(stream_id, events, NO_STREAM) for stream_id, events in registrations(BATCH)]
            for _ in range(batches)]

    async def run() -> int:
        for batch in made:
            await store.append_streams(batch)
        return batches * BATCH
    return await timed(run)



async def prepare_long_stream(store: EventStore, length: int = LONG_STREAM) -> str:
    """A contract stream of `length` events, written 100 at a time (not timed); its id."""
    contract_id = new_id()
    stream = Contract.stream_id_for(contract_id)
    for start in range(1, length + 1, BATCH):
        count = min(BATCH, length - start + 1)
        await store.append(stream, contract_history(contract_id, count, start), start - 1)
    return contract_id


async def load_long_stream(store: EventStore, contract_id: str, loads: int,
                           length: int = LONG_STREAM) -> Timing:
    """Read the `length`-event stream and rebuild the contract from it, `loads` times."""
    stream = Contract.stream_id_for(contract_id)

    async def run() -> int:
        for _ in range(loads):
            contract = Contract.rebuild(contract_id, [r.event for r in
                                                      await store.read_stream(stream)])
            if contract.version != length:
                raise AssertionError(f"loaded {contract.version} events, not {length}")
        return loads * length
    return await timed(run)


async def prepare_global_order(store: EventStore, streams: int, per_stream: int) -> int:
    """`streams` contract streams of `per_stream` events each, one append per stream (not
    timed); the number of events written."""
    for _ in range(streams):
        contract_id = new_id()
        await store.append(Contract.stream_id_for(contract_id),
                           contract_history(contract_id, per_stream), NO_STREAM)
    return streams * per_stream


async def read_global_order(store: EventStore, total: int, reads: int,
                            page: int = PAGE) -> Timing:
    """Read the whole global order (`total` events) `reads` times, `page` events a call, as a
    catch-up subscriber does: each call starts after the last position it returned."""
    async def run() -> int:
        for _ in range(reads):
            position, seen = 1, 0
            while seen < total:
                batch = await store.read_all(position, page)
                if not batch:
                    raise AssertionError(f"the global order ended after {seen} of {total}")
                seen += len(batch)
                position = batch[-1].position + 1
        return reads * total
    return await timed(run)


async def subscriber_lag(store: EventStore, n: int, writers: int,
                         poll: float = LAG_POLL_INTERVAL, timeout: float = 120.0
                         ) -> list[float]:
    """How long after its append returned a catch-up reader sees each event, in ms.

    `writers` tasks register n musicians in all (one append each) while a reader polls
    `read_all` from the head it found at the start, `page` events at a time, sleeping
    `poll` seconds whenever it finds nothing new. An event the reader sees before its
    writer has resumed counts 0 ms.
    """
    returned: dict[uuid.UUID, float] = {}
    seen: dict[uuid.UUID, float] = {}
    start = await store.head_position() + 1
    made = [registrations(k) for k in shares(n, writers)]

    async def writer(part: list[tuple[str, list[DomainEvent]]]) -> None:
        for stream_id, events in part:
            await store.append(stream_id, events, NO_STREAM)
            returned[events[0].id] = time.perf_counter()

    async def reader() -> None:
        position = start
        while len(seen) < n:
            batch = await store.read_all(position, PAGE)
            now = time.perf_counter()
            if not batch:
                await asyncio.sleep(poll)
                continue
            for record in batch:
                seen.setdefault(record.event.id, now)
            position = batch[-1].position + 1

    await asyncio.wait_for(asyncio.gather(reader(), *(writer(part) for part in made)), timeout)
    return [max(0.0, seen[event_id] - at) * 1000 for event_id, at in returned.items()]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]

