"""The sagas of one process: an engine per saga, their subscriptions, the timeout scheduler."""

from __future__ import annotations

from collections.abc import Sequence

from mussikon.application.marketplace import Marketplace
from mussikon.application.repository import Repository
from mussikon.application.sagas.application import MusicianApplicationSaga
from mussikon.application.sagas.booking import BookingPolicy, BookingSaga
from mussikon.application.sagas.engine import SagaEngine
from mussikon.application.sagas.journal import SagaJournal
from mussikon.application.sagas.reservations import MusicianDays
from mussikon.application.sagas.services import SagaServices
from mussikon.application.sagas.steps import SagaDefinition
from mussikon.application.sagas.timeouts import ScheduledTimeout, TimeoutScheduler
from mussikon.config import Settings
from mussikon.ports.clock import Clock
from mussikon.ports.documents import DocumentStore
from mussikon.ports.notifier import Notifier
from mussikon.ports.payments import PaymentGateway
from mussikon.ports.transport import Subscription


class SagaRuntime:
    """Runs saga definitions: their events come through the transport's subscriptions, their
    timeouts through the scheduler this runtime starts and stops."""

    def __init__(self, documents: DocumentStore, clock: Clock,
                 definitions: Sequence[SagaDefinition], *, poll_interval: float = 0.05,
                 poll_max_interval: float = 1.0) -> None:
        self.journal = SagaJournal(documents)
        self.clock = clock
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
                       poll_max_interval=settings.poll_max_interval)
