"""Service Bus messages both ways, with the SDK's own types, against the specification's
`ServiceBusEventService.PublishEventAsync`: what the relay sends, and what the consumer
reads from ours and from a .NET service's."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus._pyamqp._decode import decode_payload
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

from mussikon.adapters.messaging.servicebus.messages import (
    DeliveryState,
    event_message,
    read_envelope,
    redelivery,
    retry_subject,
)
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.wire import EventCodec, WireFormatError

GOLDEN = Path(__file__).parent.parent / "golden"
CODEC = EventCodec()


def over_the_wire(message: ServiceBusMessage) -> ServiceBusReceivedMessage:
    """The message as a receiver gets it: encoded by the SDK's AMQP stack, decoded again."""
    outgoing = PyamqpTransport.to_outgoing_amqp_message(message.raw_amqp_message)
    decoded = decode_payload(memoryview(bytes(encode_payload(bytearray(), outgoing))))
    return ServiceBusReceivedMessage(decoded, receiver=None)


def golden_event() -> MusicianRegisteredEvent:
    event = CODEC.decode((GOLDEN / "MusicianRegisteredEvent.json").read_bytes())
    assert isinstance(event, MusicianRegisteredEvent)
    return event


def test_the_relay_sends_the_specifications_message() -> None:
    event = golden_event()
    correlation = uuid.uuid4()
    event = dataclasses.replace(event, correlation_id=correlation)
    received = over_the_wire(event_message(CODEC, event, position=7))
    assert received.content_type == "application/json"
    assert received.subject == "MusicianRegisteredEvent"
    assert received.message_id == str(event.id)
    assert received.time_to_live == timedelta(hours=24)
    assert received.correlation_id == str(correlation)
    properties = received.application_properties or {}
    assert properties[b"EventType"] == b"MusicianRegisteredEvent"
    assert properties[b"Version"] == b"1.0"
    # .NET's DateTime goes over AMQP as a timestamp: milliseconds since the epoch.
    assert properties[b"Timestamp"] == int(event.occurred_at.timestamp() * 1000)
    assert properties[b"Position"] == b"7"
    assert CODEC.decode(b"".join(received.body)) == event


@pytest.mark.parametrize("correlation", [None, uuid.uuid4()])
def test_our_message_reads_back_as_the_event(correlation: uuid.UUID | None) -> None:
    """An event that starts its own chain goes out with its id as correlation id."""
    event = dataclasses.replace(golden_event(), correlation_id=correlation)
    received = over_the_wire(event_message(CODEC, event, position=7))
    assert received.correlation_id == str(correlation or event.id)
    envelope = read_envelope(CODEC, received)
    assert envelope.event == event
    assert (envelope.message_id, envelope.position) == (str(event.id), 7)
    assert envelope.event.correlation_id == correlation


def test_a_dotnet_message_is_read_by_its_body_id() -> None:
    """As `PublishEventAsync` sends it: a new GUID MessageId, no correlation, a DateTime."""
    body = (GOLDEN / "MusicianRegisteredEvent.json").read_bytes()
    sent = ServiceBusMessage(
        body, content_type="application/json", message_id=str(uuid.uuid4()),
        subject="MusicianRegisteredEvent", time_to_live=timedelta(hours=24),
        # The SDK's hints leave out datetime, which it sends as a timestamp, as .NET does.
        application_properties={"EventType": "MusicianRegisteredEvent", "Version": "1.0",
                                "Timestamp": datetime.now(UTC)})  # type: ignore[dict-item]
    envelope = read_envelope(CODEC, over_the_wire(sent))
    assert envelope.event == golden_event()
    assert envelope.message_id == "0b6f1d2e-8c3a-4f5b-a1d9-7e2c4b6a8f01"
    assert envelope.position is None and envelope.event.correlation_id is None


@pytest.mark.parametrize("body", [b"not json", b'{"EventType": "NoSuchEvent"}',
                                  b'{"EventType": "MusicianRegisteredEvent"}'])
def test_a_malformed_body_is_a_wire_format_error(body: bytes) -> None:
    with pytest.raises(WireFormatError):
        read_envelope(CODEC, over_the_wire(ServiceBusMessage(body)))


def test_a_redelivery_is_for_its_subscription_alone_and_keeps_the_event() -> None:
    event = golden_event()
    first = over_the_wire(event_message(CODEC, event, position=3))
    assert DeliveryState.of(first) == DeliveryState()
    since = datetime(2026, 11, 28, 9, 15, 1, 500000, tzinfo=UTC)
    copy = over_the_wire(redelivery(first, "welcome", f"{event.id}/welcome/retry1",
                                    {"x-retries": 1, "x-attempts-made": 4,
                                     "x-waiting-since": since}))
    assert copy.subject == retry_subject("welcome")
    assert b"EventType" not in (copy.application_properties or {})
    assert copy.message_id == f"{event.id}/welcome/retry1"
    assert DeliveryState.of(copy) == DeliveryState(retries=1, attempts_made=4,
                                                   waiting_since=since.timestamp())
    properties = copy.application_properties or {}
    assert properties[b"Timestamp"] == (first.application_properties or {})[b"Timestamp"]
    envelope = read_envelope(CODEC, copy)
    assert (envelope.event, envelope.position) == (event, 3)
