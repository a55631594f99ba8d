"""`broker provision` against a real Service Bus namespace: run only when
MUSSIKON_TEST_SERVICEBUS_CONNECTION holds its connection string (with the Manage right).
Each test provisions a topic of its own and deletes it afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from azure.servicebus.management import TrueRuleFilter

from mussikon.adapters.messaging.servicebus.messages import retry_subject
from mussikon.adapters.messaging.servicebus.provisioning import RULE, provision

CONNECTION = os.environ.get("MUSSIKON_TEST_SERVICEBUS_CONNECTION", "")

pytestmark = [
    pytest.mark.servicebus_live,
    pytest.mark.skipif(not CONNECTION, reason="MUSSIKON_TEST_SERVICEBUS_CONNECTION is not set: "
                                              "no real Service Bus namespace to test against"),
]

RULES = {"musicians": frozenset({"MusicianRegisteredEvent", retry_subject("musicians")}),
         "contracts": frozenset({"ContractSignedEvent", retry_subject("contracts")})}


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    """A topic name of this test's own, deleted afterwards."""
    name = f"mussikon-test-{uuid.uuid4().hex[:10]}"
    yield name
    async with ServiceBusAdministrationClient.from_connection_string(CONNECTION) as admin:
        await admin.delete_topic(name)


async def test_provisioning_a_real_namespace_is_idempotent_and_repairs(topic: str) -> None:
    first: list[str] = []
    assert await provision(CONNECTION, topic, RULES, first.append) == len(first)
    assert first[0] == f"created topic {topic} (duplicate detection 600 s)"
    assert f"rule {topic}/musicians/$Default deleted" in first

    again: list[str] = []
    assert await provision(CONNECTION, topic, RULES, again.append) == 0, again

    async with ServiceBusAdministrationClient.from_connection_string(CONNECTION) as admin:
        properties = await admin.get_topic(topic)
        assert properties.requires_duplicate_detection
        subscription = await admin.get_subscription(topic, "musicians")
        assert subscription.max_delivery_count == 10
        await admin.update_subscription(topic, subscription, max_delivery_count=3)
        await admin.create_rule(topic, "musicians", "$Default", filter=TrueRuleFilter())
        names = [rule.name async for rule in admin.list_rules(topic, "musicians")]
        assert sorted(names) == ["$Default", RULE]

    repaired: list[str] = []
    assert await provision(CONNECTION, topic, RULES, repaired.append) == 2
    assert f"subscription {topic}/musicians updated: max delivery count 3 → 10" in repaired
    assert f"rule {topic}/musicians/$Default deleted" in repaired


async def test_a_provisioned_rule_admits_its_subjects_only(topic: str) -> None:
    await provision(CONNECTION, topic, RULES, lambda line: None)
    async with ServiceBusClient.from_connection_string(CONNECTION) as client:
        async with client.get_topic_sender(topic) as sender:
            await sender.send_messages([
                ServiceBusMessage("{}", subject="MusicianRegisteredEvent"),
                ServiceBusMessage("{}", subject=retry_subject("contracts"))])
        for name, expected in (("musicians", ["MusicianRegisteredEvent"]),
                               ("contracts", [retry_subject("contracts")])):
            async with client.get_subscription_receiver(topic, name,
                                                        max_wait_time=10) as receiver:
                received = await receiver.receive_messages(10, max_wait_time=10)
                assert [m.subject for m in received] == expected
                for message in received:
                    await receiver.complete_message(message)
