"""The one place that knows the adapters: builds the application from Settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mussikon.adapters.clock import SystemClock
from mussikon.adapters.notifications import RecordingNotifier, SmtpNotifier
from mussikon.adapters.payments import SandboxGateway
from mussikon.application.handlers import Dependencies, subscriptions
from mussikon.application.inbox import idempotent
from mussikon.application.marketplace import Marketplace
from mussikon.application.projections.analytics import AnalyticsProjection, ProjectionAnalytics
from mussikon.application.projections.availability import Availability
from mussikon.application.projections.directory import Directory
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.application.repository import Repository
from mussikon.application.sagas.runtime import SagaRuntime, open_sagas
from mussikon.application.snapshots import Snapshots
from mussikon.config import Settings, mask_url
from mussikon.domain.events import DomainEvent
from mussikon.ports.analytics import Analytics
from mussikon.ports.clock import Clock
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.ports.notifier import Notifier
from mussikon.ports.payments import PaymentGateway
from mussikon.ports.polling import wait_until
from mussikon.ports.transport import Subscription, Transport
from mussikon.wire import EventCodec


class ConfigurationError(ValueError):
    """A setting names something that does not exist or cannot be used."""


async def open_stores(settings: Settings, codec: EventCodec) -> tuple[EventStore, DocumentStore]:
    """The event store and document store that `MUSSIKON_STORE_URL` names (one database)."""
    url = settings.store_url
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore

        return InMemoryEventStore(codec), InMemoryDocumentStore()
    if scheme == "sqlite":
        from mussikon.adapters.store.sqlite import (
            SqliteDatabase,
            SqliteDocumentStore,
            SqliteEventStore,
        )

        path = url.removeprefix("sqlite://").removeprefix("/") or "mussikon.db"
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        db = await SqliteDatabase(path, settings.sqlite_synchronous).open()
        return SqliteEventStore(db, codec), SqliteDocumentStore(db)
    if scheme in ("postgres", "postgresql"):
        from mussikon.adapters.store.postgres import open_postgres

        return await open_postgres(url, settings.postgres_schema, settings.postgres_pool_size,
                                   codec)
    raise ConfigurationError(
        f"MUSSIKON_STORE_URL {mask_url(url)!r}: use sqlite:///PATH, memory:// or postgresql://…")


def open_transport(settings: Settings, store: EventStore, documents: DocumentStore,
                   codec: EventCodec) -> Transport:
    """The transport that `MUSSIKON_BROKER_URL` names."""
    url = settings.broker_url
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from mussikon.adapters.messaging.memory import InProcessTransport

        return InProcessTransport(store, documents, codec, concurrency=settings.bus_concurrency,
                                  retry_delays=settings.retry_delays,
                                  poll_interval=settings.poll_interval,
                                  poll_max_interval=settings.poll_max_interval)
    if scheme in ("amqp", "amqps"):
        from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport

        return RabbitMqTransport(
            url, store, documents, codec, prefix=settings.rabbitmq_prefix,
            queue_type=settings.rabbitmq_queue_type, prefetch=settings.rabbitmq_prefetch,
            concurrency=settings.bus_concurrency, retry_delays=settings.retry_delays,
            delayed_retry_delays=settings.delayed_retry_delays,
            poll_interval=settings.poll_interval, poll_max_interval=settings.poll_max_interval)
    raise ConfigurationError(
        f"MUSSIKON_BROKER_URL {mask_url(url)!r}: use memory:// or amqp://user:pass@host:5672/")


@dataclass
class App:
    """Everything wired: stores, transport, read models, handlers."""

    settings: Settings
    codec: EventCodec
    store: EventStore
    documents: DocumentStore
    repository: Repository
    marketplace: Marketplace
    projections: ProjectionRunner
    transport: Transport
    notifier: Notifier
    analytics: Analytics
    gateway: PaymentGateway
    clock: Clock = field(default_factory=SystemClock)
    sagas: SagaRuntime | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    running: bool = False
    operating: bool = False

    async def start(self) -> None:
        """Run the read models and the handlers in the background."""
        await self.projections.start()
        await self.transport.start(self.subscriptions)
        if self.sagas is not None:
            await self.sagas.start()
        self.running = True

    async def open_for_operations(self) -> None:
        """Ready the transport's dead-letter tools for an operator's command, running nothing
        else: no relay, no consumer, no read model, no saga timeouts, so the command takes no
        message meant for the workers. On a transport that `replays_in_place`, `replay` runs
        the handlers in this process (their new events are delivered by whatever runs the
        transport next)."""
        await self.transport.open_for_operations(self.subscriptions)
        self.operating = True

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every committed event, including those handlers wrote meanwhile, is
        readable and was handled (on PostgreSQL a transaction still running elsewhere holds
        what is readable back: this waits for it)."""
        async def readable(position: int) -> None:
            async def reached() -> bool:
                return await self.store.head_position() >= position

            # Nothing to wake: the readers poll the store, and it is the commit that waits.
            await wait_until(reached, timeout, wake=lambda: None)

        async def quiet() -> None:
            while True:
                committed = await self.store.committed_position()
                await readable(committed)
                await self.projections.wait_idle(timeout)
                await self.transport.wait_idle(timeout)
                if self.sagas is not None:
                    await self.sagas.wait_idle(timeout)
                if await self.store.committed_position() == committed:
                    return

        await asyncio.wait_for(quiet(), timeout)

    def _saved(self, events: list[DomainEvent]) -> None:
        self.projections.wake()
        self.transport.wake()

    async def close(self) -> None:
        """Stop handlers (finishing those in flight) and close connections."""
        if self.running:
            if self.sagas is not None:
                await self.sagas.stop()
            await self.transport.stop()
            await self.projections.stop()
            self.running = False
        elif self.operating:
            await self.transport.stop()
            # A handler replayed here may have brought a read model up to date (and leased it).
            await self.projections.stop()
        self.operating = False
        await self.store.close()


