"""The RabbitMQ topology: the specification's exchanges and queues, plus retries and dead letters.

```
mussikon.events (topic) --<routing key>--> one durable queue per event type, named as its key
                        --<event type, lower case>--> the same queue
mussikon.notifications (direct)
mussikon.retry.<delay> (fanout) --> queue with that TTL --dead-letters back via ""--> the queue
mussikon.dlx (fanout) --> mussikon.dlq   (the broker's own dead letters: delivery limit)
mussikon.dlq                             (our dead letters, published with their reasons)
```

Each event queue is bound by both keys .NET services following the specification publish
with: `RabbitMQService`'s queue names (`musician.registered`, what our relay publishes with)
and the exercise's `EventBus` key, `EventType.ToLower()` (`musicianregisteredevent`).

Everything is declared idempotently at every (re)connect. A `prefix` is put before every
exchange and queue name (not before routing keys), so tests and tenants share a broker safely.
An `events_exchange` given by name is the exchange shared with the other services, taken as
it is (no prefix): instances with their own prefixes then have their own queues, each bound
to that one exchange, so every instance gets every event.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiormq.abc import AbstractChannel

QueueType = Literal["quorum", "classic"]

Answer = Callable[[Awaitable[Any], str], Awaitable[Any]]
"""How an operation on the broker is awaited: given it and what it does, its outcome."""


async def _as_it_comes(operation: Awaitable[Any], doing: str) -> Any:
    return await operation

SPECIFICATION_ROUTING_KEYS: Mapping[str, str] = {
    "MusicianRegisteredEvent": "musician.registered",
    "EventCreatedEvent": "event.created",
    "MusicianApplicationSubmittedEvent": "application.submitted",
    "ContractSignedEvent": "contract.signed",
    "PaymentProcessedEvent": "payment.processed",
}
"""The specification's five routing keys; its `SetupQueues` binds them by hand, and one of them
(`application.submitted`) is not what the class name would give."""

DEFAULT_EVENTS_EXCHANGE = "mussikon.events"
"""The events exchange's name, after the prefix, unless one is named."""

_WORD = re.compile(r"[A-Z][a-z0-9]*|[a-z0-9]+")


def derived_routing_key(event_type: str) -> str:
    """`ApplicationAcceptedEvent` → `application.accepted`: the words of the class name, dotted.

    Raises ValueError rather than return an empty key (the specification's `EventType`
    defaults to an empty string, and so does its routing key).
    """
    name = event_type.removesuffix("Event")
    words = _WORD.findall(name)
    if not words or "".join(words) != name:
        raise ValueError(f"no routing key can be derived from event type {event_type!r}")
    return ".".join(word.lower() for word in words)


