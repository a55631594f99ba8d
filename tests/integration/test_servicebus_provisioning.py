"""`mussikon broker provision` through the SDK's administration client against the local peer:
from nothing it creates the topic, subscriptions and rules the transport then receives through
(the peer applies the SQL rules); a second run changes nothing; a subscription with the wrong
rule or settings is repaired; errors are one line without the key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from azure.servicebus.management import CorrelationRuleFilter, SqlRuleFilter

from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.messages import retry_subject
from mussikon.adapters.messaging.servicebus.provisioning import (
    RULE,
    EntitySettings,
    PlainHttpTransport,
    ProvisioningError,
    provision,
    rule_expression,
)
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import ContractSignedEvent, MusicianRegisteredEvent
from mussikon.wire import EventCodec
from tests.command_line import environment, mussikon, one_error_line
from tests.integration.rabbitmq_kit import Recorder, append, sample_event
from tests.servicebus_peer import EntityOptions, ServiceBusPeer
from tests.servicebus_peer.broker import Subscription, Topic
from tests.servicebus_peer.rules import SqlFilter, Unsupported

pytestmark = pytest.mark.servicebus

TOPIC = "mussikon-events"
FAST: dict[str, Any] = {"retry_delays": (0.01,), "delayed_retry_delays": (0.3,),
                        "lease_seconds": 1.5, "poll_interval": 0.02, "poll_max_interval": 0.2,
                        "timeout": 10.0, "stop_grace": 5.0}


def _topic(peer: ServiceBusPeer) -> Topic:
    topic = peer._targets[TOPIC]
    assert isinstance(topic, Topic)
    return topic


def _subscription(peer: ServiceBusPeer, name: str) -> Subscription:
    return _topic(peer).subscriptions[name.lower()]


@pytest.fixture
async def transports() -> AsyncIterator[list[ServiceBusTransport]]:
    started: list[ServiceBusTransport] = []
    yield started
    for transport in started:
        await transport.stop()


async def test_provisioned_entities_carry_each_subscription_its_types_and_its_retries(
        servicebus_peer: ServiceBusPeer, transports: list[ServiceBusTransport]) -> None:
    codec = EventCodec()
    store, documents = InMemoryEventStore(codec), InMemoryDocumentStore()
    musicians, welcome, contracts = Recorder(), Recorder(), Recorder()
    subscriptions = [musicians.subscription("musicians", ["MusicianRegisteredEvent"]),
                     welcome.subscription("welcome", ["MusicianRegisteredEvent"]),
                     contracts.subscription("contracts", ["ContractSignedEvent"])]
    lines: list[str] = []
    changes = await provision(servicebus_peer.connection_string, TOPIC,
                              subscription_rules(subscriptions, codec.event_types), lines.append)
    assert f"created topic {TOPIC} (duplicate detection 600 s)" in lines
    assert f"created rule {TOPIC}/musicians/{RULE}: sys.Label IN ('MusicianRegisteredEvent', " \
           "'mussikon.retry:musicians')" in lines
    assert f"rule {TOPIC}/musicians/$Default deleted" in lines
    assert changes == len(lines)
    assert _topic(servicebus_peer).options.duplicate_detection_window == 600
    assert _subscription(servicebus_peer, "welcome").options == EntityOptions(60.0, 10, None)
    assert list(_subscription(servicebus_peer, "welcome").rules) == [RULE]

    transport = ServiceBusTransport(servicebus_peer.connection_string, store, documents, codec,
                                    **FAST)
    transports.append(transport)
    await transport.start(subscriptions)
    bad = sample_event(MusicianRegisteredEvent, 1)
    musicians.fail_for.add(str(bad.id))
    registered = [bad, sample_event(MusicianRegisteredEvent, 2)]
    signed = [sample_event(ContractSignedEvent, 3)]
    await append(store, [*registered, *signed])
    transport.wake()
    await transport.wait_idle(30)
    assert sorted(e.message_id for e in welcome.handled) == sorted(str(e.id) for e in registered)
    assert [e.message_id for e in contracts.handled] == [str(signed[0].id)]
    # The copy scheduled for `musicians` came back to it (two tries, then two more), and to
    # no other subscription.
    assert musicians.calls[str(bad.id)] == 4
    assert welcome.calls[str(bad.id)] == 1
    assert contracts.calls[str(bad.id)] == 0


def _provision_command(peer: ServiceBusPeer, tmp_path: Path, *args: str, **settings: str
                       ) -> Any:
    return mussikon("broker", "provision", *args, cwd=tmp_path,
                    env=environment(broker_url=peer.connection_string, store_url="memory://",
                                    **settings))


def test_the_demos_entities_are_provisioned_apart(servicebus_peer: ServiceBusPeer,
                                                  tmp_path: Path) -> None:
    done = _provision_command(servicebus_peer, tmp_path, "--demo")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(f"created topic {TOPIC}-demo ")
    assert set(servicebus_peer.topics()) == {f"{TOPIC}-demo"}


def test_the_command_creates_everything_once_then_changes_nothing(
        servicebus_peer: ServiceBusPeer, tmp_path: Path) -> None:
    first = _provision_command(servicebus_peer, tmp_path)
    assert first.returncode == 0, first.stderr
    created = first.stdout.splitlines()
    assert created[0] == f"created topic {TOPIC} (duplicate detection 600 s)"
    assert "created subscription mussikon-events/musicians.on-registered (max delivery count " \
           "10, lock 60 s)" in created
    assert created[-1] == f"{len(created) - 1} changes made"
    subscriptions = _topic(servicebus_peer).subscriptions
    assert "mussikon.record" in subscriptions
    for subscription in subscriptions.values():
        assert list(subscription.rules) == [RULE]
    assert subscriptions["musicians.on-registered"].rules[RULE].expression == rule_expression(
        {"MusicianRegisteredEvent", retry_subject("musicians.on-registered")})

    second = _provision_command(servicebus_peer, tmp_path)
    assert second.returncode == 0, second.stderr
    again = second.stdout.splitlines()
    assert again[-1] == "nothing changed"
    assert all(line.endswith(" exists") for line in again[:-1]), again
    assert len(again) == len(created) - len(subscriptions)  # no "$Default deleted" lines


async def test_a_subscription_with_the_wrong_rule_and_settings_is_repaired(
        servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_topic(TOPIC, EntityOptions(duplicate_detection_window=60))
    servicebus_peer.create_subscription(TOPIC, "musicians", None,
                                        EntityOptions(lock_duration=5, max_delivery_count=3))
    subscription = _subscription(servicebus_peer, "musicians")
    subscription.rules[RULE] = SqlFilter.parse("sys.Label = 'ContractSignedEvent'")
    wanted = {"musicians": frozenset({"MusicianRegisteredEvent", retry_subject("musicians")})}
    lines: list[str] = []
    changes = await provision(servicebus_peer.connection_string, TOPIC, wanted, lines.append,
                              EntitySettings())
    assert lines == [
        f"topic {TOPIC}: duplicate detection window 60 s → 600 s",
        f"subscription {TOPIC}/musicians updated: max delivery count 3 → 10, lock 5 s → 60 s",
        f"rule {TOPIC}/musicians/{RULE} replaced: "
        "sys.Label IN ('MusicianRegisteredEvent', 'mussikon.retry:musicians')",
        f"rule {TOPIC}/musicians/$Default deleted"]
    assert changes == 4
    assert list(subscription.rules) == [RULE]
    assert subscription.options == EntityOptions(60.0, 10, None)
    assert _topic(servicebus_peer).options.duplicate_detection_window == 600


async def test_a_topic_without_duplicate_detection_is_refused(
        servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_topic(TOPIC)
    with pytest.raises(ProvisioningError, match="exists without duplicate detection, which "
                                                "cannot be turned on for an existing topic"):
        await provision(servicebus_peer.connection_string, TOPIC,
                        {"musicians": frozenset({"MusicianRegisteredEvent"})}, print)
    # What could be done was done.
    assert list(_subscription(servicebus_peer, "musicians").rules) == [RULE]


def test_an_unreachable_namespace_is_one_line_without_the_key(tmp_path: Path,
                                                             unique_name: str) -> None:
    secret = f"key{uuid.uuid4().hex}"
    with ServiceBusPeer() as peer:
        port = peer.port  # free once the peer is gone
    connection = (f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=Root;"
                  f"SharedAccessKey={secret};UseDevelopmentEmulator=true")
    result = mussikon("broker", "provision", cwd=tmp_path,
                      env=environment(broker_url=connection, store_url="memory://"))
    line = one_error_line(result)
    assert line.startswith(f"error: MUSSIKON_BROKER_URL: Service Bus 127.0.0.1:{port}: reading "
                           f"topic {TOPIC} failed: "), line
    assert secret not in result.stdout + result.stderr


def test_a_malformed_connection_string_is_one_line_without_the_key(tmp_path: Path) -> None:
    secret = f"key{uuid.uuid4().hex}"
    connection = f"Endpoint=sb://127.0.0.1:1;SharedAccessKey={secret}"
    result = mussikon("broker", "provision", cwd=tmp_path,
                      env=environment(broker_url=connection, store_url="memory://"))
    line = one_error_line(result)
    assert "needs SharedAccessKeyName" in line, line
    assert secret not in result.stdout + result.stderr


def test_the_in_process_transport_has_nothing_to_provision(tmp_path: Path) -> None:
    result = mussikon("broker", "provision", cwd=tmp_path,
                      env=environment(broker_url="memory://", store_url="memory://"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "memory://: the in-process transport has no broker: nothing to provision"]


def test_the_peer_reads_the_rule_forms_provisioning_writes_and_refuses_others() -> None:
    rule = SqlFilter.parse("sys.Label IN ('A', 'it''s') OR [EventType] = 'B' "
                           "OR sys.MessageId = 'm'")
    assert rule.comparisons[0].values == {"A", "it's"}
    assert SqlFilter.parse("1=1").comparisons[0].admit_all
    for unread in ("sys.Label = 'A' AND EventType = 'B'", "sys.Label LIKE 'A%'",
                   "sys.To = 'x'", "Count > 3"):
        with pytest.raises(Unsupported):
            SqlFilter.parse(unread)


async def test_the_peer_refuses_a_rule_it_cannot_apply(servicebus_peer: ServiceBusPeer) -> None:
    servicebus_peer.create_topic(TOPIC)
    servicebus_peer.create_subscription(TOPIC, "musicians")
    async with ServiceBusAdministrationClient.from_connection_string(
            servicebus_peer.connection_string, transport=PlainHttpTransport()) as admin:
        with pytest.raises(HttpResponseError, match="does not model"):
            await admin.create_rule(TOPIC, "musicians", "odd",
                                    filter=SqlRuleFilter("sys.Label LIKE 'Music%'"))
        with pytest.raises(HttpResponseError, match="does not model"):
            await admin.create_rule(TOPIC, "musicians", "odd",
                                    filter=CorrelationRuleFilter(label="MusicianRegisteredEvent"))
        assert [rule.name async for rule in admin.list_rules(TOPIC, "musicians")] == ["$Default"]
