"""The sagas of one process: an engine per saga, their subscriptions, the timeout scheduler,
and resuming an instance that lost the message that would have moved it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mussikon.application.marketplace import Marketplace
from mussikon.application.repository import Repository
from mussikon.application.sagas.application import MusicianApplicationSaga
from mussikon.application.sagas.booking import BookingPolicy, BookingSaga
from mussikon.application.sagas.engine import SagaEngine
from mussikon.application.sagas.journal import SagaJournal
from mussikon.application.sagas.reservations import MusicianDays
from mussikon.application.sagas.services import SagaServices
from mussikon.application.sagas.state import HistoryEntry, SagaState, SagaStatus
from mussikon.application.sagas.steps import SagaDefinition
from mussikon.application.sagas.timeouts import ScheduledTimeout, TimeoutScheduler
from mussikon.config import Settings
from mussikon.ports.clock import Clock
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore, RecordedEvent
from mussikon.ports.notifier import Notifier
from mussikon.ports.payments import PaymentGateway
from mussikon.ports.transport import Subscription


class SagaNotStuck(Exception):
    """The instance has nothing to resume: it is finished, or waits for an event or a timeout
    that can still come."""


@dataclass(frozen=True, slots=True)
class Resumption:
    """What resuming an instance did."""

    before: SagaState
    after: SagaState
    redelivered: list[RecordedEvent]
    """The stored events given to it again that moved it (it had not handled them)."""
    records: list[HistoryEntry]
    """What it recorded meanwhile, oldest first."""


class SagaRuntime:
    """Runs saga definitions: their events come through the transport's subscriptions, their
    timeouts through the scheduler this runtime starts and stops. With the event store,
    `resume` can give an instance the stored events it lost."""

    def __init__(self, documents: DocumentStore, clock: Clock,
                 definitions: Sequence[SagaDefinition], *, poll_interval: float = 0.05,
                 poll_max_interval: float = 1.0, store: EventStore | None = None) -> None:
        self.journal = SagaJournal(documents)
        self.clock = clock
        self.store = store
        self.engines = {d.kind: SagaEngine(d, self.journal, clock) for d in definitions}
        self.scheduler = TimeoutScheduler(documents, clock, self._fire,
                                          poll_interval=poll_interval,
                                          poll_max_interval=poll_max_interval)

    def subscriptions(self) -> list[Subscription]:
        """One subscription per saga, for the transport to start."""
        return [engine.subscription() for engine in self.engines.values()]

    async def _fire(self, timeout: ScheduledTimeout) -> None:
        engine = self.engines.get(timeout.kind)
        if engine is None:
            # Left for a process that runs this saga; it stays scheduled until then.
            raise LookupError(f"no saga {timeout.kind!r} runs in this process")
        await engine.fire(timeout)

    async def resume(self, saga_id: str) -> Resumption:
        """Move on an instance that lost the message that would have moved it (dead-lettered,
        then dropped), from its durable state (see `SagaEngine.resume`): the work that needs
        no message, then the stored events of its streams that it listens to and has not
        handled, in store order. KeyError if there is no such instance here; SagaNotStuck,
        with nothing changed, if it is finished or nothing moved it."""
        before = await self.journal.find(saga_id)
        if before is None:
            raise KeyError(f"no saga {saga_id!r}")
        engine = self.engines.get(before.kind)
        if engine is None:
            raise KeyError(f"no saga {before.kind!r} runs in this process")
        if before.finished:
            raise SagaNotStuck(f"saga {saga_id} is {before.status.value}: nothing to resume")
        lost = [r for r in await self._stored_events(engine.definition, before)
                if not before.has_handled(str(r.event.id))]
        after = await engine.resume(before.instance, [r.event for r in lost])
        if after.version == before.version:
            raise SagaNotStuck(f"saga {saga_id} is {before.status.value}{_waiting(before)}, "
                               "and no stored event it has not handled moves it: nothing to "
                               "resume")
        records = [h for h in await self.journal.history(saga_id) if h.version > before.version]
        # An instance keeps only the ids it still needs: `lost` may hold events it handled
        # in an earlier step, which decide nothing now. Those that moved it are named in
        # what it recorded.
        moved_by = {h.message_id for h in records}
        return Resumption(before, after, [r for r in lost if str(r.event.id) in moved_by],
                          records)

    async def _stored_events(self, definition: SagaDefinition,
                             state: SagaState) -> list[RecordedEvent]:
        """The events of the instance's streams that the saga listens to and that concern
        this instance, in store order."""
        if self.store is None:
            return []
        found: dict[int, RecordedEvent] = {}
        for stream in definition.streams(state.instance, state.data):
            for record in await self.store.read_stream(stream):
                event = record.event
                if event.event_type in definition.event_types \
                        and definition.correlate(event) == state.instance:
                    found[record.position] = record
        return [found[position] for position in sorted(found)]

    async def start(self) -> None:
        """Start firing timeouts."""
        await self.scheduler.start()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no timeout is due and unfired."""
        await self.scheduler.wait_idle(timeout)

    async def stop(self) -> None:
        """Stop firing timeouts (one being fired finishes)."""
        await self.scheduler.stop()


def booking_policy(settings: Settings) -> BookingPolicy:
    """The booking saga's timeouts and retries, as configured."""
    return BookingPolicy(signature_timeout=settings.saga_signature_timeout,
                         payment_retries=settings.saga_payment_retries,
                         payment_retry_delay=settings.saga_payment_retry_delay)


def open_sagas(settings: Settings, *, documents: DocumentStore, marketplace: Marketplace,
               repository: Repository, notifier: Notifier, gateway: PaymentGateway,
               clock: Clock) -> SagaRuntime:
    """The MusicianApplicationSaga and the booking saga, wired to the application's services."""
    services = SagaServices(marketplace, repository, notifier, gateway,
                            MusicianDays(documents, clock))
    return SagaRuntime(documents, clock, [MusicianApplicationSaga(services),
                                          BookingSaga(services, booking_policy(settings))],
                       poll_interval=settings.poll_interval,
                       poll_max_interval=settings.poll_max_interval, store=repository.store)


def _waiting(state: SagaState) -> str:
    if state.status is not SagaStatus.WAITING:
        return ""
    due = sorted(t.due_at for t in state.timeouts.values())
    until = f" or its timeout at {due[0].isoformat()}" if due else ""
    return f" at step {state.current_step}, for an event{until}"
