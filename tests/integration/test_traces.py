"""Traces across the brokers, recorded with the SDK's in-memory exporter: one HTTP command
gives one trace through the append, the relay's publish, the broker, each subscription's
handling, the saga's steps and the notification, on RabbitMQ and on Service Bus; a .NET
service's message carrying `traceparent` (RabbitMQ) or only `Diagnostic-Id` (Service Bus)
continues its trace."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mussikon.adapters.clock import OffsetClock
from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.entrypoints.http.accounts import Role
from mussikon.entrypoints.http.api import create_api
from mussikon.entrypoints.http.state import ApiState
from tests.integration.rabbitmq_kit import BrokerNamespace, dotnet_publish
from tests.integration.test_servicebus_transport import FAST, TOPIC
from tests.polling import eventually
from tests.servicebus_peer import ServiceBusPeer
from tests.tracing_kit import recording_spans, traceparent_of

GOLDEN = Path(__file__).parent.parent / "golden"
REGISTERED = (GOLDEN / "MusicianRegisteredEvent.json").read_bytes()
REGISTERED_ID = json.loads(REGISTERED)["Id"]
DOTNET_TRACE, DOTNET_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
DOTNET_PARENT = f"00-{DOTNET_TRACE}-{DOTNET_SPAN}-01"
"""The context a .NET service's message carries (its publishing activity)."""


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


@pytest.fixture(params=[pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
                        pytest.param("servicebus", marks=pytest.mark.servicebus)])
async def app(request: pytest.FixtureRequest, tmp_path: Path,
              spans: InMemorySpanExporter) -> AsyncIterator[App]:
    """The application on SQLite, its transport on RabbitMQ (a prefix of its own) or on the
    local Service Bus peer, started."""
    opened = await open_app(Settings(store_url=f"sqlite:///{tmp_path / 'traces.db'}",
                                     sqlite_synchronous="NORMAL", poll_interval=0.01,
                                     poll_max_interval=0.1), OffsetClock())
    namespace: BrokerNamespace | None = None
    if request.param == "rabbitmq":
        url: str = request.getfixturevalue("rabbitmq_url")
        namespace = BrokerNamespace(url, request.getfixturevalue("unique_name"))
        opened.transport = namespace.transport(opened.store, opened.documents,
                                               queue_type="classic")
    else:
        peer: ServiceBusPeer = request.getfixturevalue("servicebus_peer")
        peer.create_topic(TOPIC)
        for name, subjects in subscription_rules(opened.subscriptions,
                                                 opened.codec.event_types).items():
            peer.create_subscription(TOPIC, name, set(subjects))
        opened.transport = ServiceBusTransport(peer.connection_string, opened.store,
                                               opened.documents, opened.codec, **FAST)
    try:
        await opened.start()
        yield opened
    finally:
        await opened.close()
        if namespace is not None:
            await namespace.cleanup()


def in_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans()
            if s.context is not None and s.context.trace_id == trace_id]


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return int(span.parent.span_id) if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def linked(span: ReadableSpan) -> list[int]:
    return [link.context.span_id for link in span.links]


