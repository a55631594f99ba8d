"""The Cosmos DB feed against a fake of the change feed's pull model (with two feed ranges,
which the local test server does not have): the continuation protocol (a range read from
its beginning, then from the token of the page before), pages sorted by (stream, version),
a checkpoint per (reader, feed range) and a lease per range, the ranges pinned, and "caught
up" as "the change feed has nothing new"."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar, cast

import pytest

from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.adapters.store.cosmos.account import CosmosAccount, RequestMeter
from mussikon.adapters.store.cosmos.events import CosmosEventStore
from mussikon.adapters.store.cosmos.feed import FEED_CHECKPOINTS, CosmosFeed, range_name
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application.projections import Projection, View
from mussikon.application.projections.runner import ProjectionRunner, checkpoint_name
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent
from mussikon.followers.undecodable import UNDECODABLE_EVENTS
from mussikon.ports.feed import START
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec

RANGES = [{"Range": {"min": "", "max": "7F", "isMinInclusive": True, "isMaxInclusive": False}},
          {"Range": {"min": "7F", "max": "FF", "isMinInclusive": True, "isMaxInclusive": False}}]
"""Two feed ranges, as `read_feed_ranges` gives them."""


def token(feed_range: dict[str, Any], lsn: int) -> str:
    """A continuation token in the SDK's shape (version 2, as recorded from a read of the
    local server), pointing after `lsn` in `feed_range`."""
    state = {"v": "v2", "containerRid": "gAABAIAAAAE=", "mode": "LatestVersion",
             "startFrom": {"Type": "Beginning"},
             "continuation": {"v": "v2", "rid": "gAABAIAAAAE=",
                              "continuation": [{"token": str(lsn),
                                                "range": feed_range["Range"]}],
                              "Range": feed_range["Range"]}}
    return base64.b64encode(json.dumps(state).encode()).decode()


def read_token(text: str) -> tuple[dict[str, Any], int]:
    state = json.loads(base64.b64decode(text))["continuation"]
    return {"Range": state["Range"]}, int(state["continuation"][0]["token"])


class Pages:
    """What `query_items_change_feed(...).by_page()` gives: one page, then its token."""

    def __init__(self, items: list[dict[str, Any]], next_token: str) -> None:
        self.items, self.next_token = items, next_token
        self.continuation_token: str | None = None

    def __aiter__(self) -> Pages:
        return self

    async def __anext__(self) -> AsyncIterator[dict[str, Any]]:
        if not self.items:  # the service answered 304 Not Modified
            raise StopAsyncIteration
        self.continuation_token = self.next_token

        async def page() -> AsyncIterator[dict[str, Any]]:
            for item in self.items:
                yield item
        return page()


class Paged:
    """What `query_items_change_feed` gives."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def by_page(self) -> Pages:
        return self.pages


class FakeChangeFeed:
    """The events container's change feed, incremental as the service's: every write gets
    the next LSN in the range its stream hashes to; the items of one batch share their LSN
    and come in reverse order; a page holds whole batches, up to `max_item_count` items
    unless one batch is larger."""

    id = "Events"
    range_of: ClassVar[dict[str, int]] = {}

    def __init__(self) -> None:
        self.ranges = list(RANGES)
        self.log: list[tuple[int, int, dict[str, Any]]] = []
        """(range index, LSN, item) in the order written."""
        self.calls: list[dict[str, Any]] = []
        self.lsn = 0

    def write(self, items: list[dict[str, Any]]) -> None:
        """One transactional batch (one stream)."""
        self.lsn += 1
        where = sum(map(ord, items[0]["partitionKey"])) % 2
        self.log.extend((where, self.lsn, item) for item in items)

    def query_items_change_feed(self, **kwargs: Any) -> Paged:
        self.calls.append(kwargs)
        if "continuation" in kwargs:
            feed_range, after = read_token(kwargs["continuation"])
        else:
            assert kwargs["start_time"] == "Beginning"
            feed_range, after = kwargs["feed_range"], 0
        where = RANGES.index(feed_range)
        newer = [(lsn, item) for w, lsn, item in self.log if w == where and lsn > after]
        page: list[tuple[int, dict[str, Any]]] = []
        for lsn, item in newer:
            if len(page) >= kwargs["max_item_count"] and lsn != page[-1][0]:
                break
            page.append((lsn, item))
        batches: dict[int, list[dict[str, Any]]] = {}
        for lsn, item in page:
            batches.setdefault(lsn, []).insert(0, item)  # one batch's items in any order
        items = [item for lsn in sorted(batches) for item in batches[lsn]]
        return Paged(Pages(items, token(feed_range, page[-1][0] if page else after)))

    async def read_feed_ranges(self) -> AsyncIterator[dict[str, Any]]:
        for feed_range in self.ranges:
            yield feed_range


