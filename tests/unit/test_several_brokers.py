"""One bus over several brokers: `MUSSIKON_BROKER_URL` naming an `amqp://` cluster and a
Service Bus namespace, read and masked; `SeveralBrokers` starting what answers and the rest in
the background, handling one copy of a message at a time, paging dead letters across the
brokers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from mussikon.adapters.messaging.brokers import Broker, SeveralBrokers
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.bootstrap import ConfigurationError, open_transport
from mussikon.config import Settings, describe_broker, mask_url, split_brokers
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.transport import (
    DeadLetter,
    Envelope,
    Replayed,
    Subscription,
    Transport,
    TransportNotReady,
)
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import sample_event
from tests.polling import eventually

KEY = "s3cr3t+Key/Value="
SERVICEBUS = (f"Endpoint=sb://mussikon.servicebus.windows.net/;SharedAccessKeyName=app;"
              f"SharedAccessKey={KEY}")
NODES = "amqp://app:pw1@n1:5672/,amqp://app:pw1@n2:5672/"


def test_a_list_names_one_rabbitmq_cluster_and_one_service_bus_namespace() -> None:
    assert split_brokers(f"{NODES},{SERVICEBUS}") == [NODES, SERVICEBUS]
    assert split_brokers(f"{SERVICEBUS}, {NODES}") == [SERVICEBUS, NODES]
    assert split_brokers(f"amqp://a@n1/,{SERVICEBUS},amqp://a@n2/") == [
        "amqp://a@n1/,amqp://a@n2/", SERVICEBUS]
    assert split_brokers(NODES) == [NODES]
    assert split_brokers(SERVICEBUS) == [SERVICEBUS]


def test_every_secret_of_a_list_is_masked() -> None:
    masked = mask_url(f"{NODES},{SERVICEBUS}")
    assert KEY not in masked and "pw1" not in masked
    assert "amqp://app:***@n2:5672/" in masked and "SharedAccessKey=***" in masked


def test_each_broker_is_named_without_its_secrets() -> None:
    assert describe_broker(NODES) == "RabbitMQ amqp://app:***@n1:5672/,amqp://app:***@n2:5672/"
    assert describe_broker(SERVICEBUS) == "Service Bus sb://mussikon.servicebus.windows.net"
    assert describe_broker(SERVICEBUS.replace(".net/", ".net:5671/")).endswith(".net:5671")


def test_the_settings_check_each_connection_string_of_a_list() -> None:
    with pytest.raises(ValueError, match="SharedAccessKey"):
        Settings(broker_url=f"{NODES},Endpoint=sb://x.servicebus.windows.net/;"
                            "SharedAccessKeyName=app")


def _transport(url: str) -> Transport:
    codec = EventCodec()
    return open_transport(Settings(broker_url=url), InMemoryEventStore(codec),
                          InMemoryDocumentStore(), codec)


def test_bootstrap_builds_one_bus_over_both_brokers() -> None:
    bus = _transport(f"{NODES},{SERVICEBUS}")
    assert isinstance(bus, SeveralBrokers)
    assert [type(t).__name__ for t in bus.transports] == ["RabbitMqTransport",
                                                          "ServiceBusTransport"]
    assert KEY not in repr(bus) and "pw1" not in repr(bus)


@pytest.mark.parametrize(("url", "why"), [
    (f"memory://,{SERVICEBUS}", "amqp:// URLs .* and Service Bus connection strings"),
    (f"{SERVICEBUS},{SERVICEBUS.replace('mussikon.', 'other.')}", "one Service Bus namespace"),
])
def test_a_list_bootstrap_cannot_use_is_one_clear_error(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as refused:
        _transport(url)
    assert KEY not in str(refused.value)


class FakeTransport(Transport):
    """A broker's transport that fails to start `unreachable` times, then starts; its dead
    letters are given."""

    replays_in_place = False

    def __init__(self, name: str, letters: Sequence[str] = (), unreachable: int = 0,
                 not_ready: bool = False) -> None:
        self.name, self.unreachable, self.not_ready = name, unreachable, not_ready
        self.letters = [DeadLetter(id, "s", id, "E", None, 1, "E", "r", "{}",
                                   datetime.now(UTC)) for id in letters]
        self.subscriptions: list[Subscription] = []
        self.running = False
        self.stopped = 0

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        if self.not_ready:
            raise TransportNotReady(f"{self.name} lacks its entities")
        if self.unreachable:
            self.unreachable -= 1
            raise ConnectionError(f"{self.name} is not reachable")
        self.subscriptions, self.running = list(subscriptions), True

    async def open_for_operations(self, subscriptions: Sequence[Subscription]) -> None:
        pass

    async def ready(self) -> str | None:
        return None if self.running else f"{self.name}: not started"

    def wake(self) -> None:
        pass

    async def wait_idle(self, timeout: float = 30.0) -> None:
        pass

    async def stop(self) -> None:
        self.running = False
        self.stopped += 1

    async def dead_letters(self, limit: int | None = None,
                           after: str | None = None) -> list[DeadLetter]:
        ids = [d.id for d in self.letters]
        start = 0 if after is None else ids.index(after) + 1
        return self.letters[start:None if limit is None else start + limit]

    async def find_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        return next((d for d in self.letters if d.id == dead_letter_id), None)

    async def dead_letter_ids(self, prefix: str, limit: int) -> list[str]:
        return sorted(d.id for d in self.letters if d.id.startswith(prefix))[:limit]

    async def replay(self, dead_letter_id: str) -> bool:
        await self.delete_dead_letter(dead_letter_id)
        return True

    async def replay_all_dead_letters(self) -> list[Replayed]:
        return [Replayed(d.id, await self.replay(d.id)) for d in list(self.letters)]

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        letter = await self.find_dead_letter(dead_letter_id)
        if letter is None:
            raise KeyError(dead_letter_id)
        self.letters.remove(letter)

    async def purge_dead_letters(self) -> int:
        count, self.letters = len(self.letters), []
        return count


def _bus(*transports: FakeTransport) -> tuple[SeveralBrokers, list[FakeTransport]]:
    """The bus over these transports; the list holds every transport it made (a broker down
    at start gets a fresh one for each try)."""
    made: list[FakeTransport] = []

    def broker(first: FakeTransport) -> Broker:
        tries = first.unreachable

        def make() -> Transport:
            nonlocal tries
            # The first try is `first`; each later one is a fresh transport, one failure less.
            made.append(first if first not in made else FakeTransport(
                first.name, unreachable=int(tries > 0)))
            tries = max(tries - 1, 0)
            return made[-1]
        return Broker(first.name, make)

    return SeveralBrokers([broker(t) for t in transports], restart_delays=(0.01,)), made


async def test_a_broker_down_at_start_is_started_again_until_it_answers() -> None:
    bus, made = _bus(FakeTransport("rabbitmq", unreachable=3), FakeTransport("servicebus"))
    subscription = Subscription("s", frozenset({"E"}), _ignore)
    await bus.start([subscription])
    assert made[1].running and not made[0].running
    await eventually(lambda: bus.transports[0] is not made[0] and made[-1].running)
    assert bus.transports[0] is made[-1]
    assert [s.name for s in made[-1].subscriptions] == ["s"]
    await bus.wait_idle(1)
    await bus.stop()
    assert not any(t.running for t in made) and made[0].stopped >= 1


async def test_ready_names_the_broker_not_reached_and_why_until_it_answers() -> None:
    bus, made = _bus(FakeTransport("rabbitmq"), FakeTransport("servicebus", unreachable=1))
    bus.restart_delays = (0.3,)
    await bus.start([])

    assert await bus.ready() == ("servicebus: not reached (servicebus is not reachable); "
                                 "tried again in the background")
    await eventually(lambda: made[-1].running)
    assert await bus.ready() is None
    made[0].running = False  # its connection lost
    assert await bus.ready() == "rabbitmq: not started"
    await bus.stop()


async def test_with_every_broker_down_start_fails_with_the_first_reason() -> None:
    bus, _ = _bus(FakeTransport("rabbitmq", unreachable=1),
                     FakeTransport("servicebus", unreachable=1))
    with pytest.raises(ConnectionError, match="rabbitmq is not reachable"):
        await bus.start([])


async def test_a_broker_without_its_entities_stops_the_start_and_what_it_started() -> None:
    bus, made = _bus(FakeTransport("rabbitmq"), FakeTransport("servicebus", not_ready=True))
    with pytest.raises(TransportNotReady):
        await bus.start([])
    assert not made[0].running and made[0].stopped == 1


async def _ignore(envelope: Envelope) -> None:
    pass


async def test_two_copies_of_a_message_are_handled_one_after_the_other() -> None:
    bus, made = _bus(FakeTransport("rabbitmq"), FakeTransport("servicebus"))
    running, most, handled = 0, 0, []
    release = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        handled.append(envelope.message_id)
        running -= 1

    await bus.start([Subscription("s", frozenset({"E"}), handler)])
    event = sample_event(MusicianRegisteredEvent)
    async def deliver(transport: FakeTransport, message_id: str) -> None:
        await transport.subscriptions[0].handler(Envelope(message_id, event))

    copies = [asyncio.create_task(deliver(t, str(event.id))) for t in made]
    other = asyncio.create_task(deliver(made[0], "other"))
    await eventually(lambda: running == 2)  # the first copy and the other message
    release.set()
    await asyncio.gather(*copies, other)
    assert most == 2 and sorted(handled) == sorted([str(event.id)] * 2 + ["other"])
    await bus.stop()


async def test_dead_letters_are_paged_across_the_brokers() -> None:
    bus, _ = _bus(FakeTransport("rabbitmq", letters=["r1", "r2"]),
                  FakeTransport("servicebus", letters=["s:1", "s:2"]))
    assert [d.id for d in await bus.dead_letters()] == ["r1", "r2", "s:1", "s:2"]
    assert [d.id for d in await bus.dead_letters(3)] == ["r1", "r2", "s:1"]
    assert [d.id for d in await bus.dead_letters(2, after="r2")] == ["s:1", "s:2"]
    assert [d.id for d in await bus.dead_letters(after="s:1")] == ["s:2"]
    with pytest.raises(KeyError):
        await bus.dead_letters(after="nope")
    assert await bus.dead_letter_ids("", 3) == ["r1", "r2", "s:1"]
    assert (await bus.find_dead_letter("s:2")) is not None
    assert await bus.replay("s:2") and await bus.find_dead_letter("s:2") is None
    await bus.delete_dead_letter("r1")
    with pytest.raises(KeyError):
        await bus.delete_dead_letter("r1")
    assert await bus.purge_dead_letters() == 2 and await bus.dead_letters() == []