async def test_one_http_command_gives_one_trace_over_every_hop(
        app: App, spans: InMemorySpanExporter) -> None:
    """An application submitted over HTTP: the request, the append, the publish, the broker's
    delivery to each subscription that wants it, the application saga's steps and the
    organizer's notification, all one trace, each hop under the one before it."""
    api = create_api(application=app)
    async with (api.router.lifespan_context(api),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=api),
                                  base_url="http://api") as client):
        state: ApiState = api.state.mussikon
        (_, ana), (_, casa) = (await state.accounts.add("ana", Role.MUSICIAN),
                               await state.accounts.add("casa", Role.ORGANIZER))
        as_ana, as_casa = ({"Authorization": f"Bearer {key}"} for key in (ana, casa))
        await client.post("/musicians", headers=as_ana, json={
            "email": "ana@musicos.example", "name": "Ana", "genres": ["Jazz"],
            "location": "Santo Domingo"})
        await client.post("/organizers", headers=as_casa, json={
            "email": "booking@casa.example", "name": "Casa", "payment_source": "tok_visa"})
        gig = (await client.post("/gigs", headers=as_casa, json={
            "title": "Noche de Jazz", "location": "Santo Domingo", "genre": "Jazz",
            "budget": "1500.00",
            "event_date": (datetime.now(UTC) + timedelta(days=30)).isoformat()})).json()["id"]
        await app.settle()
        spans.clear()
        answer = await client.post(f"/gigs/{gig}/applications", headers=as_ana,
                                   json={"proposed_fee": "900"})
        assert answer.status_code == 201, answer.text
        server = one(list(spans.get_finished_spans()), "POST /gigs/{gig_id}/applications")
        assert server.context is not None
        trace = server.context.trace_id

        def notified() -> bool:
            names = {s.name for s in in_trace(spans, trace)}
            return {"notify application-received",
                    "saga musician-application mark-processed run"} <= names

        await eventually(notified, 30, what="the organizer's notification in the trace")
        await app.settle()

    system = "rabbitmq" if app.transport.__class__.__name__ == "RabbitMqTransport" \
        else "servicebus"
    traced = in_trace(spans, trace)
    assert server.kind is SpanKind.SERVER and server.parent is None
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 201
    append = one(traced, "append application")
    assert append.kind is SpanKind.CLIENT and parent_of(append) == span_id(server)
    assert append.attributes is not None
    correlation = append.attributes["mussikon.correlation_id"]
    [stored] = [r for r in await app.store.read_by_type("MusicianApplicationSubmittedEvent")]
    assert str(stored.event.correlation_id) == correlation
    assert stored.traceparent == traceparent_of(append)

    [publish] = [s for s in traced if s.kind is SpanKind.PRODUCER
                 and s.attributes is not None
                 and s.attributes["messaging.message.id"] == str(stored.event.id)]
    assert publish.name.startswith("publish ") and parent_of(publish) == span_id(append)
    assert publish.attributes is not None
    assert publish.attributes["messaging.system"] == system
    assert publish.attributes["messaging.message.conversation_id"] == correlation
    assert publish.name == f"publish {publish.attributes['messaging.destination.name']!s}"

    processed = [s for s in traced if s.kind is SpanKind.CONSUMER
                 and parent_of(s) == span_id(publish)]
    groups = {s.attributes["messaging.consumer.group.name"] for s in processed
              if s.attributes is not None}
    assert "sagas.musician-application" in groups, groups
    for consumer in processed:
        assert consumer.attributes is not None
        assert linked(consumer) == [span_id(publish)]
        assert consumer.attributes["messaging.system"] == system
        assert consumer.attributes["messaging.message.id"] == str(stored.event.id)
        assert consumer.attributes["messaging.message.conversation_id"] == correlation
        assert consumer.name == \
            f"process {consumer.attributes['messaging.destination.name']!s}"
        if system == "rabbitmq":
            assert consumer.attributes["messaging.rabbitmq.destination.routing_key"]

    by_id = {span_id(s): s for s in traced}

    def hops(span: ReadableSpan) -> list[str]:
        """The names of the span's ancestors, nearest first."""
        out = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            out.append(span.name)
        return out

    step = one(traced, "saga musician-application notify-organizer run")
    # the musician's notice from their handler, the organizer's from the saga's step
    [notify] = [s for s in traced if s.name == "notify application-received"
                and parent_of(s) == span_id(step)]
    assert any(name.startswith("process ") for name in hops(step))
    assert hops(notify)[-1] == server.name  # every hop back to the HTTP request
    assert step.attributes is not None and step.attributes["mussikon.correlation_id"] == \
        correlation
    assert all(s.attributes is not None and s.attributes.get("mussikon.correlation_id")
               in (None, correlation) for s in traced)


