"""Settings: one object, read from the environment (`MUSSIKON_*`) or a `.env` file.

The defaults run everything embedded (SQLite, in-process bus, notifications logged
and recorded): no server needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_EXCHANGE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
"""What AMQP 0-9-1 allows in an exchange name."""

LOG_FORMATS = ("human", "json")
"""The values of `MUSSIKON_LOG_FORMAT` (in any case)."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The values of `MUSSIKON_LOG_LEVEL` (in any case)."""

INBOX_RETENTION_DEFAULT = timedelta(days=7)
INBOX_RETENTION_MINIMUM = timedelta(seconds=10)


class Settings(BaseSettings):
    """Everything configurable, with the embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="MUSSIKON_", env_file=".env", extra="ignore")

    store_url: str = Field("sqlite:///./mussikon.db",
                           description="Event store: sqlite:///PATH, memory://, postgresql://… "
                                       "or a Cosmos DB connection string "
                                       "(AccountEndpoint=https://…;AccountKey=…;)")
    cosmos_database: str = Field("MussikOn", min_length=1, max_length=255,
                                 description="Cosmos DB database of the stores")
    cosmos_container: str = Field("Events", min_length=1, max_length=255,
                                  description="Cosmos DB container of the events (the "
                                              "specification's, shared with the .NET services)")
    cosmos_documents_container: str = Field(
        "MussikOnDocuments", min_length=1, max_length=255,
        description="Cosmos DB container of the read models, checkpoints, inboxes and leases")
    cosmos_verify_tls: bool = Field(True, description="Verify the Cosmos DB endpoint's TLS "
                                                      "certificate (false only for a local "
                                                      "test server)")
    demo_store_url: str = Field("", description="Store of `mussikon demo`; empty: its own "
                                                "beside MUSSIKON_STORE_URL")
    broker_url: str = Field("memory://", description="Transport: memory://, amqp://…, a "
                                                     "comma-separated list of amqp:// URLs (the "
                                                     "nodes of one cluster) or a Service Bus "
                                                     "connection string")
    sqlite_synchronous: str = Field("FULL", description="SQLite durability: FULL or NORMAL")
    postgres_schema: str = Field("mussikon", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                                 description="PostgreSQL schema holding the tables")
    postgres_pool_size: int = Field(10, ge=1, le=200)
    postgres_statement_timeout: float = Field(
        30.0, gt=0, description="Seconds a PostgreSQL statement may run before the server "
                                "cancels it (and the operation fails, to be retried)")
    postgres_lock_timeout: float = Field(
        10.0, gt=0, description="Seconds a PostgreSQL statement may wait for a lock another "
                                "connection holds before it fails")
    smtp_url: str = Field("", description="smtp://user:pass@host:port; empty: log and record")
    smtp_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the SMTP server "
                                                        "to connect and to answer each command")
    mail_from: str = Field("MussikOn <no-reply@mussikon.example>")
    broker_connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the "
                                                                  "broker to accept a connection")
    broker_timeout: float = Field(
        30.0, gt=0, description="Seconds the broker may take to answer an operation (open a "
                                "channel, declare, consume, confirm a publish); then the "
                                "connection is dropped and opened again")
    stop_grace: float = Field(
        30.0, ge=0, description="Seconds a stopping worker waits for the handlers running; "
                                "those still running are then cancelled, their messages "
                                "delivered again later")
    bus_concurrency: int = Field(8, ge=1, le=1000, description="Handlers running at once, per "
                                                              "subscription")
    bus_retry_delays: str = Field("0.05,0.25,1.0", description="Seconds between in-process "
                                                               "retries, then dead letter")
    poll_interval: float = Field(0.05, gt=0, description="Catch-up polling: first interval (s)")
    poll_max_interval: float = Field(1.0, gt=0, description="Catch-up polling: longest interval")
    lease_seconds: float = Field(10.0, gt=0, description="Seconds a worker that died holds on "
                                                         "to the read models and the outbox "
                                                         "relay before another takes over")
    rabbitmq_prefix: str = Field("", description="Prefix of every exchange and queue name "
                                                 "(not of a named events exchange)")
    rabbitmq_events_exchange: str = Field(
        "", description="Events exchange shared with the other services, by its full name; "
                        "empty: <prefix>mussikon.events")
    rabbitmq_queue_type: Literal["quorum", "classic"] = Field(
        "quorum", description="Queue type: quorum (replicated, poison-safe) or classic")
    rabbitmq_prefetch: int = Field(100, ge=1, le=65535, description="Unacknowledged messages "
                                                                   "per consumer")
    rabbitmq_max_in_flight: int = Field(
        300, ge=1, le=1_000_000, description="Unacknowledged messages a worker holds in all, "
                                             "shared as the prefetch of the queues it consumes "
                                             "(at least 1 each)")
    rabbitmq_retry_delays: str = Field("1,10,60", description="Seconds of the delayed retries "
                                                              "through TTL queues")
    rabbitmq_dead_letter_interval: float = Field(
        5.0, gt=0, description="Seconds between the moves of the dead-letter queue into the "
                               "store that a worker makes (one worker at a time)")
    servicebus_topic: str = Field(
        "mussikon-events", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,259}$",
        description="Service Bus topic the events are published to and read from")
    servicebus_prefetch: int = Field(100, ge=0, le=10000, description="Service Bus messages "
                                                                    "received ahead, per "
                                                                    "subscription")
    servicebus_retry_delays: str = Field("1,10,60", description="Seconds of the delayed "
                                                                "retries (scheduled messages)")
    servicebus_max_delivery_count: int = Field(
        10, ge=1, le=2000, description="`mussikon broker provision`: deliveries of a message "
                                       "before Service Bus dead-letters it unsettled (one that "
                                       "kills its consumer)")
    servicebus_lock_duration: float = Field(
        60.0, ge=5, le=300, description="`mussikon broker provision`: seconds a received "
                                        "message stays locked before the consumer renews it "
                                        "(a crashed worker's messages come back after this)")
    servicebus_duplicate_detection_window: float = Field(
        600.0, ge=20, le=7 * 86400, description="`mussikon broker provision`: seconds the "
                                                "topic remembers a MessageId, to drop a "
                                                "re-publish")
    servicebus_lock_renewal: float = Field(
        300.0, ge=0, description="Seconds a running handler's message lock is renewed for, at "
                                 "most")
    prerequisite_wait: float = Field(
        600.0, gt=0, description="Seconds an event from another service may wait for what it "
                                 "presupposes (an application its gig) before it is "
                                 "dead-lettered")
    payment_gateway: str = Field("sandbox", description="Payment gateway adapter")
    snapshot_every: int = Field(50, ge=0, description="Snapshot an aggregate every N events")
    saga_signature_timeout: timedelta = Field(
        timedelta(hours=48), gt=timedelta(0),
        description="Booking saga: time both parties have to sign (seconds or ISO 8601, PT48H)")
    saga_payment_retries: int = Field(2, ge=0, le=20, description="Booking saga: retries of a "
                                                                   "declined initial payment")
    saga_payment_retry_delay: timedelta = Field(
        timedelta(hours=1), gt=timedelta(0),
        description="Booking saga: wait before retrying a declined payment")
    inbox_retention: timedelta = Field(
        INBOX_RETENTION_DEFAULT,
        description="How long a handled message id is kept in the inbox (seconds or ISO 8601, "
                    "P7D); longer than any delay before a message is delivered again")
    log_level: str = Field("WARNING", description="Log level of the command line")
    log_format: str = Field("human", description="Log lines for people (human) or one JSON "
                                                 "object per line (json)")
    api_secret: SecretStr = Field(
        SecretStr(""), description="Key signing the HTTP API's tokens (JWT, HS256); empty: one "
                                   "generated once and kept in the document store")
    api_token_ttl: int = Field(3600, ge=60, le=7 * 24 * 3600,
                               description="Seconds an HTTP API token is valid")
    api_max_body: int = Field(65536, ge=1024, le=64 * 1024 * 1024,
                              description="Largest HTTP API request body, in bytes (then 413)")
    metrics_port: int = Field(0, ge=0, le=65535, description="`mussikon worker`: TCP port "
                                                             "serving `/metrics` (0: none)")
    metrics_host: str = Field("127.0.0.1", pattern=r"^[A-Za-z0-9.:-]+$",
                              description="`mussikon worker`: address the metrics port is "
                                          "bound to (0.0.0.0: every interface)")

    @field_validator("broker_url")
    @classmethod
    def _connection_string_is_whole(cls, value: str) -> str:
        for one in split_urls(value):
            if is_servicebus_connection_string(one):
                ServiceBusConnectionString.parse(one)
        return value

    @field_validator("store_url")
    @classmethod
    def _cosmos_string_is_whole(cls, value: str) -> str:
        if is_cosmos_connection_string(value):
            CosmosConnectionString.parse(value)
        return value

    @field_validator("bus_retry_delays", "rabbitmq_retry_delays", "servicebus_retry_delays")
    @classmethod
    def _delays_are_numbers(cls, value: str) -> str:
        try:
            delays = [float(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise ValueError("must be comma-separated seconds") from None
        if any(d < 0 for d in delays):
            raise ValueError("must not be negative")
        return value

    @field_validator("lease_seconds")
    @classmethod
    def _lease_outlasts_polling(cls, value: float, info: ValidationInfo) -> float:
        # A holder renews its lease at its first poll after a third of the term, so at the
        # latest a third of the term plus the longest poll interval after the last renewal.
        longest_poll = info.data.get("poll_max_interval")
        if longest_poll is not None and value < 2 * longest_poll:
            raise ValueError(f"must be at least 2 x MUSSIKON_POLL_MAX_INTERVAL "
                             f"({2 * longest_poll:g} s), so a worker renews its leases in time")
        return value

    @field_validator("sqlite_synchronous")
    @classmethod
    def _synchronous_is_known(cls, value: str) -> str:
        if value.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("must be OFF, NORMAL, FULL or EXTRA")
        return value.upper()

    @field_validator("mail_from")
    @classmethod
    def _one_address(cls, value: str) -> str:
        if "@" not in value or any(c in value for c in "\r\n"):
            raise ValueError("must be one email address, as `Name <name@example.com>`")
        return value

    @field_validator("rabbitmq_events_exchange")
    @classmethod
    def _exchange_name(cls, value: str) -> str:
        if value and not _EXCHANGE_NAME.fullmatch(value):
            raise ValueError("must be an exchange name: up to 255 letters, digits, '-', '_', "
                             "'.' or ':'")
        if value.startswith("amq."):
            raise ValueError("names starting with 'amq.' are the broker's own")
        return value

    @field_validator("log_level")
    @classmethod
    def _level_is_known(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _format_is_known(cls, value: str) -> str:
        if value.strip().lower() not in LOG_FORMATS:
            raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
        return value.strip().lower()

    @field_validator("api_secret")
    @classmethod
    def _secret_is_long(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (or empty: one is generated)")
        return value

    @field_validator("inbox_retention")
    @classmethod
    def _retention_outlasts_redelivery(cls, value: timedelta) -> timedelta:
        if value < INBOX_RETENTION_MINIMUM:
            raise ValueError(f"must be at least {INBOX_RETENTION_MINIMUM.total_seconds():g} s "
                             "(PT10S); it must outlast any redelivery delay (README)")
        return value

    @field_validator("saga_signature_timeout", "saga_payment_retry_delay", "inbox_retention",
                     mode="before")
    @classmethod
    def _seconds_as_text(cls, value: object) -> object:
        # The environment gives text: "30" means seconds, as a number would.
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """The in-process retry delays, in seconds."""
        return tuple(float(x) for x in self.bus_retry_delays.split(",") if x.strip())

    @property
    def delayed_retry_delays(self) -> tuple[float, ...]:
        """The broker's delayed retry delays, in seconds."""
        return tuple(float(x) for x in self.rabbitmq_retry_delays.split(",") if x.strip())

    @property
    def servicebus_delayed_retry_delays(self) -> tuple[float, ...]:
        """Service Bus's delayed retry delays (scheduled messages), in seconds."""
        return tuple(float(x) for x in self.servicebus_retry_delays.split(",") if x.strip())


