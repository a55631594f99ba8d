"""`broker provision` against the local peer (marker `servicebus`) and a real Service Bus
namespace (marker `servicebus_live`) when MUSSIKON_TEST_SERVICEBUS_CONNECTION holds its
connection string, with the Manage right (skipped with that reason otherwise, also under
MUSSIKON_REQUIRE_SERVICES=1). Each test provisions a topic of its own and deletes it
afterwards."""

from __future__ import annotations

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.management import TrueRuleFilter

from mussikon.adapters.messaging.servicebus.messages import retry_subject
from mussikon.adapters.messaging.servicebus.provisioning import RULE, provision
from tests.integration.servicebus_kit import administration

RULES = {"musicians": frozenset({"MusicianRegisteredEvent", retry_subject("musicians")}),
         "contracts": frozenset({"ContractSignedEvent", retry_subject("contracts")})}


async def test_provisioning_is_idempotent_and_repairs(
        servicebus_connection: str, servicebus_topic: str) -> None:
    connection, topic = servicebus_connection, servicebus_topic
    first: list[str] = []
    assert await provision(connection, topic, RULES, first.append) == len(first)
    assert first[0] == f"created topic {topic} (duplicate detection 600 s)"
    assert f"rule {topic}/musicians/$Default deleted" in first

    again: list[str] = []
    assert await provision(connection, topic, RULES, again.append) == 0, again

    async with administration(connection) as admin:
        properties = await admin.get_topic(topic)
        assert properties.requires_duplicate_detection
        subscription = await admin.get_subscription(topic, "musicians")
        assert subscription.max_delivery_count == 10
        await admin.update_subscription(topic, subscription, max_delivery_count=3)
        await admin.create_rule(topic, "musicians", "$Default", filter=TrueRuleFilter())
        names = [rule.name async for rule in admin.list_rules(topic, "musicians")]
        assert sorted(names) == ["$Default", RULE]

    repaired: list[str] = []
    assert await provision(connection, topic, RULES, repaired.append) == 2
    assert f"subscription {topic}/musicians updated: max delivery count 3 → 10" in repaired
    assert f"rule {topic}/musicians/$Default deleted" in repaired


async def test_a_provisioned_rule_admits_its_subjects_only(
        servicebus_connection: str, servicebus_topic: str) -> None:
    connection, topic = servicebus_connection, servicebus_topic
    await provision(connection, topic, RULES, lambda line: None)
    async with ServiceBusClient.from_connection_string(connection) as client:
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