@pytest.fixture
def container() -> FakeChangeFeed:
    return FakeChangeFeed()


@pytest.fixture
def store(container: FakeChangeFeed) -> CosmosEventStore:
    account = CosmosAccount(client=cast(Any, None), database=cast(Any, None),
                            events=cast(Any, container), documents=cast(Any, None),
                            meter=RequestMeter(), version_is_unique=True)
    return CosmosEventStore(account)


def register(container: FakeChangeFeed, store: CosmosEventStore, n: int,
             more: int = 0) -> list[MusicianRegisteredEvent]:
    """Musician `n`'s stream: its registration, and `more` events after it, in one batch."""
    events = [MusicianRegisteredEvent(musician_id=f"m{n}", email="a@b.io", name=f"A{i}",
                                      genres=("Jazz",), location="Lima")
              for i in range(1 + more)]
    container.write([store.item(events[0].stream_id, v, e)
                     for v, e in enumerate(events, start=1)])
    return events


class CountRegistrations(Projection):
    name = "count"
    collections: ClassVar[tuple[str, ...]] = ("counts",)
    event_types = frozenset({MusicianRegisteredEvent.__name__})

    async def apply(self, event: DomainEvent, view: View) -> None:
        assert isinstance(event, MusicianRegisteredEvent)
        doc = await view.get("counts", event.musician_id) or {"n": 0}
        view.put("counts", event.musician_id, {"n": doc["n"] + 1})


