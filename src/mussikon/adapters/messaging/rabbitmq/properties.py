"""Message properties and headers, both ways, as the specification's .NET services write them.

Outgoing events carry what `RabbitMQService.PublishEventAsync` sets (persistent,
`message_id`, `timestamp` in Unix seconds, headers `EventType` and `Version` = "1.0"), plus
`content_type`, the correlation and causation ids and the store position. Our `message_id`
is the event's id rather than a new GUID, so a re-published event is recognised as the same
message. Incoming messages are read whatever their origin: a .NET message has a random
`message_id` and no correlation headers, and is deduplicated by its body's `Id`.

Retries and dead letters add `x-*` headers that say where the message came from, how many
times it was tried, which subscriptions still have to handle it and why it was given up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from mussikon.adapters.messaging.message_contract import (
    CAUSATION_ID,
    CONTENT_TYPE,
    CORRELATION_ID,
    EVENT_TYPE,
    HANDLER_FAILED,
    MALFORMED,
    POSITION,
    PREREQUISITE_MISSING,
    VERSION,
    WIRE_VERSION,
    event_headers,
    read_event,
    text,
)
from mussikon.adapters.messaging.message_contract import clip as _clip
from mussikon.adapters.messaging.message_contract import int_or as _int_or
from mussikon.adapters.messaging.retries import exception_name, failure_message
from mussikon.domain.events import DomainEvent
from mussikon.ports.transport import DeadLetter, Envelope
from mussikon.wire import EventCodec

__all__ = ["CAUSATION_ID", "CONTENT_TYPE", "CORRELATION_ID", "EVENT_TYPE", "HANDLER_FAILED",
           "MALFORMED", "POSITION", "PREREQUISITE_MISSING", "VERSION", "WIRE_VERSION", "text"]

PERSISTENT = 2

RETRIES = "x-retries"
"""Delayed retries (through a TTL queue) the message has been through."""
PENDING_SUBSCRIPTIONS = "x-pending-subscriptions"
"""Comma-separated subscriptions that have not handled the message yet; absent means all."""
ATTEMPTS_MADE = "x-attempts-made"
"""Attempts made in the message's earlier delayed-retry rounds, those in process included
(a round may skip the rest of its in-process retries: the consumer's `retry_wait_limit`)."""
ORIGINAL_QUEUE = "x-original-queue"
ORIGINAL_ROUTING_KEY = "x-original-routing-key"
DEAD_LETTER_ID = "x-dead-letter-id"
FAILURE_REASON = "x-failure-reason"
EXCEPTION_TYPE = "x-exception-type"
EXCEPTION_MESSAGE = "x-exception-message"
ATTEMPTS = "x-attempts"
SUBSCRIPTION = "x-subscription"
FAILED_AT = "x-failed-at"
WAITS = "x-waits"
"""Times an event from another service went round a delayed queue waiting for what it
presupposes (not failures: no handler ran)."""
WAITING_SINCE = "x-waiting-since"
"""When it started waiting, in Unix milliseconds."""
WAITING_FOR = "x-waiting-for"
"""What it was still waiting for, last time it was looked at."""
EARLIER_ATTEMPTS = "x-earlier-attempts"
"""Attempts made before the dead letter was last replayed, so the count keeps growing."""

def event_properties(event: DomainEvent, position: int | None = None) -> Basic.Properties:
    """What the relay publishes an event with."""
    headers = event_headers(event, position)
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=str(event.id),
        # The event's time rather than the publish time: a re-publish is then the same message.
        timestamp=event.occurred_at.replace(microsecond=0),
        correlation_id=str(event.correlation_id) if event.correlation_id else None,
        headers=headers,
    )


def headers_of(message: DeliveredMessage) -> dict[str, Any]:
    """The message's headers (an empty dict if it has none)."""
    return dict(message.header.properties.headers or {})


