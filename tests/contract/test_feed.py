"""The feed port's contract, over every store with a global order: pages that leave no event
out and keep each stream's order, opaque checkpoints saved with the reader's changes (a
compare-and-set, fenced by a lease), and the answers a reader uses to know it is caught up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.ports.documents import Changes, Fence
from mussikon.ports.event_store import RecordedEvent, UndecodableEventError
from mussikon.ports.feed import START, Feed
from tests.contract.store_adapters import ADAPTERS, StoresUnderTest, open_stores
from tests.polling import eventually


@pytest.fixture(params=ADAPTERS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoresUnderTest]:
    async with open_stores(request.param, tmp_path, request) as opened:
        yield opened


def feed_of(stores: StoresUnderTest) -> Feed:
    return GlobalOrderFeed(stores.events, stores.documents)


async def register(stores: StoresUnderTest, n: int) -> None:
    """Two events in musician `n`'s stream."""
    events = [MusicianRegisteredEvent(musician_id=f"m{n}", email="a@b.io", name=name,
                                      genres=("Jazz",), location="Lima") for name in "AB"]
    await stores.events.append(events[0].stream_id, events, 0)


async def read_everything(feed: Feed, limit: int) -> tuple[list[RecordedEvent], str]:
    """Every event after START, page by page; and the checkpoint after the last page."""
    out: list[RecordedEvent] = []
    checkpoint = START
    while page := await feed.read(checkpoint, limit):
        if not page.events:
            assert page.checkpoint == checkpoint  # an empty page stays where it was
            return out, checkpoint
        assert len(page.events) <= limit
        out.extend(page.events)
        checkpoint = page.checkpoint
    raise AssertionError("unreachable")


async def test_an_empty_feed_has_nothing_and_is_caught_up(stores: StoresUnderTest) -> None:
    feed = feed_of(stores)
    page = await feed.read(START, 10)
    assert list(page.events) == [] and page.checkpoint == START
    assert await feed.caught_up(START)
    assert await feed.readable(await feed.head())
    assert await feed.saved("reader") == START


async def test_pages_go_through_every_event_once_each_stream_in_order(
        stores: StoresUnderTest) -> None:
    feed = feed_of(stores)
    for n in range(7):
        await register(stores, n)
    await stores.settle()
    events, last = await read_everything(feed, 3)
    assert len(events) == 14 and len({r.event.id for r in events}) == 14
    for n in range(7):
        versions = [r.version for r in events if r.stream_id == f"musician-m{n}"]
        assert versions == [1, 2]
    assert not await feed.caught_up(START)
    assert await feed.caught_up(last)
    await register(stores, 7)
    await stores.settle()
    assert not await feed.caught_up(last)
    more = await feed.read(last, 10)
    assert [r.stream_id for r in more.events] == ["musician-m7", "musician-m7"]


async def test_the_checkpoint_after_an_event_resumes_just_after_it(
        stores: StoresUnderTest) -> None:
    feed = feed_of(stores)
    for n in range(3):
        await register(stores, n)
    await stores.settle()
    page = await feed.read(START, 10)
    inside = feed.checkpoint_after(page.events[2])
    assert inside is not None
    rest = await feed.read(inside, 10)
    assert [r.event.id for r in rest.events] == [r.event.id for r in page.events[3:]]
    assert feed.checkpoint_after(page.events[-1]) == page.checkpoint


async def test_a_checkpoint_is_saved_with_the_changes_as_a_compare_and_set(
        stores: StoresUnderTest) -> None:
    feed = feed_of(stores)
    for n in range(2):
        await register(stores, n)
    await stores.settle()
    first = await feed.read(START, 2)
    second = await feed.read(first.checkpoint, 2)
    changes = Changes()
    changes.put("counts", "x", {"n": 1})
    assert await feed.save("reader", first.checkpoint, changes, expected=START)
    assert await feed.saved("reader") == first.checkpoint
    assert await stores.documents.get("counts", "x") == {"n": 1}
    stale = Changes()
    stale.put("counts", "x", {"n": 99})
    # expected where it no longer stands: nothing applied
    assert not await feed.save("reader", second.checkpoint, stale, expected=START)
    assert await feed.saved("reader") == first.checkpoint
    assert await stores.documents.get("counts", "x") == {"n": 1}
    assert await feed.save("reader", second.checkpoint, expected=first.checkpoint)
    assert await feed.saved("reader") == second.checkpoint
    # without `expected`, a checkpoint the feed can tell is behind does not move it back
    assert not await feed.save("reader", first.checkpoint)
    assert await feed.saved("reader") == second.checkpoint
    await feed.reset("reader", ["counts"])
    assert await feed.saved("reader") == START
    assert await stores.documents.get("counts", "x") is None


async def test_a_save_under_a_lease_lost_is_refused(stores: StoresUnderTest) -> None:
    feed = feed_of(stores)
    await register(stores, 1)
    await stores.settle()
    page = await feed.read(START, 10)
    first = await stores.documents.try_lease("reader", "one", 0.05)
    assert first is not None
    await eventually(lambda: _taken(stores, "reader", "two"))
    assert not await feed.save("reader", page.checkpoint, fence=Fence("reader", "one", first))
    assert await feed.saved("reader") == START


async def _taken(stores: StoresUnderTest, lease: str, owner: str) -> bool:
    return await stores.documents.try_lease(lease, owner, 60) is not None


async def test_an_undecodable_event_names_the_checkpoint_after_it(
        stores: StoresUnderTest) -> None:
    feed = feed_of(stores)
    await stores.insert_raw("musician-old", 1, "NoSuchEvent", "{}")
    await register(stores, 1)
    await stores.settle()
    with pytest.raises(UndecodableEventError) as raised:
        await feed.read(START, 10)
    rest = await feed.read(raised.value.checkpoint, 10)
    assert [r.stream_id for r in rest.events] == ["musician-m1", "musician-m1"]


async def test_heads_are_equal_while_nothing_is_committed(stores: StoresUnderTest) -> None:
    feed = feed_of(stores)
    empty = await feed.head()
    await register(stores, 1)
    head = await feed.head()
    assert head != empty
    await stores.settle()
    assert await feed.readable(head)
    assert await feed.head() == head
    _, last = await read_everything(feed, 10)
    assert await feed.caught_up(last)
