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
from mussikon.application.sagas.timeouts import TIMEOUTS, ScheduledTimeout
from mussikon.application.sagas.versioned import VersionedDocuments
from mussikon.ports.documents import Changes, DocumentStore

SAGAS = "sagas"
HISTORY = "saga-history"


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
            changes.delete(TIMEOUTS, timeout_id)
        for timeout_id in after.timeouts.keys() - before.timeouts.keys():
            pending = after.timeouts[timeout_id]
            changes.put(TIMEOUTS, timeout_id, ScheduledTimeout(
                pending.id, after.kind, after.instance, pending.name, pending.step,
                pending.due_at).to_document())
        if not await self.states.write(after.saga_id, after.to_document(), before.version,
                                       changes):
            return False
        after.version = version
        return True

    async def drop_timeout(self, timeout_id: str) -> None:
        """Forget a timeout whose handling is over."""
        changes = Changes()
        changes.delete(TIMEOUTS, timeout_id)
        await self.documents.commit(changes)

    async def history(self, saga_id: str) -> list[HistoryEntry]:
        """Every record of the instance, oldest first."""
        rows = await self.documents.scan(HISTORY, f"{saga_id}/")
        return [HistoryEntry.from_document(doc) for _, doc in rows]

    async def instances(self, status: SagaStatus | None = None,
                        kind: str | None = None) -> list[SagaState]:
        """Every instance (of one status, of one kind), most recently updated first."""
        rows = await self.documents.scan(SAGAS, f"{kind}-" if kind else "")
        states = [SagaState.from_document(doc, int(doc["version"])) for _, doc in rows]
        chosen = [s for s in states if status is None or s.status is status]
        return sorted(chosen, key=lambda s: s.updated_at.timestamp() if s.updated_at else 0.0,
                      reverse=True)

    async def page(self, status: SagaStatus | None = None, kind: str | None = None, *,
                   limit: int | None = None, after: str | None = None) -> list[SagaState]:
        """Up to `limit` instances (of one status, of one kind), newest started first, ties
        by id: those after the instance `after` (KeyError if there is none), or from the
        first. A start never changes, so paging with `after` visits each instance once
        however the instances move meanwhile; one started meanwhile comes before the first
        page."""
        rows = await self.documents.scan(SAGAS, f"{kind}-" if kind else "")
        states = [SagaState.from_document(doc, int(doc["version"])) for _, doc in rows]
        ordered = sorted(states, key=_by_start, reverse=True)
        if after is not None:
            cursor = await self.find(after)
            if cursor is None:
                raise KeyError(f"no saga {after!r}")
            ordered = [s for s in ordered if _by_start(s) < _by_start(cursor)]
        chosen = [s for s in ordered if status is None or s.status is status]
        return chosen if limit is None else chosen[:limit]


def _by_start(state: SagaState) -> tuple[datetime, str]:
    return state.started_at or datetime.min.replace(tzinfo=UTC), state.saga_id