async def test_a_range_is_read_from_its_beginning_then_from_each_pages_token(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    feed = CosmosFeed(store, InMemoryDocumentStore())
    parts = await feed.parts()
    assert [p.name("relay") for p in parts] == [f"relay@{range_name(r)}" for r in RANGES]
    for n in range(6):
        register(container, store, n, more=2)  # three events per stream, one batch each
    first = parts[0]
    page = await first.read(START, 4)
    assert container.calls[-1]["feed_range"] == RANGES[0]
    streams = [r.stream_id for r in page.events]
    assert len(streams) == 6  # whole batches: two streams, past the limit of 4
    # sorted by (stream, version), whatever order the batch came in
    assert [(r.stream_id, r.version) for r in page.events] == sorted(
        (r.stream_id, r.version) for r in page.events)
    assert first.checkpoint_after(page.events[0]) is None  # only the page's end is one
    assert first.position(page.checkpoint) == 0
    seen = list(page.events)
    while (page := await first.read(page.checkpoint, 4)).events:
        assert container.calls[-1]["continuation"] != START
        seen.extend(page.events)
    assert await first.caught_up(page.checkpoint)
    rest, end = await _all(parts[1])
    assert len({r.event.id for r in [*seen, *rest]}) == 18  # each event in one range, once
    ends = [page.checkpoint, end]
    [new] = register(container, store, 0)  # an incremental read finds what is new
    behind = [not await part.caught_up(at) for part, at in zip(parts, ends, strict=True)]
    assert sorted(behind) == [False, True]
    [(part, at)] = [(p, at) for p, at, b in zip(parts, ends, behind, strict=True) if b]
    assert [r.event.id for r in (await part.read(at, 10)).events] == [new.id]


async def _all(part: Any) -> tuple[list[Any], str]:
    """Every event of a part from its beginning; and the checkpoint after them."""
    out, checkpoint = [], START
    while (page := await part.read(checkpoint, 100)).events:
        out.extend(page.events)
        checkpoint = page.checkpoint
    return out, checkpoint


async def test_a_runner_keeps_a_checkpoint_per_range_and_applies_each_event_once(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    feed = CosmosFeed(store, documents)
    runner = ProjectionRunner(store, documents, [CountRegistrations()], batch_size=3, feed=feed)
    for n in range(8):
        register(container, store, n)
    assert not await runner.caught_up("count")
    assert await runner.catch_up("count") == 0  # no global position
    assert await runner.caught_up("count")
    for n in range(8, 12):
        register(container, store, n)
    await runner.catch_up("count")
    await runner.catch_up("count")  # nothing new: nothing applied again
    counts = [await documents.get("counts", f"m{n}") for n in range(12)]
    assert counts == [{"n": 1}] * 12
    names = sorted(k for k, _ in await documents.scan(FEED_CHECKPOINTS))
    assert names == sorted(f"{checkpoint_name('count')}@{range_name(r)}" for r in RANGES)
    await runner.stop()


async def test_runners_in_two_processes_share_the_ranges_by_lease(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    for n in range(10):
        register(container, store, n)
    other = checkpoint_name("count") + "@" + range_name(RANGES[0])
    assert await documents.try_lease(other, "another process", 60) is not None
    runner = ProjectionRunner(store, documents, [CountRegistrations()],
                              feed=CosmosFeed(store, documents))
    await runner.catch_up("count")
    applied = {n for n in range(10) if await documents.get("counts", f"m{n}")}
    in_second = {n for n in range(10) if sum(map(ord, f"musician-m{n}")) % 2 == 1}
    assert applied == in_second and 0 < len(applied) < 10  # the free range only
    await documents.release_lease(other, "another process")
    await runner.catch_up("count")
    assert all([await documents.get("counts", f"m{n}") == {"n": 1} for n in range(10)])
    await runner.stop()


async def test_the_ranges_are_pinned_when_first_read(container: FakeChangeFeed,
                                                     store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    first = await CosmosFeed(store, documents).parts()
    container.ranges = [{"Range": {"min": "", "max": "3F"}}, *RANGES]  # a split, later
    again = await CosmosFeed(store, documents).parts()
    assert [p.name("r") for p in again] == [p.name("r") for p in first]


async def test_a_checkpoint_is_saved_with_the_changes_and_compared_when_expected(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    [part, _] = await CosmosFeed(store, documents).parts()
    register(container, store, 2)
    register(container, store, 3)  # one stream in each range
    page = await part.read(START, 10)
    assert page.events
    reader = part.name("reader")
    changes = View(documents).changes
    changes.put("counts", "x", {"n": 1})
    assert await part.save(reader, page.checkpoint, changes, expected=START)
    assert await part.saved(reader) == page.checkpoint
    assert not await part.save(reader, START, expected=START)  # not where it stands
    assert await part.saved(reader) == page.checkpoint
    await part.reset(reader, ["counts"])
    assert await part.saved(reader) == START
    assert await documents.get("counts", "x") is None


async def test_an_unreadable_item_is_listed_and_the_page_goes_on(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    feed = CosmosFeed(store, documents)
    register(container, store, 2)
    bad = {"id": "x", "partitionKey": "musician-m2", "aggregateId": "musician-m2",
           "eventType": "NoSuchEvent", "eventData": "{}", "version": 2}
    container.write([bad])
    runner = ProjectionRunner(store, documents, [CountRegistrations()], feed=feed)
    await runner.catch_up("count")
    assert await documents.get("counts", "m2") == {"n": 1}
    [(key, skipped)] = await documents.scan(UNDECODABLE_EVENTS)
    assert skipped["stream_id"] == "musician-m2" and skipped["version"] == 2
    assert key.endswith(":musician-m2:2")
    assert await runner.caught_up("count")
    await runner.stop()


async def test_a_subscription_of_the_in_process_transport_reads_every_range(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    handled: list[str] = []

    async def handle(envelope: Envelope) -> None:
        handled.append(envelope.message_id)

    transport = InProcessTransport(store, documents, EventCodec(), poll_interval=0.01,
                                   feed=CosmosFeed(store, documents))
    written = [e for n in range(6) for e in register(container, store, n, more=1)]
    await transport.start([Subscription("welcome", frozenset({"MusicianRegisteredEvent"}),
                                        handle)])
    try:
        await transport.wait_idle(10)
        assert sorted(handled) == sorted(str(e.id) for e in written)  # once each
        more = register(container, store, 7)
        transport.wake()
        await transport.wait_idle(10)
        assert handled[-1] == str(more[0].id) and len(handled) == len(written) + 1
    finally:
        await transport.stop()
    saved = await documents.scan(FEED_CHECKPOINTS)  # saved on stopping, if not before
    assert sorted(k for k, _ in saved) == sorted(f"subscription:welcome@{range_name(r)}"
                                                 for r in RANGES)


async def test_a_subscription_that_moves_while_the_feed_is_asked_is_asked_again_where_it_is(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    part = (await CosmosFeed(store, documents).parts())[0]
    transport = InProcessTransport(store, documents, EventCodec(), feed=part)

    async def handle(envelope: Envelope) -> None:
        pass

    await transport.start([Subscription("welcome", frozenset({"MusicianRegisteredEvent"}),
                                        handle)])
    await transport.stop()  # its reader alone, driven by hand
    reader = next(iter(transport.readers.values()))
    asked: list[str] = []

    async def caught_up(checkpoint: str) -> bool:
        asked.append(checkpoint)
        if checkpoint == "before":
            reader.next = "after"  # the reader read on while the feed was asked
            return False
        return True

    reader.feed = cast(Any, type("Asked", (), {"caught_up": staticmethod(caught_up)}))
    reader.next = "before"
    assert not await reader.caught_up()  # behind at "before"
    assert await reader.caught_up()  # and asked again at "after", where nothing is left
    assert asked == ["before", "after"]


async def test_the_status_tells_each_range_caught_up_or_behind(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    runner = ProjectionRunner(store, documents, [CountRegistrations()],
                              feed=CosmosFeed(store, documents))
    names = [f"{checkpoint_name('count')}@{range_name(r)}" for r in RANGES]
    assert [(s.checkpoint, s.caught_up) for s in await runner.part_status()] == [
        (n, True) for n in names]  # nothing written: caught up everywhere
    for n in range(6):
        register(container, store, n)
    assert [s.caught_up for s in await runner.part_status()] == [False, False]
    await runner.catch_up("count")
    assert [s.caught_up for s in await runner.part_status()] == [True, True]
    register(container, store, 0)  # one new event: one range behind
    assert sorted(s.caught_up for s in await runner.part_status()) == [False, True]
    await runner.stop()


async def test_wait_for_waits_until_every_event_readable_is_applied(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    documents = InMemoryDocumentStore()
    runner = ProjectionRunner(store, documents, [CountRegistrations()],
                              feed=CosmosFeed(store, documents))
    for n in range(5):
        register(container, store, n)
    await runner.wait_for("count", 0, timeout=5)  # position 0: what Cosmos DB events carry
    assert [await documents.get("counts", f"m{n}") for n in range(5)] == [{"n": 1}] * 5
    await runner.stop()


async def test_a_part_read_from_now_gives_only_what_is_written_later(
        container: FakeChangeFeed, store: CosmosEventStore) -> None:
    feed = CosmosFeed(store, InMemoryDocumentStore())
    for n in range(6):
        register(container, store, n, more=1)
    parts = await feed.parts()
    nows = [await part.now() for part in parts]
    assert all([await part.caught_up(at) for part, at in zip(parts, nows, strict=True)])
    [new] = register(container, store, 0)
    read = [r.event.id for part, at in zip(parts, nows, strict=True)
            for r in (await part.read(at, 10)).events]
    assert read == [new.id]