def read_envelope(codec: EventCodec, message: DeliveredMessage, attempt: int = 1) -> Envelope:
    """The event a delivered message carries. Raises WireFormatError if it carries none.

    The `EventType` header names the type when present (the specification sets it);
    otherwise the body's `EventType` does. The envelope's `message_id` is the event's id,
    whoever published it, so the inbox recognises the same event sent twice.
    """
    return read_event(codec, message.body, headers_of(message),
                      correlation_id=message.header.properties.correlation_id, attempt=attempt)


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """Where a delivered message stands in its retries."""

    retries: int
    pending: frozenset[str] | None
    original_queue: str
    original_routing_key: str
    attempts_made: int | None = None
    """Attempts made in the earlier delayed-retry rounds (None: not said)."""
    waits: int = 0
    """Delayed rounds it went through waiting for what it presupposes."""
    waiting_since: float | None = None
    """When it started waiting (Unix seconds), None if it never waited."""

    @classmethod
    def of(cls, message: DeliveredMessage, queue: str) -> DeliveryState:
        """Read it from the message's headers (a fresh message: no retries, all subscriptions)."""
        headers = headers_of(message)
        pending = headers.get(PENDING_SUBSCRIPTIONS)
        made = headers.get(ATTEMPTS_MADE)
        return cls(
            retries=_int_or(headers.get(RETRIES), 0),
            pending=frozenset(filter(None, text(pending).split(","))) if pending else None,
            original_queue=text(headers.get(ORIGINAL_QUEUE)) or queue,
            original_routing_key=(text(headers.get(ORIGINAL_ROUTING_KEY))
                                  or message.routing_key or ""),
            attempts_made=_int_or(made, 0) if made is not None else None,
            waits=_int_or(headers.get(WAITS), 0),
            waiting_since=(_int_or(since, 0) / 1000
                           if (since := headers.get(WAITING_SINCE)) is not None else None),
        )


def _copy(properties: Basic.Properties, headers: Mapping[str, Any]) -> Basic.Properties:
    return Basic.Properties(
        content_type=properties.content_type or None,
        content_encoding=properties.content_encoding or None,
        headers=dict(headers),
        delivery_mode=PERSISTENT,
        priority=properties.priority,
        correlation_id=properties.correlation_id or None,
        reply_to=properties.reply_to or None,
        message_id=properties.message_id or None,
        timestamp=properties.timestamp,
        message_type=properties.message_type or None,
        user_id=properties.user_id or None,
        app_id=properties.app_id or None,
    )


def _without_broker_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    # The broker's own dead-lettering history grows with every TTL round trip; it says nothing
    # our headers do not, so it is not carried into a copy.
    return {key: value for key, value in headers.items()
            if not key.startswith(("x-death", "x-first-death", "x-last-death", "x-delivery-count"))}


def retry_properties(message: DeliveredMessage, state: DeliveryState,
                     pending: Iterable[str], error: BaseException,
                     attempts_made: int) -> Basic.Properties:
    """The message as it goes through a delayed retry: one more retry, only `pending` left,
    `attempts_made` so far."""
    headers = _without_broker_headers(headers_of(message)) | {
        RETRIES: state.retries + 1,
        ATTEMPTS_MADE: attempts_made,
        PENDING_SUBSCRIPTIONS: ",".join(sorted(pending)),
        ORIGINAL_QUEUE: state.original_queue,
        ORIGINAL_ROUTING_KEY: state.original_routing_key,
        EXCEPTION_TYPE: exception_name(error),
        EXCEPTION_MESSAGE: _clip(failure_message(error)),
    }
    return _copy(message.header.properties, headers)