async def open_app(settings: Settings | None = None, clock: Clock | None = None) -> App:
    """Build the application the settings describe (nothing runs until `start`); `clock` is
    the system clock unless given."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    codec = EventCodec()
    store, documents = await open_stores(settings, codec)
    repository = Repository(store, snapshots=Snapshots(documents, settings.snapshot_every))
    marketplace = Marketplace(repository, clock.now)
    read_models = [Directory(), Availability(), AnalyticsProjection()]
    projections = ProjectionRunner(store, documents, read_models,
                                   poll_interval=settings.poll_interval,
                                   poll_max_interval=settings.poll_max_interval)
    notifier: Notifier = (SmtpNotifier(settings.smtp_url, settings.mail_from, documents)
                          if settings.smtp_url else RecordingNotifier(documents))
    analytics = ProjectionAnalytics(documents)
    if settings.payment_gateway != "sandbox":
        raise ConfigurationError(
            f"MUSSIKON_PAYMENT_GATEWAY {settings.payment_gateway!r}: only 'sandbox' exists")
    gateway = SandboxGateway(documents)
    transport = open_transport(settings, store, documents, codec)
    app = App(settings, codec, store, documents, repository, marketplace, projections,
              transport, notifier, analytics, gateway, clock)
    repository.on_saved = app._saved
    deps = Dependencies(marketplace, repository, documents, notifier, analytics, gateway,
                        projections)
    app.subscriptions = [idempotent(s, documents) for s in subscriptions(deps)]
    app.sagas = open_sagas(settings, documents=documents, marketplace=marketplace,
                           repository=repository, notifier=notifier, gateway=gateway, clock=clock)
    # Not wrapped in the inbox: a saga records the messages it handled in its own state.
    app.subscriptions += app.sagas.subscriptions()
    return app
