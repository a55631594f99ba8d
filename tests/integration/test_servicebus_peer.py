"""The local Service Bus peer, driven through the official SDK's asyncio API: each behaviour
the Service Bus transport will rely on, as the SDK sees it."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    ServiceBusError,
)

from tests.polling import eventually
from tests.servicebus_peer import EntityOptions, ServiceBusPeer

pytestmark = pytest.mark.servicebus

SETTLE_TIMEOUT = 10.0
"""Seconds a settlement may take: without the peer's echo the SDK would wait 60 s."""


@asynccontextmanager
async def connected(peer: ServiceBusPeer) -> AsyncIterator[ServiceBusClient]:
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        yield client


async def send(client: ServiceBusClient, entity: str, *messages: ServiceBusMessage) -> None:
    async with client.get_queue_sender(entity) as sender:  # a topic's sender is the same link
        await sender.send_messages(list(messages))


async def receive(receiver: ServiceBusReceiver, count: int,
                  timeout: float = 10.0) -> list[ServiceBusReceivedMessage]:
    """Exactly `count` messages, gathered over as many receive calls as it takes."""
    received: list[ServiceBusReceivedMessage] = []

    async def gathered() -> bool:
        received.extend(await receiver.receive_messages(count - len(received), max_wait_time=0.5))
        return len(received) >= count

    await eventually(gathered, timeout, what=f"{count} messages")
    return received


def bodies(messages: list[ServiceBusReceivedMessage]) -> list[str]:
    return [str(m) for m in messages]