def format_delay(seconds: float) -> str:
    """`1` → `1s`, `0.2` → `200ms`: the delay as it appears in a retry queue's name."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"a delayed retry needs a positive delay, got {seconds!r}")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """One exchange to declare."""

    name: str
    type: str
    durable: bool = True


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue to declare, with its arguments and the (exchange, routing key) pairs it is bound
    by."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()
    durable: bool = True


@dataclass(frozen=True, slots=True)
class RetryStage:
    """One delayed retry: publish to `exchange` with the queue's name as routing key; after
    `delay` seconds the message is dead-lettered back into that queue."""

    delay: float
    exchange: str
    queue: str


class Topology:
    """The names and shape of everything this transport declares on the broker.

    `events_exchange`: the events exchange's full name, shared with other services and
    instances; empty: `<prefix>mussikon.events`, this prefix's own.
    """

    def __init__(self, event_types: Iterable[str], *, prefix: str = "",
                 queue_type: QueueType = "quorum",
                 delayed_retry_delays: Iterable[float] = (1.0, 10.0, 60.0),
                 events_exchange: str = "",
                 notifications_exchange: str = "mussikon.notifications",
                 dead_letter_queue: str = "mussikon.dlq",
                 routing_keys: Mapping[str, str] | None = None,
                 delivery_limit: int = 20) -> None:
        if queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type must be 'quorum' or 'classic', got {queue_type!r}")
        self.prefix = prefix
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        self.events_exchange = events_exchange or prefix + DEFAULT_EVENTS_EXCHANGE
        self.notifications_exchange = prefix + notifications_exchange
        self.dead_letter_queue = prefix + dead_letter_queue
        self.dead_letter_exchange = prefix + "mussikon.dlx"
        overrides = {**SPECIFICATION_ROUTING_KEYS, **(routing_keys or {})}
        self._routing_keys: dict[str, str] = {}
        for event_type in event_types:
            key = overrides.get(event_type) or derived_routing_key(event_type)
            if key in self._routing_keys.values():
                raise ValueError(f"two event types would share the routing key {key!r}")
            self._routing_keys[event_type] = key
        self.retry_stages = tuple(
            RetryStage(delay, prefix + f"mussikon.retry.{format_delay(delay)}",
                       prefix + f"mussikon.retry.{format_delay(delay)}")
            for delay in delayed_retry_delays)

    @property
    def event_types(self) -> list[str]:
        """The event types routed, in declaration order."""
        return list(self._routing_keys)

    def routing_key(self, event_type: str) -> str:
        """The routing key events of this type are published with (never empty)."""
        try:
            return self._routing_keys[event_type]
        except KeyError:
            raise KeyError(f"event type {event_type!r} has no queue in this topology") from None

    def binding_keys(self, event_type: str) -> tuple[str, ...]:
        """Every routing key that reaches this type's queue: its routing key, and the
        exercise's `EventBus` key (the type's name in lower case)."""
        key = self.routing_key(event_type)
        bus_key = event_type.lower()
        return (key,) if bus_key == key else (key, bus_key)

    def queue(self, event_type: str) -> str:
        """The queue events of this type land in: the routing key, prefixed."""
        return self.prefix + self.routing_key(event_type)

    def event_queues(self) -> list[str]:
        """Every event type's queue."""
        return [self.queue(event_type) for event_type in self._routing_keys]

    def exchanges(self) -> list[ExchangeSpec]:
        """Every exchange, in declaration order."""
        return [
            ExchangeSpec(self.events_exchange, "topic"),
            ExchangeSpec(self.notifications_exchange, "direct"),
            ExchangeSpec(self.dead_letter_exchange, "fanout"),
            *(ExchangeSpec(stage.exchange, "fanout") for stage in self.retry_stages),
        ]

    def queues(self) -> list[QueueSpec]:
        """Every queue, with its arguments and bindings, in declaration order."""
        events = [
            QueueSpec(self.prefix + key, self._event_queue_arguments(),
                      tuple((self.events_exchange, bound)
                            for bound in self.binding_keys(event_type)))
            for event_type, key in self._routing_keys.items()
        ]
        retries = [
            QueueSpec(stage.queue, self._retry_queue_arguments(stage), ((stage.exchange, ""),))
            for stage in self.retry_stages
        ]
        dead_letters = QueueSpec(self.dead_letter_queue, self._type_arguments(),
                                 ((self.dead_letter_exchange, ""),))
        return [*events, *retries, dead_letters]

    def _type_arguments(self) -> dict[str, Any]:
        # A classic queue is declared with no arguments at all, exactly as the specification's
        # .NET `QueueDeclare(name, true, false, false)` does, so both sides can declare it.
        return {"x-queue-type": "quorum"} if self.queue_type == "quorum" else {}

    def _event_queue_arguments(self) -> dict[str, Any]:
        arguments = self._type_arguments()
        if self.queue_type == "quorum":
            # A message that kills its consumer every time (so no handler ever reports a failure)
            # would loop forever; the broker counts deliveries and dead-letters it instead.
            arguments |= {"x-delivery-limit": self.delivery_limit,
                          "x-dead-letter-exchange": self.dead_letter_exchange,
                          **_AT_LEAST_ONCE_DEAD_LETTERING}
        return arguments

    def _retry_queue_arguments(self, stage: RetryStage) -> dict[str, Any]:
        arguments = self._type_arguments()
        # The message was published with the waiting queue's name as routing key; dead-lettering
        # through the default exchange keeps that key, so it goes back to that queue alone.
        arguments |= {"x-message-ttl": round(stage.delay * 1000), "x-dead-letter-exchange": ""}
        if self.queue_type == "quorum":
            arguments |= _AT_LEAST_ONCE_DEAD_LETTERING
        return arguments

    async def declare(self, channel: AbstractChannel, answer: Answer = _as_it_comes) -> None:
        """Declare every exchange, queue and binding (idempotent; the broker keeps what exists).
        Each declaration is awaited through `answer(operation, what it does)` (which may bound
        the wait)."""
        for exchange in self.exchanges():
            await answer(channel.exchange_declare(exchange.name, exchange_type=exchange.type,
                                                  durable=exchange.durable),
                         f"declaring exchange {exchange.name}")
        for queue in self.queues():
            await answer(channel.queue_declare(queue.name, durable=queue.durable,
                                               arguments=dict(queue.arguments)),
                         f"declaring queue {queue.name}")
            for exchange_name, key in queue.bindings:
                await answer(channel.queue_bind(queue.name, exchange_name, routing_key=key),
                             f"binding queue {queue.name}")

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete every queue and exchange of this topology, messages and all (tests, teardown)."""
        for queue in self.queues():
            await channel.queue_delete(queue.name)
        for exchange in self.exchanges():
            await channel.exchange_delete(exchange.name)


_AT_LEAST_ONCE_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once",
                                 "x-overflow": "reject-publish"}
"""A quorum queue dead-letters at most once unless told otherwise: a message expiring while the
target is unavailable would be lost. At least once requires `reject-publish` overflow."""
