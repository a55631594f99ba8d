"""RabbitMQ topology names: the specification's five keys, derived keys for the rest, never an
empty key, a prefix on every exchange and queue name but a named events exchange."""

from __future__ import annotations

import pytest

from mussikon.adapters.messaging.rabbitmq.topology import (
    SPECIFICATION_ROUTING_KEYS,
    Topology,
    derived_routing_key,
    format_delay,
)
from mussikon.domain.events import ALL_EVENT_TYPES, SPECIFICATION_EVENT_TYPES

ALL = [cls.__name__ for cls in ALL_EVENT_TYPES]


def test_the_specification_events_use_the_specification_routing_keys() -> None:
    topology = Topology(ALL)
    keys = {cls.__name__: topology.routing_key(cls.__name__) for cls in SPECIFICATION_EVENT_TYPES}
    assert keys == {
        "MusicianRegisteredEvent": "musician.registered",
        "EventCreatedEvent": "event.created",
        "MusicianApplicationSubmittedEvent": "application.submitted",
        "ContractSignedEvent": "contract.signed",
        "PaymentProcessedEvent": "payment.processed",
    }
    assert set(SPECIFICATION_ROUTING_KEYS) == set(keys)


@pytest.mark.parametrize(("event_type", "key"), [
    ("ApplicationAcceptedEvent", "application.accepted"),
    ("ContractPartySignedEvent", "contract.party.signed"),
    ("ContractPaymentFailedEvent", "contract.payment.failed"),
    ("OrganizerRegisteredEvent", "organizer.registered"),
    ("EventClosedEvent", "event.closed"),
    ("MusicianApplicationSubmittedEvent", "musician.application.submitted"),
])
def test_other_routing_keys_are_the_words_of_the_class_name(event_type: str, key: str) -> None:
    assert derived_routing_key(event_type) == key


@pytest.mark.parametrize("event_type", ["", "Event", "not-a-class", "Événement"])
def test_a_routing_key_is_never_empty_or_made_up(event_type: str) -> None:
    with pytest.raises(ValueError, match="no routing key"):
        derived_routing_key(event_type)


def test_every_known_event_type_has_its_own_queue() -> None:
    topology = Topology(ALL)
    queues = topology.event_queues()
    assert len(queues) == len(set(queues)) == len(ALL)
    assert all(queues)


def test_two_types_on_one_key_are_refused() -> None:
    with pytest.raises(ValueError, match="share the routing key"):
        Topology(["ContractSignedEvent", "OtherEvent"], routing_keys={"OtherEvent":
                                                                       "contract.signed"})


def test_an_unknown_type_has_no_queue() -> None:
    with pytest.raises(KeyError, match="NoSuchEvent"):
        Topology(ALL).queue("NoSuchEvent")


def test_a_prefix_goes_before_every_exchange_and_queue_but_not_the_routing_keys() -> None:
    topology = Topology(ALL, prefix="t1.")
    assert all(e.name.startswith("t1.") for e in topology.exchanges())
    assert all(q.name.startswith("t1.") for q in topology.queues())
    assert topology.routing_key("ContractSignedEvent") == "contract.signed"
    assert topology.queue("ContractSignedEvent") == "t1.contract.signed"


def test_a_named_events_exchange_is_shared_as_it_is_and_the_queues_stay_prefixed() -> None:
    """Two instances, each its own prefix, one events exchange: each has its own queues on
    that exchange."""
    a, b = (Topology(ALL, prefix=p, events_exchange="bus.events") for p in ("a.", "b."))
    assert a.events_exchange == b.events_exchange == "bus.events"
    assert a.queue("ContractSignedEvent") == "a.contract.signed"
    bound = {q.name: {e for e, _ in q.bindings} for t in (a, b) for q in t.queues()}
    assert bound["a.contract.signed"] == bound["b.contract.signed"] == {"bus.events"}
    assert not set(a.event_queues()) & set(b.event_queues())
    assert a.dead_letter_queue == "a.mussikon.dlq"
    assert all(e.name.startswith("a.") for e in a.exchanges() if e.name != "bus.events")
    assert Topology(ALL, prefix="a.").events_exchange == "a.mussikon.events"


def test_the_default_names_are_the_specifications() -> None:
    topology = Topology(ALL)
    exchanges = {e.name: e.type for e in topology.exchanges()}
    assert exchanges["mussikon.events"] == "topic"
    assert exchanges["mussikon.notifications"] == "direct"
    assert topology.dead_letter_queue == "mussikon.dlq"
    assert [s.queue for s in topology.retry_stages] == [
        "mussikon.retry.1s", "mussikon.retry.10s", "mussikon.retry.60s"]


def test_classic_queues_are_declared_as_the_specification_declares_them() -> None:
    topology = Topology(ALL, queue_type="classic")
    by_name = {q.name: q for q in topology.queues()}
    assert by_name["musician.registered"].arguments == {}
    assert by_name["musician.registered"].bindings == (
        ("mussikon.events", "musician.registered"),
        ("mussikon.events", "musicianregisteredevent"))


@pytest.mark.parametrize("event_type", ALL)
def test_each_queue_is_bound_by_its_routing_key_and_by_the_event_bus_key(
        event_type: str) -> None:
    """The specification's `RabbitMQService` publishes with the queue's name; the exercise's
    `EventBus` with `EventType.ToLower()`: both reach the queue, on any prefix."""
    topology = Topology(ALL, prefix="t.")
    by_name = {q.name: q for q in topology.queues()}
    key = topology.routing_key(event_type)
    assert by_name[topology.queue(event_type)].bindings == (
        ("t.mussikon.events", key), ("t.mussikon.events", event_type.lower()))
    every_key = [k for q in topology.queues() for _, k in q.bindings if q.name != "t.mussikon.dlq"
                 and not q.name.startswith("t.mussikon.retry")]
    assert len(every_key) == len(set(every_key))  # no key reaches two queues


def test_quorum_queues_bound_redeliveries_of_a_message_that_kills_its_consumer() -> None:
    queue = {q.name: q for q in Topology(ALL, delivery_limit=7).queues()}["contract.signed"]
    assert queue.arguments["x-queue-type"] == "quorum"
    assert queue.arguments["x-delivery-limit"] == 7
    assert queue.arguments["x-dead-letter-exchange"] == "mussikon.dlx"


def test_retry_queues_wait_then_go_back_through_the_default_exchange() -> None:
    topology = Topology(ALL, delayed_retry_delays=(0.2, 1.5))
    retries = [q for q in topology.queues() if q.name.startswith("mussikon.retry.")]
    assert [q.name for q in retries] == ["mussikon.retry.200ms", "mussikon.retry.1500ms"]
    assert [q.arguments["x-message-ttl"] for q in retries] == [200, 1500]
    assert all(q.arguments["x-dead-letter-exchange"] == "" for q in retries)


def test_delays_are_named_in_whole_units() -> None:
    assert [format_delay(d) for d in (1, 10, 60, 0.25)] == ["1s", "10s", "60s", "250ms"]
    with pytest.raises(ValueError):
        format_delay(0)


def test_an_unknown_queue_type_is_refused() -> None:
    with pytest.raises(ValueError, match="queue_type"):
        Topology(ALL, queue_type="stream")  # type: ignore[arg-type]
