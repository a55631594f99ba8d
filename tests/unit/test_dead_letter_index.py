"""The dead letters of the in-process transport, kept in the document store's index: a page,
one letter by its id and the letters a start of an id names are bounded reads however many
letters there are; a letter kept again replaces itself; letters kept the old way are moved in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mussikon.adapters.messaging.dead_letter_store import (
    IDS,
    LEGACY,
    LETTERS,
    DeadLetterIndex,
    letter_document,
    sort_key,
)
from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.adapters.store.memory import InMemoryEventStore
from mussikon.ports.documents import Changes
from mussikon.ports.transport import DeadLetter
from mussikon.wire import EventCodec
from tests.unit.test_saga_listing import CountingDocuments

START = datetime(2026, 1, 1, tzinfo=UTC)
LETTER_COUNT = 2000


def letter(n: int, at: datetime | None = None) -> DeadLetter:
    return DeadLetter(id=f"s:{n:08x}", subscription="s", message_id=f"{n:08x}",
                      event_type="MusicianRegisteredEvent", position=n, attempts=3,
                      exception="ValueError", reason=f"letter {n}", body="{}",
                      failed_at=at or START + timedelta(seconds=n))


async def many(documents: CountingDocuments) -> InProcessTransport:
    index = DeadLetterIndex(documents)
    # Kept newest first, so an order taken from the order of writing would be wrong.
    for n in reversed(range(0, LETTER_COUNT, 250)):
        await index.keep([letter_document(letter(m)) for m in range(n, n + 250)])
    transport = InProcessTransport(InMemoryEventStore(EventCodec()), documents, EventCodec())
    await transport.open_for_operations([])
    documents.read = 0
    return transport


async def test_a_page_reads_the_page_of_two_thousand_letters() -> None:
    documents = CountingDocuments()
    transport = await many(documents)
    page = await transport.dead_letters(limit=11, after=letter(1500).id)
    assert [d.id for d in page] == [letter(n).id for n in range(1501, 1512)]
    assert documents.read == 1 + 11  # the cursor's id entry, the page
    documents.read = 0
    first = await transport.dead_letters(limit=3)
    assert [d.position for d in first] == [0, 1, 2]
    assert documents.read == 3
    with pytest.raises(KeyError):
        await transport.dead_letters(limit=3, after="s:no-such-letter")


async def test_one_letter_and_the_start_of_an_id_are_a_few_reads() -> None:
    documents = CountingDocuments()
    transport = await many(documents)
    found = await transport.find_dead_letter(letter(1234).id)
    assert found == letter(1234)
    assert documents.read == 2
    documents.read = 0
    assert await transport.dead_letter_ids("s:000004d", 6) == [
        letter(n).id for n in range(0x4d0, 0x4d6)]
    assert documents.read == 6
    assert await transport.find_dead_letter("s:no-such-letter") is None


async def test_a_letter_kept_again_replaces_itself_at_its_new_place() -> None:
    documents = CountingDocuments()
    index = DeadLetterIndex(documents)
    await index.keep([letter_document(letter(n)) for n in range(3)])
    again = letter(0, at=START + timedelta(hours=1))
    await index.keep([letter_document(again), letter_document(again)])
    assert [doc["id"] for doc in await index.page(None, None)] == [
        letter(1).id, letter(2).id, letter(0).id]
    assert len(await documents.scan(LETTERS)) == 3
    assert (await documents.get(IDS, again.id)) == {"key": sort_key(again.failed_at, again.id)}


async def test_letters_kept_by_id_only_are_moved_into_the_index() -> None:
    documents = CountingDocuments()
    changes = Changes()
    for n in (2, 1):
        doc = letter_document(letter(n))
        del doc["id"]
        changes.put(LEGACY, letter(n).id, doc)
    await documents.commit(changes)
    transport = InProcessTransport(InMemoryEventStore(EventCodec()), documents, EventCodec())
    await transport.open_for_operations([])
    assert await transport.dead_letters() == [letter(1), letter(2)]
    assert await documents.scan(LEGACY) == []


def test_the_key_sorts_by_failure_time_in_fixed_width() -> None:
    on_the_second = sort_key(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), "b")
    later = sort_key(datetime(2026, 1, 1, 0, 0, 1, 5, tzinfo=UTC), "a")
    assert on_the_second == "2026-01-01T00:00:01.000000Z b"
    assert on_the_second < later
    elsewhere = datetime(2026, 1, 1, 2, 0, 1, tzinfo=UTC).astimezone(timezone(-timedelta(hours=4)))
    assert sort_key(elsewhere, "b") == "2026-01-01T02:00:01.000000Z b"
