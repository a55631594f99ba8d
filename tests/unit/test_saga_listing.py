"""`sagas list` reads a page through the saga listing: one range of keys and the instances on
the page, however many instances there are and whatever the filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application.sagas.journal import SagaJournal
from mussikon.application.sagas.state import RecordKind, SagaRecord, SagaState, SagaStatus
from mussikon.ports.documents import Document

START = datetime(2030, 1, 1, tzinfo=UTC)


class CountingDocuments(InMemoryDocumentStore):
    """Counts the documents its reads return."""

    read = 0

    async def get(self, collection: str, key: str) -> Document | None:
        self.read += 1
        return await super().get(collection, key)

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        rows = await super().scan(collection, prefix)
        self.read += len(rows)
        return rows

    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        rows = await super().scan_page(collection, after=after, limit=limit, prefix=prefix,
                                       before=before)
        self.read += len(rows)
        return rows


async def _start(journal: SagaJournal, kind: str, instance: str, at: datetime,
                 finish: bool) -> None:
    state = SagaState(kind, instance, ["only"])
    after = state.copy()
    records = [SagaRecord(RecordKind.STARTED)]
    if finish:
        records.append(SagaRecord(RecordKind.COMPLETED))
    for record in records:
        after.apply(record, "", at)
    assert await journal.commit(state, after, records, f"m-{instance}", at)


async def test_a_page_reads_the_page_whatever_the_filter() -> None:
    documents = CountingDocuments()
    journal = SagaJournal(documents)
    for n in range(200):  # every tenth booking completed, the others running
        await _start(journal, "booking" if n % 2 else "application", f"i{n:03d}",
                     START + timedelta(minutes=n), finish=n % 10 == 1)
    documents.read = 0
    page = await journal.page(limit=5)
    assert [s.instance for s in page] == ["i199", "i198", "i197", "i196", "i195"]
    assert documents.read == 10  # five listing entries, five instances
    documents.read = 0
    completed = await journal.page(SagaStatus.COMPLETED, "booking", limit=3, after="booking-i191")
    assert [s.instance for s in completed] == ["i181", "i171", "i161"]
    assert documents.read == 1 + 3 + 3  # the cursor, three listing entries, three instances
    assert await journal.page(SagaStatus.COMPLETED, "application", limit=3) == []
