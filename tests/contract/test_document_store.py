"""The document store contract: every adapter passes these tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mussikon.ports.documents import Changes, Document, DocumentStore, Fence
from tests.contract.store_adapters import STORE_ADAPTERS, open_stores
from tests.polling import eventually


@pytest.fixture(params=STORE_ADAPTERS)
async def docs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocumentStore]:
    async with open_stores(request.param, tmp_path, request) as opened:
        yield opened.documents


def putting(*items: tuple[str, str, Document]) -> Changes:
    changes = Changes()
    for collection, key, doc in items:
        changes.put(collection, key, doc)
    return changes


async def test_a_document_round_trips_with_exact_values(docs: DocumentStore) -> None:
    assert await docs.get("profiles", "m-1") is None
    doc = {"name": "Ana", "fee": Decimal("1500.50"), "genres": ["jazz"], "nested": {"n": 3},
           "none": None, "ok": True}
    assert await docs.commit(putting(("profiles", "m-1", doc)))
    stored = await docs.get("profiles", "m-1")
    assert stored == doc
    assert stored is not None and str(stored["fee"]) == "1500.50"
    assert await docs.get("other", "m-1") is None


async def test_scan_returns_a_collections_keys_with_a_prefix_in_key_order(
        docs: DocumentStore) -> None:
    keys = ["b-2", "a_1", "a%1", "a-2", "a-10", "B-1", "é-1"]
    await docs.commit(putting(*(("c", k, {"k": k}) for k in keys), ("d", "a-1", {"k": "x"})))
    assert [k for k, _ in await docs.scan("c")] == sorted(keys)
    assert await docs.scan("c", "a-") == [("a-10", {"k": "a-10"}), ("a-2", {"k": "a-2"})]
    assert [k for k, _ in await docs.scan("c", "a_")] == ["a_1"]  # no wildcard in a prefix
    assert [k for k, _ in await docs.scan("c", "a%")] == ["a%1"]
    assert await docs.scan("c", "z") == []
    assert await docs.scan("empty") == []


async def test_a_commit_applies_puts_and_deletes_together(docs: DocumentStore) -> None:
    await docs.commit(putting(("c", "a", {"v": 1}), ("c", "b", {"v": 1})))
    changes = Changes()
    changes.delete("c", "a")
    changes.put("c", "b", {"v": 2})
    changes.put("c", "new", {"v": 1})
    changes.delete("c", "never-there")
    assert await docs.commit(changes)
    assert await docs.scan("c") == [("b", {"v": 2}), ("new", {"v": 1})]


async def test_a_duplicate_inbox_entry_applies_nothing(docs: DocumentStore) -> None:
    assert not await docs.has_seen("mailer", "msg-1")
    assert await docs.commit(putting(("c", "a", {"v": 1})), inbox=("mailer", "msg-1"))
    assert await docs.has_seen("mailer", "msg-1")
    assert not await docs.commit(putting(("c", "a", {"v": 2})), inbox=("mailer", "msg-1"))
    assert await docs.get("c", "a") == {"v": 1}
    assert not await docs.has_seen("other-consumer", "msg-1")
    assert await docs.commit(Changes(), inbox=("other-consumer", "msg-1"))


async def test_prune_inbox_removes_old_entries_a_batch_at_a_time_oldest_first(
        docs: DocumentStore) -> None:
    assert await docs.prune_inbox(timedelta(0), 10) == 0
    for n in range(5):
        assert await docs.commit(Changes(), inbox=(f"consumer-{n % 2}", f"old-{n}"))
    written = time.monotonic()
    # The entries age by the store's clock (the server's, on PostgreSQL): let real time pass.
    await eventually(lambda: time.monotonic() - written > 1.5, what="1.5 s to pass")
    assert await docs.commit(putting(("c", "new", {"v": 1})), inbox=("consumer-0", "new"))
    removed = [await docs.prune_inbox(timedelta(seconds=0.75), 2) for _ in range(4)]
    assert removed == [2, 2, 1, 0]
    assert not any([await docs.has_seen(f"consumer-{n % 2}", f"old-{n}") for n in range(5)])
    assert await docs.has_seen("consumer-0", "new")
    # an id pruned is new again to its consumer; the documents are untouched
    assert await docs.commit(Changes(), inbox=("consumer-0", "old-0"))
    assert await docs.get("c", "new") == {"v": 1}


async def test_a_checkpoint_only_moves_forward(docs: DocumentStore) -> None:
    assert await docs.checkpoint("profiles") == 0
    assert await docs.commit(putting(("c", "a", {"v": 5})), checkpoint=("profiles", 5))
    assert not await docs.commit(putting(("c", "a", {"v": 55})), checkpoint=("profiles", 5))
    assert not await docs.commit(putting(("c", "b", {"v": 3})), checkpoint=("profiles", 3))
    assert await docs.scan("c") == [("a", {"v": 5})]
    assert await docs.checkpoint("profiles") == 5
    assert await docs.commit(Changes(), checkpoint=("profiles", 2**40))
    assert await docs.commit(Changes(), checkpoint=("analytics", 1))
    assert await docs.checkpoints() == {"profiles": 2**40, "analytics": 1}


async def test_a_stale_checkpoint_also_drops_the_inbox_entry(docs: DocumentStore) -> None:
    await docs.commit(Changes(), checkpoint=("p", 10))
    assert not await docs.commit(putting(("c", "a", {"v": 1})), checkpoint=("p", 9),
                                 inbox=("p", "msg-1"))
    assert not await docs.has_seen("p", "msg-1")
    assert await docs.get("c", "a") is None
    assert await docs.commit(putting(("c", "a", {"v": 1})), checkpoint=("p", 11),
                             inbox=("p", "msg-1"))
    assert await docs.has_seen("p", "msg-1")


async def test_a_checkpoint_commit_expecting_a_stale_position_changes_nothing(
        docs: DocumentStore) -> None:
    # never set: it stands at 0
    assert not await docs.commit(putting(("c", "a", {"v": 1})), checkpoint=("p", 5),
                                 expected=3, inbox=("p", "msg-0"))
    assert await docs.checkpoint("p") == 0 and await docs.checkpoints() == {}
    assert await docs.commit(putting(("c", "a", {"v": 5})), checkpoint=("p", 5), expected=0)
    # Two runners began at 5; the first moved it to 10, the second read further (to 12).
    assert await docs.commit(putting(("c", "a", {"v": 10})), checkpoint=("p", 10), expected=5)
    assert not await docs.commit(putting(("c", "a", {"v": 12}), ("c", "b", {"v": 12})),
                                 checkpoint=("p", 12), expected=5, inbox=("p", "msg-1"))
    assert await docs.scan("c") == [("a", {"v": 10})]
    assert await docs.checkpoint("p") == 10
    assert not await docs.has_seen("p", "msg-1")
    assert not await docs.commit(putting(("c", "b", {})), checkpoint=("p", 10), expected=10)
    # A rebuild set it back to 0: a batch begun before the reset does not land over it.
    await docs.reset_checkpoint("p", ["c"])
    assert not await docs.commit(putting(("c", "a", {"v": 12})), checkpoint=("p", 12),
                                 expected=10)
    assert await docs.scan("c") == [] and await docs.checkpoint("p") == 0
    assert await docs.commit(putting(("c", "a", {"v": 2})), checkpoint=("p", 2), expected=0)
    assert await docs.commit(Changes(), checkpoint=("p", 2**40), expected=2,
                             inbox=("p", "msg-1"))
    assert await docs.checkpoints() == {"p": 2**40} and await docs.has_seen("p", "msg-1")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        await docs.commit(putting(("c", "z", {})), expected=0)
    assert await docs.scan("c") == [("a", {"v": 2})]


async def test_reset_checkpoint_drops_its_collections(docs: DocumentStore) -> None:
    await docs.commit(putting(("profiles", "a", {}), ("by-genre", "jazz", {}),
                              ("kept", "x", {})), checkpoint=("profiles", 7))
    await docs.reset_checkpoint("profiles", ["profiles", "by-genre"])
    assert await docs.checkpoint("profiles") == 0
    assert await docs.scan("profiles") == [] and await docs.scan("by-genre") == []
    assert await docs.scan("kept") == [("x", {})]
    assert await docs.commit(putting(("profiles", "a", {})), checkpoint=("profiles", 1))


async def test_a_lease_belongs_to_one_owner_until_it_expires(docs: DocumentStore) -> None:
    assert await docs.try_lease("relay", "A", 0.3)
    assert not await docs.try_lease("relay", "B", 0.3)
    assert await docs.try_lease("relay", "A", 0.3)  # the holder renews
    assert await docs.try_lease("other", "B", 0.3)  # leases are independent
    await docs.release_lease("relay", "B")  # not the holder: no effect
    assert not await docs.try_lease("relay", "B", 0.3)
    await docs.release_lease("relay", "A")
    assert await docs.try_lease("relay", "B", 0.2)
    assert not await docs.try_lease("relay", "A", 0.2)
    await asyncio.sleep(0.35)
    assert await docs.try_lease("relay", "A", 0.2)  # B's lease expired


async def taken_over(docs: DocumentStore, name: str, owner: str, seconds: float) -> int:
    """Wait until `owner` gets the lease (another's ran out); its generation."""
    got: list[int] = []

    async def taken() -> bool:
        generation = await docs.try_lease(name, owner, seconds)
        got.extend([] if generation is None else [generation])
        return bool(got)

    await eventually(taken, 5, interval=0.01)
    return got[0]


async def test_a_lease_has_a_new_greater_generation_each_time_another_owner_takes_it(
        docs: DocumentStore) -> None:
    a = await docs.try_lease("relay", "A", 0.2)
    assert a is not None and a > 0
    assert await docs.try_lease("relay", "A", 0.2) == a  # a renewal keeps it
    assert await docs.try_lease("relay", "B", 0.2) is None
    b = await taken_over(docs, "relay", "B", 30)  # A's term ran out
    assert b > a
    await docs.release_lease("relay", "B")
    again = await docs.try_lease("relay", "A", 30)  # A again, after another held it
    assert again is not None and again > b
    await docs.release_lease("relay", "A")
    assert (await docs.try_lease("relay", "A", 30) or 0) > again  # released: a new take


async def test_a_fenced_commit_applies_only_while_its_owner_holds_the_lease_at_that_generation(
        docs: DocumentStore) -> None:
    a = await docs.try_lease("relay", "A", 0.2)
    assert a is not None
    fence = Fence("relay", "A", a)
    assert await docs.commit(putting(("c", "k", {"v": 1})), checkpoint=("relay", 1),
                             fence=fence)
    assert not await docs.commit(putting(("c", "k", {"v": 2})), checkpoint=("relay", 2),
                                 fence=Fence("relay", "B", a))  # not the owner
    assert not await docs.commit(putting(("c", "k", {"v": 2})), checkpoint=("relay", 2),
                                 fence=Fence("relay", "A", a + 1))  # not the generation
    assert not await docs.commit(Changes(), checkpoint=("relay", 2),
                                 fence=Fence("other", "A", a))  # not that lease
    await taken_over(docs, "relay", "B", 30)  # A stalled past its term; B took over
    # A resumes: nothing it commits under its fence is written, whatever it carries.
    stale = putting(("c", "k", {"v": 3}), ("c", "new", {"v": 3}))
    stale.delete("c", "k")
    assert not await docs.commit(stale, checkpoint=("relay", 9), inbox=("relay", "m-1"),
                                 fence=fence)
    assert not await docs.commit(putting(("c", "k", {"v": 4})), checkpoint=("p", 4),
                                 expected=0, fence=fence)
    assert not await docs.commit(putting(("c", "k", {"v": 5})), inbox=("relay", "m-2"),
                                 fence=fence)
    assert not await docs.commit(putting(("c", "k", {"v": 6})), fence=fence)
    assert await docs.scan("c") == [("k", {"v": 1})]
    assert await docs.checkpoints() == {"relay": 1}
    assert not await docs.has_seen("relay", "m-1") and not await docs.has_seen("relay", "m-2")
    # Nor once A holds the lease again: that is a new generation.
    await docs.release_lease("relay", "B")
    again = await docs.try_lease("relay", "A", 30)
    assert again is not None
    assert not await docs.commit(Changes(), checkpoint=("relay", 9), fence=fence)
    assert await docs.commit(Changes(), checkpoint=("relay", 9),
                             fence=Fence("relay", "A", again))
    assert await docs.checkpoint("relay") == 9


async def test_a_fenced_commit_applies_after_the_term_ran_out_if_nobody_took_the_lease(
        docs: DocumentStore) -> None:
    """No other owner can have written meanwhile: the commit is as safe as one in the term,
    and the holder's renewal keeps the generation."""
    a = await docs.try_lease("relay", "A", 0.05)
    assert a is not None
    assert await docs.try_lease("timer", "X", 0.05)  # taken later: runs out later
    await taken_over(docs, "timer", "Y", 30)  # X's term ran out, so A's has too
    assert await docs.commit(putting(("c", "k", {})), checkpoint=("relay", 3),
                             fence=Fence("relay", "A", a))
    assert await docs.try_lease("relay", "A", 30) == a
    assert await docs.checkpoint("relay") == 3


async def test_scan_page_reads_a_collection_in_key_order_a_page_at_a_time(
        docs: DocumentStore) -> None:
    keys = ["b-2", "a_1", "a%1", "a-2", "a-10", "B-1", "é-1", "a-1|x"]
    await docs.commit(putting(*(("c", k, {"k": k}) for k in keys), ("d", "a-1", {"k": "x"})))
    pages, after = [], ""
    while page := await docs.scan_page("c", after=after, limit=3):
        assert len(page) <= 3
        pages.append(page)
        after = page[-1][0]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [item for p in pages for item in p] == await docs.scan("c")
    assert [k for k, _ in await docs.scan_page("c", after="a-10", limit=2)] == ["a-1|x", "a-2"]
    assert await docs.scan_page("c", prefix="a-", limit=10) == await docs.scan("c", "a-")
    assert [k for k, _ in await docs.scan_page("c", prefix="a-", after="a-10", limit=1)] == [
        "a-1|x"]
    assert [k for k, _ in await docs.scan_page("c", prefix="a_", limit=5)] == ["a_1"]
    assert await docs.scan_page("c", after="é-1", limit=5) == []
    assert await docs.scan_page("empty", limit=5) == []


async def test_scan_page_stops_before_a_key_and_a_prefix_is_a_range_of_keys(
        docs: DocumentStore) -> None:
    keys = ["a", "a-1", "a-2", "a-3", "a.", "a\U0010ffff", "a\U0010ffffz", "b", "ab"]
    await docs.commit(putting(*(("c", k, {}) for k in keys)))
    assert [k for k, _ in await docs.scan_page("c", limit=10, before="a-3")] == [
        "a", "a-1", "a-2"]
    assert [k for k, _ in await docs.scan_page("c", after="a-1", limit=10, before="a.")] == [
        "a-2", "a-3"]
    assert [k for k, _ in await docs.scan_page("c", prefix="a-", limit=10, before="a-3")] == [
        "a-1", "a-2"]
    assert await docs.scan_page("c", limit=10, before="a") == []
    # the last code point is no end of a range: the keys after it still start with "a"
    assert [k for k, _ in await docs.scan("c", "a\U0010ffff")] == ["a\U0010ffff",
                                                                  "a\U0010ffffz"]
    assert [k for k, _ in await docs.scan("c", "a")] == sorted(set(keys) - {"b"})
    assert [k for k, _ in await docs.scan_page("c", prefix="a-", limit=2)] == ["a-1", "a-2"]