class SettingsError(ValueError):
    """A `MUSSIKON_*` variable (or its line in `.env`) holds a value that cannot be used; the
    message names the variable."""


def load_settings() -> Settings:
    """The settings of the environment and `.env`; a SettingsError names every variable at
    fault, in one line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_invalid_settings(exc)) from None


_SECRET_SETTINGS = frozenset({"api_secret"})
"""Settings whose value is never shown, even when it is refused."""


def describe_invalid_settings(error: ValidationError) -> str:
    """One line naming each `MUSSIKON_*` variable that Settings refused, its value (passwords
    masked) and why."""
    prefix = Settings.model_config.get("env_prefix", "")
    parts = []
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"])
        reason = problem["msg"].removeprefix("Value error, ")
        value = problem.get("input")
        secret = name in _SECRET_SETTINGS
        shown = f"={mask_url(value)!r}" if isinstance(value, str) and not secret else ""
        parts.append(f"{prefix}{name.upper()}{shown}: {reason}")
    return "; ".join(parts)


_NEXT_URL = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://|(?i:endpoint\s*=))")
"""A comma that starts another URL (one followed by `scheme://`) or a Service Bus connection
string (`Endpoint=`): a comma elsewhere, as in a password or PostgreSQL's `host1,host2`,
stays inside its URL."""


def split_urls(value: str) -> list[str]:
    """The URLs of a comma-separated list (the nodes of one RabbitMQ cluster, and Service Bus
    connection strings), in order; a single URL is a list of one."""
    return [url for url in _NEXT_URL.split(value.strip()) if url]


def split_brokers(value: str) -> list[str]:
    """The brokers `MUSSIKON_BROKER_URL` names, each as its own setting would be: the
    `amqp://` URLs together (the nodes of one RabbitMQ cluster, comma-separated), in the place
    of the first, and each Service Bus connection string alone."""
    brokers: list[str] = []
    nodes: list[str] = []
    for url in split_urls(value):
        if is_servicebus_connection_string(url):
            brokers.append(url)
        else:
            if not nodes:
                brokers.append("")
            nodes.append(url)
    return [broker or ",".join(nodes) for broker in brokers]


def describe_broker(url: str) -> str:
    """One broker of `split_brokers` as people name it, without secrets: `RabbitMQ amqp://…`
    (password masked), `Service Bus sb://HOST` (its endpoint alone), or the masked URL."""
    if is_servicebus_connection_string(url):
        try:
            connection = ServiceBusConnectionString.parse(url)
        except ValueError:
            return f"Service Bus {mask_url(url)}"
        port = f":{connection.port}" if connection.port else ""
        return f"Service Bus sb://{connection.host}{port}"
    if urlsplit(url).scheme in ("amqp", "amqps"):
        return f"RabbitMQ {mask_url(url)}"
    return mask_url(url)


def mask_url(url: str) -> str:
    """The URL (or comma-separated list of URLs) with each password replaced by `***`, for
    logs and errors (a Service Bus connection string: its key)."""
    if is_cosmos_connection_string(url):
        return ";".join(_masked_part(part) for part in url.split(";"))
    urls = split_urls(url)
    if len(urls) > 1:
        return ",".join(mask_url(one) for one in urls)
    if is_servicebus_connection_string(url):
        return ";".join(_masked_part(part) for part in url.split(";"))
    return _mask_one(url)


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


_SHOWN_PARTS = frozenset({"endpoint", "accountendpoint", "sharedaccesskeyname", "entitypath",
                          "usedevelopmentemulator", "transporttype"})


_KNOWN_PARTS = _SHOWN_PARTS | {"sharedaccesskey", "sharedaccesssignature", "accountkey"}
"""The keys of the connection strings read here: any other name could be a key cut loose
(a base64 key ends in `=`), so it is not shown."""


def _masked_part(part: str) -> str:
    """One `KEY=VALUE` of a connection string as logs show it: the value as `***` unless the
    key is known to hold nothing secret, and the whole part as `***` if the key is not one of
    the known names (it could be a key cut loose)."""
    key, equals, _ = part.partition("=")
    name = key.strip()
    if not part.strip() or (equals and name.lower() in _SHOWN_PARTS):
        return part
    return f"{key}=***" if equals and name.lower() in _KNOWN_PARTS else "***"


def is_servicebus_connection_string(value: str) -> bool:
    """True if `value` is written as a Service Bus connection string (`Endpoint=sb://…;…`),
    well formed or not."""
    return value.lstrip().lower().startswith("endpoint=")


@dataclass(frozen=True, slots=True)
class ServiceBusConnectionString:
    """A Service Bus connection string, as .NET's `GetConnectionString("ServiceBus")` gives it:
    `Endpoint=sb://NAMESPACE.servicebus.windows.net/;SharedAccessKeyName=NAME;
    SharedAccessKey=KEY`, with `;UseDevelopmentEmulator=true` for a local emulator (plain TCP).
    Its text form (`str`) masks the key."""

    value: str
    host: str
    port: int | None
    key_name: str
    emulator: bool

    def __str__(self) -> str:
        return mask_url(self.value)

    @classmethod
    def parse(cls, value: str) -> ServiceBusConnectionString:
        """Read one; ValueError saying what is wrong (never the key) otherwise."""
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            key, equals, item = part.partition("=")
            if not equals or not key.strip():
                raise ValueError("the Service Bus connection string has a part that is not "
                                 "KEY=VALUE (parts are separated by ';')")
            pairs[key.strip().lower()] = item.strip()
        endpoint = urlsplit(pairs.get("endpoint", ""))
        if endpoint.scheme != "sb" or not endpoint.hostname:
            raise ValueError("the Service Bus connection string needs Endpoint=sb://HOST[:PORT]/")
        try:
            port = endpoint.port
        except ValueError:
            raise ValueError("the Service Bus endpoint's port is not a number") from None
        if "sharedaccesssignature" not in pairs:
            for needed in ("SharedAccessKeyName", "SharedAccessKey"):
                if not pairs.get(needed.lower()):
                    raise ValueError(f"the Service Bus connection string needs {needed}=…")
        emulator = pairs.get("usedevelopmentemulator", "false").lower()
        if emulator not in ("true", "false"):
            raise ValueError("UseDevelopmentEmulator must be true or false")
        return cls(value, endpoint.hostname, port, pairs.get("sharedaccesskeyname", ""),
                   emulator == "true")


def is_cosmos_connection_string(value: str) -> bool:
    """True if `value` is written as a Cosmos DB connection string (`AccountEndpoint=…;…`),
    well formed or not."""
    return value.lstrip().lower().startswith("accountendpoint=")


@dataclass(frozen=True, slots=True)
class CosmosConnectionString:
    """A Cosmos DB connection string, as .NET's `GetConnectionString("CosmosDb")` gives it:
    `AccountEndpoint=https://ACCOUNT.documents.azure.com:443/;AccountKey=KEY;`. Its text form
    (`str`) masks the key."""

    value: str
    endpoint: str
    key: str

    def __str__(self) -> str:
        return mask_url(self.value)

    def __repr__(self) -> str:
        return f"CosmosConnectionString({mask_url(self.value)!r})"

    @classmethod
    def parse(cls, value: str) -> CosmosConnectionString:
        """Read one; ValueError saying what is wrong (never the key) otherwise."""
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            key, equals, item = part.partition("=")
            if not equals or not key.strip():
                raise ValueError("the Cosmos DB connection string has a part that is not "
                                 "KEY=VALUE (parts are separated by ';')")
            pairs[key.strip().lower()] = item.strip()
        endpoint = pairs.get("accountendpoint", "")
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("the Cosmos DB connection string needs "
                             "AccountEndpoint=https://HOST[:PORT]/")
        if not pairs.get("accountkey"):
            raise ValueError("the Cosmos DB connection string needs AccountKey=…")
        return cls(value, endpoint, pairs["accountkey"])
