"""What the Service Bus tests share, against the local peer or a real namespace: the
administration client, and the SDK sending and peeking as another party would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.aio.management import ServiceBusAdministrationClient

from mussikon.adapters.messaging.servicebus.provisioning import PlainHttpTransport
from mussikon.config import ServiceBusConnectionString


def administration(connection: str) -> ServiceBusAdministrationClient:
    """The SDK's administration client for the namespace (over plain HTTP for the peer, whose
    connection string says `UseDevelopmentEmulator=true`)."""
    options: dict[str, Any] = {}
    if ServiceBusConnectionString.parse(connection).emulator:
        options["transport"] = PlainHttpTransport()
    return ServiceBusAdministrationClient.from_connection_string(connection, **options)


async def send_as_dotnet(connection: str, topic: str, body: bytes, event_type: str,
                         times: int = 1) -> None:
    """As `ServiceBusEventService.PublishEventAsync` sends an event, `times` times: a new GUID
    MessageId each, ContentType application/json, Subject the class name, application
    properties EventType, Timestamp and Version "1.0"."""
    async with (ServiceBusClient.from_connection_string(connection) as client,
                client.get_topic_sender(topic) as sender):
        for _ in range(times):
            await sender.send_messages(ServiceBusMessage(
                body, content_type="application/json", message_id=str(uuid.uuid4()),
                subject=event_type, time_to_live=timedelta(hours=24),
                application_properties={"EventType": event_type, "Version": "1.0",
                                        "Timestamp": datetime.now(UTC)}))  # type: ignore[dict-item]


async def peeked(connection: str, topic: str, subscription: str, *,
                 dead_letters: bool = False) -> list[Any]:
    """The messages a subscription holds (available, locked or deferred), or those of its
    dead-letter sub-queue."""
    sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead_letters else None
    async with (ServiceBusClient.from_connection_string(connection) as client,
                client.get_subscription_receiver(topic, subscription,
                                                 sub_queue=sub_queue) as receiver):
        return list(await receiver.peek_messages(50, sequence_number=1))