def wait_properties(message: DeliveredMessage, state: DeliveryState, since: float,
                    missing: str) -> Basic.Properties:
    """The message as it goes round a delayed queue waiting for what its event presupposes
    (`missing`), having started to wait at `since` (Unix seconds)."""
    headers = _without_broker_headers(headers_of(message)) | {
        WAITS: state.waits + 1,
        WAITING_SINCE: round(since * 1000),
        WAITING_FOR: _clip(missing),
        ORIGINAL_QUEUE: state.original_queue,
        ORIGINAL_ROUTING_KEY: state.original_routing_key,
    }
    return _copy(message.header.properties, headers)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a message is given up on."""

    reason: str
    error: BaseException
    attempts: int
    subscriptions: frozenset[str] = frozenset()


def dead_letter_properties(message: DeliveredMessage, state: DeliveryState,
                           failure: Failure, now: datetime | None = None) -> Basic.Properties:
    """The message as it goes to the dead-letter queue, with the reason in its headers."""
    headers = _without_broker_headers(headers_of(message))
    headers |= {
        # A replayed dead letter that fails again keeps its id: operators follow one letter.
        DEAD_LETTER_ID: text(headers.get(DEAD_LETTER_ID)) or uuid.uuid4().hex,
        FAILURE_REASON: failure.reason,
        EXCEPTION_TYPE: exception_name(failure.error),
        EXCEPTION_MESSAGE: _clip(failure_message(failure.error)),
        ATTEMPTS: failure.attempts + _int_or(headers.get(EARLIER_ATTEMPTS), 0),
        ORIGINAL_QUEUE: state.original_queue,
        ORIGINAL_ROUTING_KEY: state.original_routing_key,
        SUBSCRIPTION: ",".join(sorted(failure.subscriptions)),
        PENDING_SUBSCRIPTIONS: ",".join(sorted(failure.subscriptions)),
        FAILED_AT: (now or datetime.now(UTC)).isoformat(),
        RETRIES: state.retries,
    }
    return _copy(message.header.properties, headers)


def replay_properties(message: DeliveredMessage) -> Basic.Properties:
    """A dead letter as it is sent back to its queue: retries (and the wait for what it
    presupposes) start again, and only the
    subscriptions that failed run it. It keeps its dead-letter id and its attempt count."""
    drop = {FAILURE_REASON, EXCEPTION_TYPE, EXCEPTION_MESSAGE, ATTEMPTS, SUBSCRIPTION, FAILED_AT,
            RETRIES, WAITS, WAITING_SINCE, WAITING_FOR}
    original = headers_of(message)
    headers = {key: value for key, value in _without_broker_headers(original).items()
               if key not in drop}
    headers[DEAD_LETTER_ID] = dead_letter_id(message)
    headers[EARLIER_ATTEMPTS] = _int_or(original.get(ATTEMPTS), 0)
    if not headers.get(PENDING_SUBSCRIPTIONS):
        headers.pop(PENDING_SUBSCRIPTIONS, None)
    return _copy(message.header.properties, headers)


def dead_letter_id(message: DeliveredMessage) -> str:
    """The id a dead letter is listed and replayed by.

    Ours carry one; a message the broker dead-lettered itself (delivery limit) is known by
    its message id.
    """
    headers = headers_of(message)
    return text(headers.get(DEAD_LETTER_ID)) or message.header.properties.message_id or ""


def dead_letter_of(message: DeliveredMessage) -> DeadLetter:
    """A message in the dead-letter queue, for listing."""
    headers = headers_of(message)
    properties = message.header.properties
    death = _first_death(headers)
    reason = text(headers.get(FAILURE_REASON))
    exception = text(headers.get(EXCEPTION_TYPE))
    if not reason and death:
        reason = f"dead-lettered by the broker: {text(death.get('reason'))}"
        exception = exception or "DeliveryLimitExceeded"
    failed_at = _parse_time(text(headers.get(FAILED_AT))) or _death_time(death) \
        or datetime.fromtimestamp(0, UTC)
    message_text = text(headers.get(EXCEPTION_MESSAGE))
    return DeadLetter(
        id=dead_letter_id(message),
        subscription=text(headers.get(SUBSCRIPTION)),
        message_id=properties.message_id or "",
        event_type=text(headers.get(EVENT_TYPE)),
        position=_int_or(headers.get(POSITION), 0) or None,
        attempts=_int_or(headers.get(ATTEMPTS), _int_or(death.get("count") if death else None, 0)),
        exception=exception,
        reason=f"{reason}: {message_text}" if message_text else reason,
        body=message.body.decode("utf-8", "replace"),
        failed_at=failed_at,
    )


_STORED = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
           "reply_to", "message_id", "message_type", "user_id", "app_id")


def stored_properties(properties: Basic.Properties) -> dict[str, Any]:
    """Message properties as a JSON document: header values JSON has no type for (times,
    bytes, decimals) are kept as text."""
    stored: dict[str, Any] = {name: getattr(properties, name) for name in _STORED
                              if getattr(properties, name) not in (None, "")}
    stored["headers"] = _jsonable(properties.headers or {})
    if properties.timestamp is not None:
        stored["timestamp"] = properties.timestamp.isoformat()
    return stored


def properties_from(stored: Mapping[str, Any]) -> Basic.Properties:
    """The message properties `stored_properties` kept."""
    timestamp = _parse_time(text(stored.get("timestamp")))
    return Basic.Properties(**{name: stored[name] for name in _STORED if name in stored},
                            headers=dict(stored.get("headers") or {}), timestamp=timestamp)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return text(value)


def original_queue_of(message: DeliveredMessage) -> str:
    """The queue a dead letter came from: our header, or the broker's death record."""
    headers = headers_of(message)
    queue = text(headers.get(ORIGINAL_QUEUE))
    if not queue:
        death = _first_death(headers)
        queue = text(death.get("queue")) if death else ""
    return queue


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], Mapping):
        # x-death is newest first; the oldest entry is where the message first failed.
        return deaths[-1]
    return None


def _death_time(death: Mapping[str, Any] | None) -> datetime | None:
    value = death.get("time") if death else None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
