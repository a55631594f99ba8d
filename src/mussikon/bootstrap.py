"""The one place that knows the adapters: builds the application from Settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from mussikon.adapters.clock import SystemClock
from mussikon.adapters.notifications import RecordingNotifier, SmtpNotifier
from mussikon.adapters.payments import SandboxGateway
from mussikon.application.handlers import Dependencies, subscriptions
from mussikon.application.inbox import idempotent
from mussikon.application.marketplace import Marketplace
from mussikon.application.projections.analytics import AnalyticsProjection, ProjectionAnalytics
from mussikon.application.projections.availability import Availability
from mussikon.application.projections.correlations import Correlations
from mussikon.application.projections.directory import Directory
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.application.repository import Repository
from mussikon.application.retention import InboxRetention
from mussikon.application.sagas.runtime import SagaRuntime, open_sagas
from mussikon.application.snapshots import Snapshots
from mussikon.config import (
    CosmosConnectionString,
    Settings,
    describe_broker,
    is_cosmos_connection_string,
    is_servicebus_connection_string,
    mask_url,
    split_brokers,
    split_urls,
)
from mussikon.domain.events import DomainEvent
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.followers.polling import wait_until
from mussikon.ports.analytics import Analytics
from mussikon.ports.clock import Clock
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore, StoreError
from mussikon.ports.feed import Feed
from mussikon.ports.notifier import Notifier
from mussikon.ports.payments import PaymentGateway
from mussikon.ports.transport import Subscription, Transport, TransportNotReady
from mussikon.wire import EventCodec


class ConfigurationError(ValueError):
    """A setting names something that does not exist or cannot be used: the message names
    the setting (`MUSSIKON_*`)."""


def sqlite_path(url: str) -> str:
    """The file a `sqlite:` URL names, read as SQLAlchemy reads it: `sqlite:///x.db` is
    `x.db` in the current directory, `sqlite:////tmp/x.db` is `/tmp/x.db`."""
    path = url.removeprefix("sqlite://").removeprefix("/") or "mussikon.db"
    if url.startswith("sqlite:////"):
        path = "/" + path.lstrip("/")
    return path


def _sqlite_hint(url: str, path: str) -> str:
    """For a relative path that looks meant as absolute (`sqlite:///tmp/x.db`), how to write
    the absolute one."""
    if Path(path).is_absolute() or path.startswith("."):
        return ""
    return (f"; sqlite:/// is followed by a path relative to the current directory, an "
            f"absolute path takes four slashes: sqlite:////{path}")


async def open_stores(settings: Settings, codec: EventCodec, *,
                      read_only: bool = False) -> tuple[EventStore, DocumentStore]:
    """The event store and document store that `MUSSIKON_STORE_URL` names (one database).

    `read_only`: open an existing store for reading, creating and migrating nothing (a
    ConfigurationError if there is none, or if it needs migrating).
    """
    url = settings.store_url
    if is_cosmos_connection_string(url):
        return await _open_cosmos(settings, codec)
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore

        return InMemoryEventStore(codec), InMemoryDocumentStore()
    if scheme == "sqlite":
        return await _open_sqlite(settings, codec, read_only)
    if scheme in ("postgres", "postgresql"):
        return await _open_postgres(settings, codec, read_only)
    raise ConfigurationError(
        f"MUSSIKON_STORE_URL {mask_url(url)!r}: use sqlite:///PATH, memory://, postgresql://… "
        "or AccountEndpoint=https://…;AccountKey=…;")


async def _open_cosmos(settings: Settings,
                       codec: EventCodec) -> tuple[EventStore, DocumentStore]:
    """The Cosmos DB stores (the optional extra `cosmos`). They keep no global order: the
    readers of every stream read their change feed (`open_feed`, docs/cosmos.md)."""
    try:
        from mussikon.adapters.store.cosmos.account import open_account
        from mussikon.adapters.store.cosmos.documents import CosmosDocumentStore
        from mussikon.adapters.store.cosmos.events import CosmosEventStore
    except ImportError:
        raise ConfigurationError("MUSSIKON_STORE_URL names Cosmos DB: install the extra "
                                 "(pip install 'mussikon[cosmos]')") from None
    connection = CosmosConnectionString.parse(settings.store_url)
    account = await open_account(
        connection.endpoint, connection.key, database=settings.cosmos_database,
        events_container=settings.cosmos_container,
        documents_container=settings.cosmos_documents_container,
        verify_tls=settings.cosmos_verify_tls)
    return CosmosEventStore(account, codec), CosmosDocumentStore(account)


async def _open_sqlite(settings: Settings, codec: EventCodec,
                       read_only: bool) -> tuple[EventStore, DocumentStore]:
    from mussikon.adapters.store.sqlite import (
        MIGRATIONS,
        SqliteDatabase,
        SqliteDocumentStore,
        SqliteEventStore,
    )

    url = settings.store_url
    path = _sqlite_file(url, read_only)
    db = SqliteDatabase(path, settings.sqlite_synchronous, read_only=read_only)
    async with _naming_store_url(url, closing=db.close):
        await db.open()
        if read_only:
            _check_readable(await db.schema_version(), len(MIGRATIONS),
                            f"{path} (MUSSIKON_STORE_URL)")
    return SqliteEventStore(db, codec), SqliteDocumentStore(db)


def _sqlite_file(url: str, read_only: bool) -> str:
    """The absolute path of the file the URL names, which must exist if `read_only`, and whose
    directory must exist (it is never made: a typo would go unseen)."""
    path = sqlite_path(url)
    if path == ":memory:":
        return path
    absolute = Path(path).absolute()
    if read_only and not absolute.is_file():
        raise ConfigurationError(f"no store at {absolute} (MUSSIKON_STORE_URL"
                                 f"{_sqlite_hint(url, path)})")
    if not absolute.parent.is_dir():
        raise ConfigurationError(f"MUSSIKON_STORE_URL {url!r}: no directory {absolute.parent}"
                                 f"{_sqlite_hint(url, path)}")
    return str(absolute)


async def _open_postgres(settings: Settings, codec: EventCodec,
                         read_only: bool) -> tuple[EventStore, DocumentStore]:
    from mussikon.adapters.store.postgres import MIGRATIONS, open_postgres

    url, schema = settings.store_url, settings.postgres_schema
    async with _naming_store_url(url):
        store, documents = await open_postgres(
            url, schema, settings.postgres_pool_size, codec, read_only=read_only,
            statement_timeout=settings.postgres_statement_timeout,
            lock_timeout=settings.postgres_lock_timeout)
    if read_only:
        async with _naming_store_url(url, closing=store.close):
            _check_readable(await store.db.schema_version(), len(MIGRATIONS),
                            f"{mask_url(url)} in schema {schema!r} (MUSSIKON_STORE_URL, "
                            "MUSSIKON_POSTGRES_SCHEMA)")
    return store, documents


def _check_readable(version: int, latest: int, where: str) -> None:
    if version == 0:
        raise ConfigurationError(f"no store at {where}")
    if version < latest:
        raise ConfigurationError(f"the store at {where} has schema version {version} of "
                                 f"{latest}: migrate it first (mussikon db migrate)")


@asynccontextmanager
async def _naming_store_url(url: str, *, closing: Callable[[], Awaitable[None]] | None = None
                            ) -> AsyncIterator[None]:
    """`async with`: a failure to open the store comes out as a ConfigurationError naming
    MUSSIKON_STORE_URL (ValueError included: asyncpg's for a URL it cannot read), after
    `closing` what was opened."""
    try:
        yield
    except BaseException as exc:
        if closing is not None:
            await closing()
        if isinstance(exc, ConfigurationError) or not isinstance(exc, OSError | StoreError
                                                                  | ValueError):
            raise
        raise ConfigurationError(f"MUSSIKON_STORE_URL {mask_url(url)!r}: {exc}") from exc


def open_feed(store: EventStore, documents: DocumentStore) -> Feed:
    """What the readers of every stream read: the store's global order, or on Cosmos DB (no
    global order) the change feed of its events container."""
    if type(store).__name__ == "CosmosEventStore":
        from mussikon.adapters.store.cosmos.events import CosmosEventStore
        from mussikon.adapters.store.cosmos.feed import CosmosFeed

        assert isinstance(store, CosmosEventStore)
        return CosmosFeed(store, documents)
    return GlobalOrderFeed(store, documents)


def open_transport(settings: Settings, store: EventStore, documents: DocumentStore,
                   codec: EventCodec, feed: Feed | None = None) -> Transport:
    """The transport that `MUSSIKON_BROKER_URL` names: one broker's, or one over several;
    its relays and subscriptions read `feed` (by default `open_feed`)."""
    url = settings.broker_url
    brokers = split_brokers(url)
    feed = feed if feed is not None else open_feed(store, documents)
    if len(brokers) == 1:
        return _broker_transport(settings, brokers[0], store, documents, codec, feed)
    from mussikon.adapters.messaging.brokers import Broker, SeveralBrokers

    def broker(one: str) -> Broker:
        if not is_servicebus_connection_string(one) \
                and urlsplit(one).scheme not in ("amqp", "amqps"):
            raise ConfigurationError(
                f"MUSSIKON_BROKER_URL {mask_url(url)!r}: a list names the brokers of one bus: "
                "amqp:// URLs (the nodes of one RabbitMQ cluster) and Service Bus connection "
                "strings")
        return Broker(describe_broker(one),
                      lambda: _broker_transport(settings, one, store, documents, codec, feed))

    if sum(is_servicebus_connection_string(one) for one in brokers) > 1:
        raise ConfigurationError(f"MUSSIKON_BROKER_URL {mask_url(url)!r}: one Service Bus "
                                 "namespace at most")
    return SeveralBrokers([broker(one) for one in brokers])


def _broker_transport(settings: Settings, url: str, store: EventStore,
                      documents: DocumentStore, codec: EventCodec, feed: Feed) -> Transport:
    """The transport of one broker: `url` is one of `split_brokers(MUSSIKON_BROKER_URL)`."""
    schemes = {urlsplit(one).scheme for one in split_urls(url)}
    scheme = schemes.pop() if len(schemes) == 1 else ""
    if scheme == "memory" and len(split_urls(url)) > 1:
        raise ConfigurationError(f"MUSSIKON_BROKER_URL {mask_url(url)!r}: a list of URLs names "
                                 "the nodes of one RabbitMQ cluster (amqp:// URLs only)")
    if scheme == "memory":
        from mussikon.adapters.messaging.memory import InProcessTransport

        return InProcessTransport(store, documents, codec, concurrency=settings.bus_concurrency,
                                  retry_delays=settings.retry_delays,
                                  poll_interval=settings.poll_interval,
                                  poll_max_interval=settings.poll_max_interval,
                                  stop_grace=settings.stop_grace, feed=feed)
    if scheme in ("amqp", "amqps"):
        from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport

        return RabbitMqTransport(
            url, store, documents, codec, prefix=settings.rabbitmq_prefix,
            events_exchange=settings.rabbitmq_events_exchange,
            queue_type=settings.rabbitmq_queue_type, prefetch=settings.rabbitmq_prefetch,
            max_in_flight=settings.rabbitmq_max_in_flight,
            concurrency=settings.bus_concurrency, retry_delays=settings.retry_delays,
            delayed_retry_delays=settings.delayed_retry_delays,
            poll_interval=settings.poll_interval, poll_max_interval=settings.poll_max_interval,
            lease_seconds=settings.lease_seconds,
            connect_timeout=settings.broker_connect_timeout, timeout=settings.broker_timeout,
            stop_grace=settings.stop_grace, prerequisite_wait=settings.prerequisite_wait,
            dead_letter_interval=settings.rabbitmq_dead_letter_interval, feed=feed)
    if is_servicebus_connection_string(url):
        from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport

        return ServiceBusTransport(
            url, store, documents, codec, topic=settings.servicebus_topic,
            prefetch=settings.servicebus_prefetch, concurrency=settings.bus_concurrency,
            retry_delays=settings.retry_delays,
            delayed_retry_delays=settings.servicebus_delayed_retry_delays,
            lock_renewal=settings.servicebus_lock_renewal, lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval, poll_max_interval=settings.poll_max_interval,
            timeout=settings.broker_timeout, stop_grace=settings.stop_grace,
            prerequisite_wait=settings.prerequisite_wait, feed=feed)
    raise ConfigurationError(
        f"MUSSIKON_BROKER_URL {mask_url(url)!r}: use memory://, amqp://user:pass@host:5672/ (or "
        "a comma-separated list of amqp:// URLs, the nodes of one cluster), a Service Bus "
        "connection string (Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…), or both, "
        "comma-separated, for one bus over both brokers")


async def provision_broker(settings: Settings, report: Callable[[str], None]) -> int | None:
    """Create the entities each broker `MUSSIKON_BROKER_URL` names needs, or bring them to
    what is needed, calling `report` with one line per thing done or found. On Service Bus:
    the topic, one subscription per subscription of ours, and their rules; on RabbitMQ: its
    exchanges and queues, declared (which keeps what exists, as the worker does at every
    connect). The number of changes made on Service Bus, or None without Service Bus (what a
    declaration changed cannot be told)."""
    changes: int | None = None
    for one in split_brokers(settings.broker_url):
        schemes = {urlsplit(url).scheme for url in split_urls(one)}
        if is_servicebus_connection_string(one):
            changes = await _provision_servicebus(settings, one, report)
        elif schemes == {"memory"}:
            report("memory://: the in-process transport has no broker: nothing to provision")
        elif schemes <= {"amqp", "amqps"}:
            await _declare_rabbitmq_topology(settings.model_copy(update={"broker_url": one}),
                                             report)
        else:
            raise ConfigurationError(f"MUSSIKON_BROKER_URL {mask_url(one)!r}: not a broker URL "
                                     "(memory://, amqp://… or a Service Bus connection string)")
    return changes


async def _provision_servicebus(settings: Settings, connection: str,
                                report: Callable[[str], None]) -> int:
    from mussikon.adapters.messaging.servicebus.entities import subscription_rules
    from mussikon.adapters.messaging.servicebus.provisioning import (
        EntitySettings,
        ProvisioningError,
        provision,
    )

    app = await open_app(settings.model_copy(update={"store_url": "memory://",
                                                     "broker_url": "memory://"}))
    try:
        rules = subscription_rules(app.subscriptions, app.codec.event_types)
    finally:
        await app.close()
    entities = EntitySettings(
        max_delivery_count=settings.servicebus_max_delivery_count,
        lock_duration=timedelta(seconds=settings.servicebus_lock_duration),
        duplicate_detection_window=timedelta(
            seconds=settings.servicebus_duplicate_detection_window))
    try:
        return await provision(connection, settings.servicebus_topic, rules, report, entities,
                               timeout=settings.broker_timeout)
    except ProvisioningError as exc:
        raise ConfigurationError(f"MUSSIKON_BROKER_URL: {exc}") from None


async def _declare_rabbitmq_topology(settings: Settings, report: Callable[[str], None]) -> None:
    from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport

    app = await open_app(settings.model_copy(update={"store_url": "memory://"}))
    try:
        transport = app.transport
        assert isinstance(transport, RabbitMqTransport)
        await app.open_for_operations()  # connects, which declares the topology
        topology = transport.topology
        for exchange in topology.exchanges():
            report(f"declared exchange {exchange.name} ({exchange.type})")
        for queue in topology.queues():
            keys = len(queue.bindings)
            bound = f", bound by {keys} key{'s' if keys != 1 else ''}" if keys else ""
            report(f"declared queue {queue.name}{bound}")
    finally:
        await app.close()
    report(f"{mask_url(settings.broker_url)}: declared (RabbitMQ keeps what exists; the worker "
           "declares the same at every connect)")


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
    retention: InboxRetention | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    running: bool = False
    operating: bool = False
    feed: Feed | None = None
    """What the readers of every stream read (None: the store's global order)."""

    async def start(self) -> None:
        """Run the read models and the handlers in the background."""
        await self.projections.start()
        try:
            await self.transport.start(self.subscriptions)
        except BaseException as exc:
            await self.projections.stop()
            if isinstance(exc, ConnectionError | TransportNotReady):
                raise _naming_broker_url(exc) from exc
            raise
        if self.sagas is not None:
            await self.sagas.start()
        if self.retention is not None:
            await self.retention.start()
        self.running = True

    async def open_for_operations(self) -> None:
        """Ready the transport's dead-letter tools for an operator's command, running nothing
        else: no relay, no consumer, no read model, no saga timeouts, so the command takes no
        message meant for the workers. On a transport that `replays_in_place`, `replay` runs
        the handlers in this process (their new events are delivered by whatever runs the
        transport next)."""
        try:
            await self.transport.open_for_operations(self.subscriptions)
        except ConnectionError as exc:
            raise _naming_broker_url(exc) from exc
        self.operating = True

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every committed event, including those handlers wrote meanwhile, is
        readable and was handled (on PostgreSQL a transaction still running elsewhere holds
        what is readable back: this waits for it)."""
        feed = self.feed if self.feed is not None else GlobalOrderFeed(self.store,
                                                                       self.documents)

        async def readable(head: str) -> None:
            async def reached() -> bool:
                return await feed.readable(head)

            # Nothing to wake: the readers poll the store, and it is the commit that waits.
            await wait_until(reached, timeout, wake=lambda: None)

        async def quiet() -> None:
            while True:
                head = await feed.head()
                await readable(head)
                await self.projections.wait_idle(timeout)
                await self.transport.wait_idle(timeout)
                if self.sagas is not None:
                    await self.sagas.wait_idle(timeout)
                if await feed.head() == head:
                    return

        await asyncio.wait_for(quiet(), timeout)

    def _saved(self, events: list[DomainEvent]) -> None:
        self.projections.wake()
        self.transport.wake()

    async def close(self) -> None:
        """Stop handlers (finishing those in flight, within MUSSIKON_STOP_GRACE seconds: those
        still running then are cancelled, their messages delivered again) and close
        connections."""
        if self.running:
            if self.retention is not None:
                await self.retention.stop()
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


def _naming_broker_url(exc: ConnectionError | TransportNotReady) -> ConfigurationError:
    """The broker could not be reached, or lacks its entities: an error naming
    MUSSIKON_BROKER_URL (the transport's message names the URL, its password masked)."""
    return ConfigurationError(f"MUSSIKON_BROKER_URL: {exc}")


def open_notifier(settings: Settings, documents: DocumentStore) -> Notifier:
    """The SMTP notifier `MUSSIKON_SMTP_URL` names, or the recording one if it is empty."""
    if not settings.smtp_url:
        return RecordingNotifier(documents)
    try:
        return SmtpNotifier(settings.smtp_url, settings.mail_from, documents,
                            timeout=settings.smtp_timeout)
    except ValueError as exc:  # its message never holds the password
        raise ConfigurationError(f"MUSSIKON_SMTP_URL {mask_url(settings.smtp_url)!r}: {exc}")\
            from None


async def open_app(settings: Settings | None = None, clock: Clock | None = None, *,
                   read_only: bool = False) -> App:
    """Build the application the settings describe (nothing runs until `start`); `clock` is
    the system clock unless given. `read_only`: on a store that exists already, which the
    application only reads (see `open_stores`)."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    if settings.payment_gateway != "sandbox":
        raise ConfigurationError(
            f"MUSSIKON_PAYMENT_GATEWAY {settings.payment_gateway!r}: only 'sandbox' exists")
    codec = EventCodec()
    store, documents = await open_stores(settings, codec, read_only=read_only)
    try:
        return _wire(settings, clock, codec, store, documents)
    except BaseException:
        await store.close()
        raise


def _wire(settings: Settings, clock: Clock, codec: EventCodec, store: EventStore,
          documents: DocumentStore) -> App:
    repository = Repository(store, snapshots=Snapshots(documents, settings.snapshot_every))
    marketplace = Marketplace(repository, clock.now)
    read_models = [Directory(), Availability(), AnalyticsProjection(), Correlations()]
    feed = open_feed(store, documents)
    projections = ProjectionRunner(store, documents, read_models,
                                   poll_interval=settings.poll_interval,
                                   poll_max_interval=settings.poll_max_interval,
                                   lease_seconds=settings.lease_seconds, feed=feed)
    notifier = open_notifier(settings, documents)
    analytics = ProjectionAnalytics(documents)
    gateway = SandboxGateway(documents)
    transport = open_transport(settings, store, documents, codec, feed)
    app = App(settings, codec, store, documents, repository, marketplace, projections,
              transport, notifier, analytics, gateway, clock,
              retention=InboxRetention(documents, settings.inbox_retention,
                                       lease_seconds=settings.lease_seconds), feed=feed)
    repository.on_saved = app._saved
    deps = Dependencies(marketplace, repository, documents, notifier, analytics, gateway,
                        projections)
    app.subscriptions = [idempotent(s, documents) for s in subscriptions(deps)]
    app.sagas = open_sagas(settings, documents=documents, marketplace=marketplace,
                           repository=repository, notifier=notifier, gateway=gateway, clock=clock)
    # Not wrapped in the inbox: a saga records the messages it handled in its own state.
    app.subscriptions += app.sagas.subscriptions()
    return app