async def test_a_message_keeps_everything_the_sdk_sent(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q")
    document = {"ContractId": "8e9f0a1b-2c3d-4e4f-a5b6-c7d8e9f0a1b2", "Amount": 1200.50}
    sent = ServiceBusMessage(
        json.dumps(document), content_type="application/json", subject="ContractSignedEvent",
        message_id="3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7", correlation_id="c-1",
        time_to_live=datetime.timedelta(hours=24), to="to-1", reply_to="reply-1",
        application_properties={"EventType": "ContractSignedEvent", "Version": "1.0",
                                "Timestamp": "2026-11-28T09:15:00Z", "Count": 3})
    async with connected(servicebus_peer) as client:
        await send(client, "q", sent)
        async with client.get_queue_receiver("q") as receiver:
            [got] = await receive(receiver, 1)
            assert got.enqueued_time_utc is not None and got.locked_until_utc is not None
            assert got.locked_until_utc > got.enqueued_time_utc
            await receiver.complete_message(got)
    assert json.loads(str(got)) == document
    assert (got.content_type, got.subject, got.message_id, got.correlation_id, got.to,
            got.reply_to) == ("application/json", "ContractSignedEvent",
                              "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7", "c-1", "to-1", "reply-1")
    assert got.time_to_live == datetime.timedelta(hours=24)
    assert got.application_properties == {
        b"EventType": b"ContractSignedEvent", b"Version": b"1.0",
        b"Timestamp": b"2026-11-28T09:15:00Z", b"Count": 3}
    assert (got.delivery_count, got.sequence_number, got.state) == (
        0, 1, ServiceBusMessageState.ACTIVE)


async def test_a_topic_fans_out_to_the_subscriptions_its_rules_admit(
        servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_topic("events")
    servicebus_peer.create_subscription("events", "all")
    servicebus_peer.create_subscription("events", "contracts", {"ContractSignedEvent"})
    async with connected(servicebus_peer) as client:
        await send(client, "events",
                   ServiceBusMessage("by subject", subject="ContractSignedEvent"),
                   ServiceBusMessage("by property",
                                     application_properties={"EventType": "ContractSignedEvent"}),
                   ServiceBusMessage("other", subject="PaymentProcessedEvent"))
        servicebus_peer.set_rule("events", "contracts", {"PaymentProcessedEvent"})
        await send(client, "events", ServiceBusMessage("after", subject="PaymentProcessedEvent"))
        async with client.get_subscription_receiver("events", "all") as receiver:
            every = await receive(receiver, 4)
        async with client.get_subscription_receiver("events", "contracts") as receiver:
            admitted = await receive(receiver, 3)
            assert await receiver.receive_messages(1, max_wait_time=0.5) == []
    assert bodies(every) == ["by subject", "by property", "other", "after"]
    assert bodies(admitted) == ["by subject", "by property", "after"]


async def test_a_batch_arrives_as_its_messages(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q")
    async with connected(servicebus_peer) as client:
        async with client.get_queue_sender("q") as sender:
            batch = await sender.create_message_batch()
            for n in range(3):
                batch.add_message(ServiceBusMessage(f"m{n}", application_properties={"n": n}))
            await sender.send_messages(batch)
            await sender.send_messages([ServiceBusMessage("m3"), ServiceBusMessage("m4")])
        async with client.get_queue_receiver(
                "q", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got = await receive(receiver, 5)
    assert bodies(got) == ["m0", "m1", "m2", "m3", "m4"]
    assert [m.application_properties for m in got[:3]] == [{b"n": n} for n in range(3)]
    assert [m.sequence_number for m in got] == [1, 2, 3, 4, 5]


async def test_receive_and_delete_takes_messages_away(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q")
    async with connected(servicebus_peer) as client:
        await send(client, "q", ServiceBusMessage("one"), ServiceBusMessage("two"))
        async with client.get_queue_receiver(
                "q", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got = await receive(receiver, 2)
            assert got[0].lock_token is None
            assert await receiver.peek_messages(10, sequence_number=1) == []
    assert bodies(got) == ["one", "two"]


async def test_settlements_are_echoed_on_the_link(servicebus_peer: ServiceBusPeer) -> None:
    """Complete, abandon and dead-letter finish at once, without `$management`."""
    servicebus_peer.create_queue("q")
    async with connected(servicebus_peer) as client:
        await send(client, "q", *(ServiceBusMessage(b) for b in ("done", "again", "poison")))
        async with client.get_queue_receiver("q") as receiver:
            done, again, poison = await receive(receiver, 3)
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await receiver.complete_message(done)
                await receiver.abandon_message(again)
                await receiver.dead_letter_message(poison, reason="Unreadable",
                                                   error_description="no such field")
            [redelivered] = await receive(receiver, 1)
            await receiver.complete_message(redelivered)
            assert await receiver.peek_messages(10, sequence_number=1) == []
        async with client.get_queue_receiver(
                "q", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dead_letters:
            [dead] = await receive(dead_letters, 1)
            await dead_letters.complete_message(dead)
    assert (str(redelivered), redelivered.delivery_count) == ("again", 1)
    assert (str(dead), dead.dead_letter_reason, dead.dead_letter_error_description) == (
        "poison", "Unreadable", "no such field")
    assert servicebus_peer.management_settlements == 0


async def test_a_subscription_dead_letters_to_its_own_queue(
        servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_topic("events")
    servicebus_peer.create_subscription("events", "billing")
    async with connected(servicebus_peer) as client:
        await send(client, "events", ServiceBusMessage("poison", subject="X"))
        async with client.get_subscription_receiver("events", "billing") as receiver:
            [message] = await receive(receiver, 1)
            await receiver.dead_letter_message(message, reason="Bad", error_description="why")
        async with client.get_subscription_receiver(
                "events", "billing", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dead_letters:
            [dead] = await receive(dead_letters, 1)
    assert (str(dead), dead.subject, dead.dead_letter_reason,
            dead.dead_letter_error_description) == ("poison", "X", "Bad", "why")
    assert servicebus_peer.management_settlements == 0


async def test_a_deferred_message_is_received_by_its_sequence_number(
        servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q")
    async with connected(servicebus_peer) as client:
        await send(client, "q", ServiceBusMessage("later"))
        async with client.get_queue_receiver("q") as receiver:
            [message] = await receive(receiver, 1)
            await receiver.defer_message(message)
            assert await receiver.receive_messages(1, max_wait_time=0.5) == []
            [peeked] = await receiver.peek_messages(1, sequence_number=1)
            assert peeked.state == ServiceBusMessageState.DEFERRED
            assert message.sequence_number is not None
            [deferred] = await receiver.receive_deferred_messages([message.sequence_number])
            assert (str(deferred), deferred.lock_token is not None) == ("later", True)
            await receiver.complete_message(deferred)
            assert await receiver.peek_messages(1, sequence_number=1) == []
    assert servicebus_peer.management_settlements == 1  # the one way to settle a deferred message


async def test_peek_neither_locks_nor_removes(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q")
    async with connected(servicebus_peer) as client:
        await send(client, "q", *(ServiceBusMessage(f"m{n}") for n in range(3)))
        async with client.get_queue_receiver("q") as receiver:
            peeked = await receiver.peek_messages(2, sequence_number=2)
            got = await receive(receiver, 3)
    assert [(str(m), m.sequence_number, m.lock_token) for m in peeked] == [
        ("m1", 2, None), ("m2", 3, None)]
    assert [(str(m), m.delivery_count) for m in got] == [("m0", 0), ("m1", 0), ("m2", 0)]


async def test_renewing_a_lock_keeps_the_message(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q", EntityOptions(lock_duration=2.0))

    def now() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    async with connected(servicebus_peer) as client:
        await send(client, "q", ServiceBusMessage("long work"))
        async with client.get_queue_receiver("q") as receiver:
            [message] = await receive(receiver, 1)
            first_until = message.locked_until_utc
            assert first_until is not None
            half_way = first_until - datetime.timedelta(seconds=1)
            await eventually(lambda: now() > half_way, what="half the lock")
            renewed = await receiver.renew_message_lock(message)
            assert renewed > first_until
            await eventually(lambda: now() > first_until, what="the end of the first lock")
            assert await receiver.receive_messages(1, max_wait_time=0.2) == []
            await receiver.complete_message(message)
    assert servicebus_peer.management_settlements == 0


async def test_an_expired_lock_redelivers_the_message(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q", EntityOptions(lock_duration=0.5))
    async with connected(servicebus_peer) as client:
        await send(client, "q", ServiceBusMessage("slow"))
        async with client.get_queue_receiver("q") as receiver:
            [first] = await receive(receiver, 1)
            [second] = await receive(receiver, 1)
            with pytest.raises(MessageLockLostError):
                await receiver.complete_message(first)
            await receiver.complete_message(second)
    assert (str(second), second.delivery_count) == ("slow", 1)
    assert second.lock_token != first.lock_token


async def test_max_delivery_count_dead_letters(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q", EntityOptions(lock_duration=2.0, max_delivery_count=2))
    async with connected(servicebus_peer) as client:
        await send(client, "q", ServiceBusMessage("failing"))
        async with client.get_queue_receiver("q") as receiver:
            for _ in range(2):
                [message] = await receive(receiver, 1)
                await receiver.abandon_message(message)
            assert await receiver.receive_messages(1, max_wait_time=0.5) == []
        async with client.get_queue_receiver(
                "q", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dead_letters:
            [dead] = await receive(dead_letters, 1)
    assert (str(dead), dead.dead_letter_reason) == ("failing", "MaxDeliveryCountExceeded")
    assert dead.delivery_count == 2


async def test_scheduled_messages_arrive_at_their_time(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q")
    now = datetime.datetime.now(datetime.UTC)
    at = now + datetime.timedelta(seconds=1.5)
    async with (connected(servicebus_peer) as client, client.get_queue_sender("q") as sender,
                client.get_queue_receiver("q") as receiver):
        [cancelled] = await sender.schedule_messages(ServiceBusMessage("cancelled"),
                                                     now + datetime.timedelta(hours=1))
        [peeked] = await receiver.peek_messages(5, sequence_number=1)
        assert (str(peeked), peeked.state) == ("cancelled", ServiceBusMessageState.SCHEDULED)
        await sender.cancel_scheduled_messages(cancelled)
        [kept] = await sender.schedule_messages(ServiceBusMessage("kept"), at)
        [message] = await receive(receiver, 1)
        await receiver.complete_message(message)
        assert await receiver.peek_messages(5, sequence_number=1) == []
    assert (str(message), message.sequence_number) == ("kept", kept)
    assert message.enqueued_time_utc is not None
    assert message.enqueued_time_utc >= at.replace(microsecond=at.microsecond // 1000 * 1000)
    assert message.scheduled_enqueue_time_utc is not None


async def test_duplicates_within_the_window_are_dropped(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_queue("q", EntityOptions(duplicate_detection_window=60.0))
    async with connected(servicebus_peer) as client:
        await send(client, "q", ServiceBusMessage("first", message_id="a"),
                   ServiceBusMessage("again", message_id="a"),
                   ServiceBusMessage("other", message_id="b"))
        await send(client, "q", ServiceBusMessage("later", message_id="a"))
        async with client.get_queue_receiver(
                "q", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as receiver:
            got = await receive(receiver, 2)
            assert await receiver.receive_messages(1, max_wait_time=0.5) == []
    assert bodies(got) == ["first", "other"]


async def test_an_entity_that_does_not_exist_is_refused(servicebus_peer: ServiceBusPeer) -> None:
    async with ServiceBusClient.from_connection_string(
            servicebus_peer.connection_string, retry_total=0) as client:
        with pytest.raises(ServiceBusError):  # the peer detaches the link with amqp:not-found
            await send(client, "missing", ServiceBusMessage("lost"))
        servicebus_peer.create_queue("missing")
        async with client.get_queue_receiver("missing") as receiver:
            assert await receiver.peek_messages(1, sequence_number=1) == []


async def test_a_sender_learns_the_largest_message_and_a_larger_one_is_refused(
        servicebus_peer: ServiceBusPeer) -> None:
    """256 KiB, the Standard tier's: a batch fills up to it, and a larger message sent alone
    is refused by the peer (`amqp:link:message-size-exceeded`), which the SDK raises as
    MessageSizeExceededError."""
    servicebus_peer.create_queue("q")
    async with connected(servicebus_peer) as client, client.get_queue_sender("q") as sender:
        batch = await sender.create_message_batch()
        assert batch.max_size_in_bytes == 256 * 1024
        with pytest.raises(MessageSizeExceededError):
            batch.add_message(ServiceBusMessage(b"x" * (256 * 1024)))
        with pytest.raises(MessageSizeExceededError):
            await sender.send_messages(ServiceBusMessage(b"x" * (256 * 1024)))
        await sender.send_messages(ServiceBusMessage(b"x" * (250 * 1024)))
    async with connected(servicebus_peer) as client, client.get_queue_receiver("q") as receiver:
        [message] = await receive(receiver, 1)
        assert len(str(message)) == 250 * 1024
        await receiver.complete_message(message)