@pytest.mark.rabbitmq
async def test_a_dotnet_message_with_a_traceparent_continues_its_trace(
        rabbitmq_url: str, unique_name: str, tmp_path: Path,
        spans: InMemorySpanExporter) -> None:
    """pika plays the .NET service, its message carrying `traceparent` and `tracestate`: the
    consumer's spans are in its trace, under its span and linked to it, the event is stored
    in that context, and the welcome notification is in the trace too."""
    app = await open_app(Settings(store_url=f"sqlite:///{tmp_path / 'traces.db'}",
                                  sqlite_synchronous="NORMAL", poll_interval=0.01,
                                  poll_max_interval=0.1), OffsetClock())
    namespace = BrokerNamespace(rabbitmq_url, unique_name)
    transport = app.transport = namespace.transport(app.store, app.documents,
                                                    queue_type="classic")
    try:
        await app.start()
        await asyncio.to_thread(
            dotnet_publish, rabbitmq_url, transport.topology.events_exchange,
            transport.topology.routing_key("MusicianRegisteredEvent"), REGISTERED,
            "MusicianRegisteredEvent",
            headers={"traceparent": DOTNET_PARENT, "tracestate": "dotnet=1"})
        trace = int(DOTNET_TRACE, 16)
        await eventually(lambda: any(s.name == "notify welcome" for s in in_trace(spans, trace)),
                         30, what="the welcome notification in the .NET trace")
        stored = await app.store.find_event(uuid.UUID(REGISTERED_ID))
        assert stored is not None and stored.origin == "rabbitmq"
        assert stored.traceparent == DOTNET_PARENT
    finally:
        await app.close()
        await namespace.cleanup()
    consumers = [s for s in in_trace(spans, trace) if s.kind is SpanKind.CONSUMER]
    assert consumers
    for consumer in consumers:
        assert parent_of(consumer) == int(DOTNET_SPAN, 16)
        assert linked(consumer) == [int(DOTNET_SPAN, 16)]
        assert consumer.parent is not None and consumer.parent.is_remote
        assert consumer.context is not None
        assert consumer.context.trace_state.get("dotnet") == "1"


@pytest.mark.servicebus
async def test_a_dotnet_message_with_only_a_diagnostic_id_continues_its_trace(
        servicebus_peer: ServiceBusPeer, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    """On Service Bus, .NET's SDK keeps the context in `Diagnostic-Id`: a message carrying it
    alone continues its trace."""
    app = await open_app(Settings(store_url=f"sqlite:///{tmp_path / 'traces.db'}",
                                  sqlite_synchronous="NORMAL", poll_interval=0.01,
                                  poll_max_interval=0.1), OffsetClock())
    servicebus_peer.create_topic(TOPIC)
    rules = subscription_rules(app.subscriptions, app.codec.event_types)
    for name, subjects in rules.items():
        servicebus_peer.create_subscription(TOPIC, name, set(subjects))
    app.transport = ServiceBusTransport(servicebus_peer.connection_string, app.store,
                                        app.documents, app.codec, **FAST)
    trace = int(DOTNET_TRACE, 16)
    try:
        await app.start()
        properties: dict[str | bytes, Any] = {
            "EventType": "MusicianRegisteredEvent", "Version": "1.0",
            "Diagnostic-Id": DOTNET_PARENT}
        async with (ServiceBusClient.from_connection_string(
                servicebus_peer.connection_string) as client,
                client.get_topic_sender(TOPIC) as sender):
            await sender.send_messages(ServiceBusMessage(
                REGISTERED, content_type="application/json", message_id=str(uuid.uuid4()),
                subject="MusicianRegisteredEvent", application_properties=properties))
        await eventually(lambda: any(s.name == "notify welcome" for s in in_trace(spans, trace)),
                         30, what="the welcome notification in the .NET trace")
    finally:
        await app.close()
    consumers = [s for s in in_trace(spans, trace) if s.kind is SpanKind.CONSUMER]
    assert consumers
    for consumer in consumers:
        assert parent_of(consumer) == int(DOTNET_SPAN, 16)
        assert linked(consumer) == [int(DOTNET_SPAN, 16)]
        assert consumer.attributes is not None
        assert consumer.attributes["messaging.system"] == "servicebus"
        assert consumer.attributes["messaging.destination.name"] == TOPIC
