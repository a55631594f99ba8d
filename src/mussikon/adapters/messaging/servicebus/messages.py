"""Service Bus messages, both ways, as the specification's `ServiceBusEventService` writes
them, with the SDK's own types (`ServiceBusMessage` out, `ServiceBusReceivedMessage` in).

Out: the event's wire JSON, `ContentType` application/json, `Subject` the class name,
`TimeToLive` 24 h, application properties `EventType`, `Timestamp` (the event's time, which
the SDK sends as an AMQP timestamp, as .NET sends a `DateTime`) and `Version` "1.0", plus
the correlation and causation ids and the store position (`message_contract`). `MessageId`
is the event's id, so the namespace's duplicate detection drops a re-publish; the
correlation id is the event's, or its own id when it starts a chain. In: any message whose
body is an event, ours or a .NET service's (a random `MessageId`).

A failing message goes round again as a scheduled copy (`redelivery`) addressed to its own
subscription only: its `Subject` is `retry_subject(name)`, which that subscription's rule
admits and no other, and it carries no `EventType` property (the body names the type), so
the other subscriptions' rules do not admit it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage

from mussikon.adapters.messaging.message_contract import (
    CONTENT_TYPE,
    EVENT_TYPE,
    POSITION,
    event_headers,
    int_or,
    read_event,
    text,
)
from mussikon.domain.events import DomainEvent
from mussikon.ports.transport import Envelope
from mussikon.wire import EventCodec

TIME_TO_LIVE = timedelta(hours=24)
TIMESTAMP = "Timestamp"
RETRIES = "x-retries"
"""Delayed retries (scheduled copies) the message has been through."""
ATTEMPTS_MADE = "x-attempts-made"
"""Attempts made in the message's earlier rounds."""
WAITS = "x-waits"
"""Rounds an event from another service waited for what it presupposes (not failures)."""
WAITING_SINCE = "x-waiting-since"
"""When it started waiting (a timestamp)."""
_TIMESTAMPS = (TIMESTAMP, WAITING_SINCE)
"""The properties sent as AMQP timestamps, which arrive as Unix milliseconds."""
RETRY_SUBJECT_PREFIX = "mussikon.retry:"


def retry_subject(subscription: str) -> str:
    """The `Subject` of the copies scheduled for one subscription only."""
    return f"{RETRY_SUBJECT_PREFIX}{subscription}"


def event_message(codec: EventCodec, event: DomainEvent,
                  position: int | None = None) -> ServiceBusMessage:
    """What the relay publishes an event as."""
    properties: dict[str | bytes, Any] = {TIMESTAMP: event.occurred_at}
    properties.update(event_headers(event))
    if position is not None:
        # As text: a PostgreSQL position does not fit the 32-bit integer the SDK sends.
        properties[POSITION] = str(position)
    return ServiceBusMessage(
        codec.encode(event), content_type=CONTENT_TYPE, subject=event.event_type,
        message_id=str(event.id), correlation_id=str(event.correlation_id or event.id),
        time_to_live=TIME_TO_LIVE, application_properties=properties)


def properties_of(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    """The message's application properties, with text keys and text values where the wire
    had strings."""
    return {text(key): text(value) if isinstance(value, bytes) else value
            for key, value in (message.application_properties or {}).items()}


def body_of(message: ServiceBusReceivedMessage | ServiceBusMessage) -> bytes:
    """The message's body, as bytes."""
    body = message.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return b"".join(part if isinstance(part, bytes) else str(part).encode() for part in body)


def read_envelope(codec: EventCodec, message: ServiceBusReceivedMessage) -> Envelope:
    """The event a received message carries. Raises WireFormatError if it carries none."""
    own_chain = message.correlation_id is not None and message.correlation_id == message.message_id
    return read_event(codec, body_of(message), properties_of(message),
                      correlation_id=None if own_chain else message.correlation_id)


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """Where a received message stands in its rounds."""

    retries: int = 0
    attempts_made: int = 0
    waits: int = 0
    waiting_since: float | None = None
    """When it started waiting for what it presupposes (Unix seconds), None if it never did."""

    @classmethod
    def of(cls, message: ServiceBusReceivedMessage) -> DeliveryState:
        """Read it from the message's application properties (a fresh message: nothing)."""
        properties = properties_of(message)
        since = properties.get(WAITING_SINCE)
        return cls(retries=int_or(properties.get(RETRIES), 0),
                   attempts_made=int_or(properties.get(ATTEMPTS_MADE), 0),
                   waits=int_or(properties.get(WAITS), 0),
                   waiting_since=_seconds(since))


def redelivery(message: ServiceBusReceivedMessage, subscription: str, message_id: str,
               changes: Mapping[str, Any]) -> ServiceBusMessage:
    """A copy of `message` for `subscription` alone, its application properties updated with
    `changes`, to be scheduled, as `message_id`. It keeps the body, the correlation id and
    the content type. The id should name the event, the subscription and the round, so that
    duplicate detection drops the same copy scheduled twice and never a later round."""
    properties: dict[str | bytes, Any] = {
        key: _sendable(key, value) for key, value in properties_of(message).items()
        if key != EVENT_TYPE}
    properties.update(changes)
    return ServiceBusMessage(
        body_of(message), content_type=message.content_type,
        subject=retry_subject(subscription),
        message_id=message_id[:128],
        correlation_id=message.correlation_id, time_to_live=message.time_to_live,
        application_properties=properties)


def _seconds(value: Any) -> float | None:
    """A timestamp property (Unix milliseconds, or a datetime) in Unix seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    return value / 1000 if isinstance(value, int) else None


def _sendable(key: str, value: Any) -> Any:
    """A received property as it can be sent again: a timestamp as a datetime, an integer
    the SDK would send as a 32-bit one only if it fits (as text otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if key in _TIMESTAMPS:
            return datetime.fromtimestamp(value / 1000, UTC)
        if not -2**31 <= value < 2**31:
            return str(value)
    return value
