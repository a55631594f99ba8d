"""What a message says besides its body, on either broker, as the specification's .NET
services write it, and how an event is read back from a message whatever its origin.

The relay publishes each event with its type (`EventType`, the class name) and the message
format `Version` "1.0", as `PublishEventAsync` does on RabbitMQ and Service Bus, plus the
correlation and causation ids and the store position. The message id is the event's id
rather than a new GUID, so a re-published event is recognised as the same message. A
message from a .NET service has a random message id and no correlation metadata: it is
read by its body's `Id`, and odd metadata never rejects the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from mussikon.domain.events import DomainEvent
from mussikon.ports.transport import Envelope
from mussikon.wire import EventCodec

CONTENT_TYPE = "application/json"
WIRE_VERSION = "1.0"
"""The `Version` property of the specification: the message format, not the event's schema."""

EVENT_TYPE = "EventType"
VERSION = "Version"
CORRELATION_ID = "CorrelationId"
CAUSATION_ID = "CausationId"
POSITION = "Position"

MALFORMED = "malformed"
"""Failure reason of a body that is not a valid event: never retried."""
HANDLER_FAILED = "handler-failed"
"""Failure reason of a valid event whose handler kept failing."""
PREREQUISITE_MISSING = "prerequisite-missing"
"""Failure reason of an event from another service that waited longer than it may for what
it presupposes (`mussikon.domain.prerequisites`)."""


def event_headers(event: DomainEvent, position: int | None = None) -> dict[str, Any]:
    """The headers (RabbitMQ) or application properties (Service Bus) an event is published
    with, before the broker's own additions."""
    headers: dict[str, Any] = {EVENT_TYPE: event.event_type, VERSION: WIRE_VERSION}
    if event.correlation_id is not None:
        headers[CORRELATION_ID] = str(event.correlation_id)
    if event.causation_id is not None:
        headers[CAUSATION_ID] = str(event.causation_id)
    if position is not None:
        headers[POSITION] = position
    return headers


def text(value: Any) -> str:
    """A header value as text (AMQP may hand strings over as bytes)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def uuid_or_none(value: Any) -> uuid.UUID | None:
    """A header's UUID, None if absent or not a UUID: correlation metadata is advisory, a
    foreign sender's odd value must not reject the event."""
    try:
        return uuid.UUID(text(value)) if value else None
    except ValueError:
        return None


def int_or(value: Any, default: int) -> int:
    """A header's integer, `default` if absent or not one."""
    try:
        return int(text(value)) if value is not None else default
    except ValueError:
        return default


def clip(message: str, limit: int = 1000) -> str:
    """A text cut to `limit` characters: headers travel with every copy of the message, a
    huge exception text does not belong there."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def read_event(codec: EventCodec, body: bytes, headers: Mapping[str, Any], *,
               correlation_id: Any = None, attempt: int = 1) -> Envelope:
    """The event a message carries (`headers` with text keys). Raises WireFormatError if it
    carries none.

    The `EventType` header names the type when present (the specification sets it);
    otherwise the body's `EventType` does. `correlation_id` is the broker's own property,
    used when there is no `CorrelationId` header. The envelope's `message_id` is the
    event's id, whoever published it, so the inbox recognises the same event sent twice.
    """
    declared = text(headers.get(EVENT_TYPE)) or None
    correlation = uuid_or_none(headers.get(CORRELATION_ID) or correlation_id)
    causation = uuid_or_none(headers.get(CAUSATION_ID))
    event = codec.decode(body, declared, correlation_id=correlation, causation_id=causation)
    return Envelope(
        message_id=str(event.id),
        event=event,
        position=int_or(headers.get(POSITION), 0) or None,
        attempt=attempt,
        headers={key: text(value) if isinstance(value, bytes) else value
                 for key, value in headers.items()},
    )
