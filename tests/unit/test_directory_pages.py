"""The directory commands' pages: a filter picks each page out of the store's batches, and
following the pages visits every kept document once, in key order."""

from __future__ import annotations

import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application.projections.directory import filtered_page
from mussikon.ports.documents import Changes, Document


async def filled(count: int) -> InMemoryDocumentStore:
    documents = InMemoryDocumentStore()
    changes = Changes()
    for n in range(count):
        changes.put("gigs", f"g-{n:03}", {"n": n})
    changes.put("other", "g-000", {"n": -1})
    await documents.commit(changes)
    return documents


def every_third(doc: Document) -> bool:
    return int(doc["n"]) % 3 == 0


@pytest.mark.parametrize("limit, batch", [(1, 2), (2, 3), (4, 3), (5, 50), (34, 3), (40, 7)])
async def test_following_the_pages_visits_each_kept_document_once(limit: int,
                                                                  batch: int) -> None:
    documents = await filled(100)
    seen: list[int] = []
    after, more = "", True
    while more:
        page, more = await filtered_page(documents, "gigs", every_third, limit=limit,
                                         after=after, batch=batch)
        assert len(page) == limit or not more
        seen.extend(doc["n"] for _, doc in page)
        after = page[-1][0] if page else after
    assert seen == list(range(0, 100, 3))


async def test_a_page_without_a_filter_reads_one_more_than_it_shows() -> None:
    documents = await filled(10)
    page, more = await filtered_page(documents, "gigs", None, limit=4, after="g-003")
    assert [key for key, _ in page] == ["g-004", "g-005", "g-006", "g-007"] and more
    page, more = await filtered_page(documents, "gigs", None, limit=4, after="g-005")
    assert [key for key, _ in page] == ["g-006", "g-007", "g-008", "g-009"] and not more
    assert await filtered_page(documents, "gigs", every_third, limit=3, after="g-009") == (
        [], False)
