"""Where saga instances are kept: one versioned state document per instance, its history, and
its pending timeouts, all written by one atomic commit.

The state document holds the ids of the messages the instance has handled, so recording
a decision and recording that its message was handled are the same write; the version
claim makes that write optimistic (see `versioned`). The history is one document per
record, keyed so that a prefix scan lists an instance's records in order.

Why documents and not streams in the event store: the store's global order is the public
log of domain events. Everything in it is published (the RabbitMQ topology gives every
registered event type a durable queue, which saga records would fill with nobody reading)
and read by the .NET services; a saga's bookkeeping is this service's private business.
The documents live in the same database, and one commit holds what a stream append
would, plus the timeouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from mussikon.application.sagas.state import (
    HistoryEntry,
    RecordKind,
    SagaRecord,
    SagaState,
    SagaStatus,
)
from mussikon.application.sagas.timeouts import TIMEOUTS, ScheduledTimeout, due_key
from mussikon.application.sagas.versioned import VersionedDocuments
from mussikon.domain.instant import epoch_micros
from mussikon.ports.documents import Changes, DocumentStore

SAGAS = "sagas"
HISTORY = "saga-history"
LISTING = "saga-listing"
"""Every started instance under `<filter>/<order>/<saga id>`, for each filter `sagas list`
has (`all`, `status=S`, `kind=K`, `kind=K&status=S`: `listing_filter`), where `order` puts
the latest started first (`listing_order`): a page of a list is one range of keys. Written
in the same commit as the state, so it moves with the status."""

_LATEST = 10**17
"""More microseconds since the epoch than any start has (the year 5138)."""


def listing_filter(status: SagaStatus | None = None, kind: str | None = None) -> str:
    """The part of a listing key that names what a list is filtered on."""
    parts = [f"kind={kind}"] if kind else []
    parts += [f"status={status.value}"] if status else []
    return "&".join(parts) or "all"


def listing_order(state: SagaState) -> str:
    """The part of a listing key that orders: the latest start first, ties by id."""
    started = state.started_at or datetime(1970, 1, 1, tzinfo=UTC)
    return f"{_LATEST - epoch_micros(started):017d}/{state.saga_id}"


def _listing_keys(state: SagaState) -> set[str]:
    if state.started_at is None:
        return set()
    return {f"{listing_filter(status, kind)}/{listing_order(state)}"
            for status in (None, state.status) for kind in (None, state.kind)}


class SagaJournal:
    """Loads saga instances and commits their records."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents
        self.states = VersionedDocuments(documents, SAGAS)

    async def load(self, kind: str, instance: str, steps: Sequence[str]) -> SagaState:
        """The instance as last committed (a new, unstarted one if it never was)."""
        state = await self.find(f"{kind}-{instance}")
        return state or SagaState(kind=kind, instance=instance, steps=list(steps))

    async def find(self, saga_id: str) -> SagaState | None:
        """The instance with this id, or None."""
        doc, version = await self.states.read(saga_id)
        return None if doc is None else SagaState.from_document(doc, version)

    async def commit(self, before: SagaState, after: SagaState, records: Sequence[SagaRecord],
                     message_id: str, at: datetime) -> bool:
        """Write `after` (which is `before` with `records` applied) as the next version, with
        the records' history and the timeouts added or ended; False if another writer got
        that version first (nothing is written then)."""
        version = before.version + 1
        changes = Changes()
        for n, record in enumerate(records):
            entry = HistoryEntry(version, at, record.kind.value, record.step, record.detail,
                                 message_id)
            changes.put(HISTORY, f"{after.saga_id}/{version:08d}/{n:02d}", entry.to_document())
        # A timeout that fired stays scheduled until its handler has finished all the work
        # that followed (the scheduler drops it then): a crash before that fires it again,
        # which resumes the work. One that ended unfired is dropped now.
        fired = {r.timeout.id for r in records
                 if r.kind is RecordKind.TIMEOUT_FIRED and r.timeout is not None}
        for timeout_id in before.timeouts.keys() - after.timeouts.keys() - fired:
            changes.delete(TIMEOUTS, due_key(before.timeouts[timeout_id].due_at, timeout_id))
        for timeout_id in after.timeouts.keys() - before.timeouts.keys():
            pending = after.timeouts[timeout_id]
            scheduled = ScheduledTimeout(pending.id, after.kind, after.instance, pending.name,
                                         pending.step, pending.due_at)
            changes.put(TIMEOUTS, scheduled.key, scheduled.to_document())
        listed_before, listed = _listing_keys(before), _listing_keys(after)
        for key in listed_before - listed:
            changes.delete(LISTING, key)
        for key in listed - listed_before:
            changes.put(LISTING, key, {"id": after.saga_id})
        if not await self.states.write(after.saga_id, after.to_document(), before.version,
                                       changes):
            return False
        after.version = version
        return True

    async def drop_timeout(self, timeout: ScheduledTimeout) -> None:
        """Forget a timeout whose handling is over."""
        changes = Changes()
        changes.delete(TIMEOUTS, timeout.key)
        await self.documents.commit(changes)

    async def history(self, saga_id: str) -> list[HistoryEntry]:
        """Every record of the instance, oldest first."""
        rows = await self.documents.scan(HISTORY, f"{saga_id}/")
        return [HistoryEntry.from_document(doc) for _, doc in rows]

    async def instances(self, status: SagaStatus | None = None,
                        kind: str | None = None, *, limit: int = 1000) -> list[SagaState]:
        """The first `limit` instances (of one status, of one kind), latest started first."""
        return await self.page(status, kind, limit=limit)

    async def count(self, status: SagaStatus, kind: str, limit: int) -> int:
        """How many instances of `kind` are at `status`, counted up to `limit`: the keys of
        one range of the listing."""
        rows = await self.documents.scan_page(
            LISTING, prefix=f"{listing_filter(status, kind)}/", limit=limit)
        return len(rows)

    async def page(self, status: SagaStatus | None = None, kind: str | None = None, *,
                   limit: int, after: str | None = None) -> list[SagaState]:
        """Up to `limit` instances (of one status, of one kind), latest started first, ties
        by id: those after the instance `after` (KeyError if there is none), or from the
        first. A start never changes, so paging with `after` visits each instance once
        however the instances move meanwhile; one started meanwhile comes before the first
        page. Reads one range of the listing and the instances on the page."""
        listing = listing_filter(status, kind)
        start = ""
        if after is not None:
            cursor = await self.find(after)
            if cursor is None:
                raise KeyError(f"no saga {after!r}")
            start = f"{listing}/{listing_order(cursor)}"
        rows = await self.documents.scan_page(LISTING, prefix=f"{listing}/", after=start,
                                              limit=limit)
        found = [await self.find(doc["id"]) for _, doc in rows]
        return [state for state in found if state is not None]

    async def starting_with(self, prefix: str, limit: int) -> list[SagaState]:
        """The first `limit` instances whose saga id starts with `prefix`, by id."""
        rows = await self.documents.scan_page(SAGAS, prefix=prefix, limit=limit)
        return [SagaState.from_document(doc, int(doc["version"])) for _, doc in rows]
