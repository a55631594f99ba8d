"""The AsyncAPI 3.0 document of the bus, generated from the code that makes the bus.

Every event type is a message whose payload schema is the codec's (`EventCodec.json_schema`:
the .NET property names and JSON types); its headers, message id and correlation id are the
relay's (`message_contract`, `rabbitmq.properties`, `servicebus.messages`). The channels and
operations are the RabbitMQ topology the transport declares (`Topology`, built by bootstrap
from the settings, as for a worker) and the Service Bus entities `mussikon broker provision`
creates (`subscription_rules`, `rule_expression`). The settings that name things (prefix,
events exchange, queue type, retry delays, topic) shape the document as they shape the bus.

This service publishes every event it stores and receives every event type (its own and those
the .NET services publish, which it records once, in causal order). The document names the
brokers by host and port alone: never a user, password or key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from importlib.metadata import version
from typing import Any
from urllib.parse import unquote, urlsplit

from mussikon.adapters.messaging import message_contract as contract
from mussikon.bootstrap import open_app
from mussikon.config import (
    ServiceBusConnectionString,
    Settings,
    is_servicebus_connection_string,
    split_brokers,
    split_urls,
)
from mussikon.domain.prerequisites import prerequisites
from mussikon.ports.transport import Subscription
from mussikon.wire import EventCodec

Document = dict[str, Any]

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING = "0.3.0"
FORMATS = ("json", "yaml")
_PLACEHOLDER_AMQP = "amqp://localhost:5672/"
"""The URL the RabbitMQ part is built with when the settings name no RabbitMQ broker (the
transport is only made, never connected)."""


async def asyncapi_document(settings: Settings) -> Document:
    """The document of the bus these settings describe (a broker they do not name is
    described with its defaults: a team may run either)."""
    rabbitmq_url = next((one for one in split_brokers(settings.broker_url)
                         if urlsplit(split_urls(one)[0]).scheme in ("amqp", "amqps")), "")
    app = await open_app(settings.model_copy(update={
        "store_url": "memory://", "broker_url": rabbitmq_url or _PLACEHOLDER_AMQP}))
    try:
        from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport

        transport = app.transport
        assert isinstance(transport, RabbitMqTransport)
        return _Builder(settings, app.codec, app.subscriptions, rabbitmq_url).build(transport)
    finally:
        await app.close()


def render(document: Document, output_format: str) -> str:
    """The document as JSON or YAML text."""
    if output_format == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output_format == "yaml":
        import yaml

        class Dumper(yaml.SafeDumper):  # type: ignore[misc]
            def ignore_aliases(self, data: Any) -> bool:
                return True  # a message used on several channels is written out each time

        text: str = yaml.dump(document, Dumper=Dumper, sort_keys=False, allow_unicode=True,
                              width=100)
        return text
    raise ValueError(f"format {output_format!r}: use {' or '.join(FORMATS)}")


class _Builder:
    def __init__(self, settings: Settings, codec: EventCodec,
                 subscriptions: Sequence[Subscription], rabbitmq_url: str) -> None:
        self.settings, self.codec = settings, codec
        self.subscriptions = subscriptions
        self.rabbitmq_url = rabbitmq_url
        self.channels: Document = {}
        self.operations: Document = {}
        self.messages: Document = {}

    def build(self, transport: Any) -> Document:
        schemas = {name: self.codec.json_schema(name) for name in self.codec.event_types}
        self._rabbitmq(transport.topology)
        servers: Document = {"rabbitmq": self._rabbitmq_server()}
        servicebus = self._servicebus()
        if servicebus is not None:
            servers["servicebus"] = servicebus
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": "MussikOn events",
                "version": version("mussikon"),
                "description": (
                    "The domain events of the MussikOn marketplace as they travel between "
                    "this service and the .NET services: JSON bodies exactly as .NET's "
                    "System.Text.Json writes them (PascalCase, GUIDs as strings, decimals as "
                    f"numbers), message format Version {contract.WIRE_VERSION!r}. This service "
                    "publishes every event it stores from its outbox and receives every event "
                    "type, its own and those another service publishes: an event it does not hold "
                    "is recorded once (by its Id) and only after what it presupposes (an "
                    "application after its gig), then handled like its own. Generated by "
                    "`mussikon asyncapi` from the code and the settings."),
            },
            "defaultContentType": contract.CONTENT_TYPE,
            "servers": servers,
            "channels": self.channels,
            "operations": self.operations,
            "components": {"schemas": schemas, "messages": self.messages},
        }

    # --- messages --------------------------------------------------------------------------

    def _message(self, broker: str, event_type: str, headers: Document,
                 extensions: Document, bindings: Document | None = None) -> Document:
        schema = self.codec.json_schema(event_type)
        message: Document = {
            "name": event_type,
            "title": event_type,
            "contentType": contract.CONTENT_TYPE,
            "headers": headers,
            "payload": {"$ref": f"#/components/schemas/{event_type}"},
            "correlationId": {
                "description": "The event's correlation id: the command's chain of events "
                               "(absent from a .NET service's messages)",
                "location": f"$message.header#/{contract.CORRELATION_ID}"},
            **extensions,
        }
        if "description" in schema:
            message["summary"] = schema["description"]
        if bindings:
            message["bindings"] = bindings
        key = f"{broker}.{event_type}"
        self.messages[key] = message
        return {"$ref": f"#/components/messages/{key}"}

    def _headers(self, event_type: str, timestamp: bool, position: Document) -> Document:
        c = contract
        properties: Document = {
            c.EVENT_TYPE: {"type": "string", "const": event_type,
                           "description": "The event's class name (.NET `GetType().Name`)"},
        }
        if timestamp:
            properties[_servicebus_timestamp()] = {
                "type": "string", "format": "date-time",
                "description": "The event's time, an AMQP timestamp (.NET `DateTime`)"}
        properties |= {
            c.VERSION: {"type": "string", "const": c.WIRE_VERSION,
                        "description": "The message format (not the event's schema version)"},
            c.CORRELATION_ID: {"type": "string", "format": "uuid",
                               "description": "The correlation id of the event's chain"},
            c.CAUSATION_ID: {"type": "string", "format": "uuid",
                             "description": "The id of the event that caused this one"},
            c.POSITION: position,
        }
        return {"type": "object", "properties": properties,
                "required": [c.EVENT_TYPE, c.VERSION]}

    # --- RabbitMQ --------------------------------------------------------------------------

    def _rabbitmq_server(self) -> Document:
        url = urlsplit(split_urls(self.rabbitmq_url)[0] if self.rabbitmq_url
                       else _PLACEHOLDER_AMQP)
        host = url.hostname or "localhost"
        server: Document = {
            "host": f"{host}:{url.port or (5671 if url.scheme == 'amqps' else 5672)}",
            "protocol": url.scheme or "amqp",
            "protocolVersion": "0.9.1",
            "description": "RabbitMQ: the specification's topic exchange, one durable queue "
                           "per event type, delayed retries through TTL queues, a dead-letter "
                           "queue." + ("" if self.rabbitmq_url else
                                       " (MUSSIKON_BROKER_URL names no RabbitMQ broker: "
                                       "its default address)"),
        }
        vhost = _vhost(self.rabbitmq_url)
        if vhost != "/":
            server["pathname"] = "/" + vhost
        return server

    def _rabbitmq(self, topology: Any) -> None:
        from mussikon.adapters.messaging.rabbitmq.properties import PERSISTENT

        vhost = _vhost(self.rabbitmq_url)
        server = [{"$ref": "#/servers/rabbitmq"}]
        exchanges = {exchange.name: exchange for exchange in topology.exchanges()}
        queues = {queue.name: queue for queue in topology.queues()}
        events = exchanges[topology.events_exchange]
        all_messages: Document = {}
        handled_by = self._handled_by()
        for event_type in topology.event_types:
            message = self._message("rabbitmq", event_type, self._headers(
                event_type, timestamp=False,
                position={"type": "integer",
                          "description": "The event's position in this service's store"}),
                {"x-amqp-properties": {
                    "message_id": "$message.payload#/Id",
                    "correlation_id": f"$message.header#/{contract.CORRELATION_ID}",
                    "timestamp": "$message.payload#/OccurredAt (Unix seconds)",
                    "content_type": contract.CONTENT_TYPE,
                    "delivery_mode": PERSISTENT}},
                {"amqp": {"bindingVersion": AMQP_BINDING}})
            all_messages[event_type] = message
            key = topology.routing_key(event_type)
            publish = f"rabbitmq.publish.{key}"
            self.channels[publish] = {
                "address": key,
                "title": f"{event_type} on {events.name}",
                "description": f"Routing key {key!r} on the {events.type} exchange "
                               f"{events.name!r}: what this service publishes "
                               f"{event_type} with.",
                "servers": server,
                "messages": {event_type: message},
                "bindings": {"amqp": {
                    "is": "routingKey",
                    "exchange": {"name": events.name, "type": events.type,
                                 "durable": events.durable, "autoDelete": False,
                                 "vhost": vhost},
                    "bindingVersion": AMQP_BINDING}},
            }
            self.operations[f"rabbitmq.send.{event_type}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_pointer(publish)}"},
                "title": f"Publish {event_type}",
                "description": "The outbox relay publishes each stored event of this type, "
                               "persistent, with publisher confirms; a re-publish keeps its "
                               "message id (the event's id).",
                "messages": [{"$ref": f"#/channels/{_pointer(publish)}/messages/{event_type}"}],
                "bindings": {"amqp": {"deliveryMode": PERSISTENT, "timestamp": True,
                                      "bindingVersion": AMQP_BINDING}},
            }
            queue = queues[topology.queue(event_type)]
            consume = f"rabbitmq.queue.{key}"
            keys = " and ".join(repr(bound) for _, bound in queue.bindings)
            self.channels[consume] = self._queue_channel(
                queue, exchanges, vhost, server, {event_type: message},
                f"The queue of {event_type}, bound by {keys} (the specification's queue name "
                "and .NET EventBus's `EventType.ToLower()`).")
            self.operations[f"rabbitmq.receive.{event_type}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_pointer(consume)}"},
                "title": f"Consume {event_type}",
                "description": "A worker consumes the queue, acknowledging after every "
                               "handler succeeded; a failing handler is retried, then the "
                               "message goes through the delayed retries, then to the "
                               "dead-letter queue. An event another service published is "
                               "recorded first.",
                "messages": [{"$ref": f"#/channels/{_pointer(consume)}/messages/{event_type}"}],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
                "x-handled-by": handled_by.get(event_type, []),
                "x-presupposes": self._presupposes(event_type),
            }
        for stage in topology.retry_stages:
            queue = queues[stage.queue]
            name = f"rabbitmq.retry.{stage.queue.removeprefix(topology.prefix)}"
            self.channels[name] = self._queue_channel(
                queue, exchanges, vhost, server, all_messages,
                f"A delayed retry: a message is published to the fanout exchange "
                f"{stage.exchange!r} with its queue's name as routing key, waits "
                f"{stage.delay:g} s, and is dead-lettered back into that queue.")
            self.operations[f"rabbitmq.send.{name.removeprefix('rabbitmq.')}"] = {
                "action": "send", "channel": {"$ref": f"#/channels/{_pointer(name)}"},
                "title": f"Retry after {stage.delay:g} s",
                "bindings": {"amqp": {"deliveryMode": PERSISTENT,
                                      "bindingVersion": AMQP_BINDING}},
            }
        dlq = queues[topology.dead_letter_queue]
        name = "rabbitmq.dlq"
        self.channels[name] = self._queue_channel(
            dlq, exchanges, vhost, server, all_messages,
            "The dead letters: messages given up on, with the reason in x-* headers; the "
            f"broker's own (delivery limit) come through {topology.dead_letter_exchange!r}. "
            "A worker moves them into the store (`mussikon dlq`).")
        self.operations["rabbitmq.send.dead-letter"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{name}"},
            "title": "Dead-letter a message",
            "bindings": {"amqp": {"deliveryMode": PERSISTENT, "bindingVersion": AMQP_BINDING}},
        }
        self.operations["rabbitmq.receive.dead-letters"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{name}"},
            "title": "Move the dead letters into the store",
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
        }
        notifications = exchanges[topology.notifications_exchange]
        self.channels["rabbitmq.notifications"] = {
            "address": None,
            "title": notifications.name,
            "description": "The specification's notifications exchange: declared, nothing is "
                           "published on it.",
            "servers": server,
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": notifications.name, "type": notifications.type,
                             "durable": notifications.durable, "autoDelete": False,
                             "vhost": vhost},
                "bindingVersion": AMQP_BINDING}},
        }

    @staticmethod
    def _queue_channel(queue: Any, exchanges: Mapping[str, Any], vhost: str,
                       server: list[Document], messages: Document, description: str
                       ) -> Document:
        return {
            "address": queue.name,
            "title": queue.name,
            "description": description,
            "servers": server,
            "messages": dict(messages),
            "bindings": {"amqp": {
                "is": "queue",
                "queue": {"name": queue.name, "durable": queue.durable, "exclusive": False,
                          "autoDelete": False, "vhost": vhost},
                "bindingVersion": AMQP_BINDING}},
            "x-amqp-queue-arguments": dict(queue.arguments),
            "x-amqp-bindings": [{"exchange": exchange, "exchangeType": exchanges[exchange].type,
                                 "routingKey": key} for exchange, key in queue.bindings],
        }

    def _presupposes(self, event_type: str) -> list[str]:
        """The event types an event of this type presupposes (`domain.prerequisites`): one
        another service publishes is recorded only once they are in the store. Read off an
        event made from the smallest document the payload schema allows."""
        schema = self.codec.json_schema(event_type)
        body = {name: _EXAMPLES[(schema["properties"][name]["type"],
                                 schema["properties"][name].get("format"))]
                for name in schema["required"]}
        event = self.codec.from_body(body, event_type)
        return [needed.event_type for needed in prerequisites(event)]

    def _handled_by(self) -> dict[str, list[str]]:
        handled: dict[str, list[str]] = {}
        for subscription in self.subscriptions:
            for event_type in subscription.event_types:
                handled.setdefault(event_type, []).append(subscription.name)
        return {event_type: sorted(names) for event_type, names in handled.items()}

    # --- Service Bus -----------------------------------------------------------------------

    def _servicebus(self) -> Document | None:
        """Add the Service Bus channels, operations and messages, and return its server; None
        (nothing added) if the Service Bus extra is not installed."""
        try:
            from mussikon.adapters.messaging.servicebus.entities import subscription_rules
            from mussikon.adapters.messaging.servicebus.messages import (
                TIME_TO_LIVE,
                retry_subject,
            )
            from mussikon.adapters.messaging.servicebus.provisioning import (
                RULE,
                rule_expression,
            )
        except ImportError:
            return None
        settings = self.settings
        topic = settings.servicebus_topic
        server = [{"$ref": "#/servers/servicebus"}]
        messages: Document = {}
        for event_type in self.codec.event_types:
            messages[event_type] = self._message("servicebus", event_type, self._headers(
                event_type, timestamp=True,
                position={"type": "string", "pattern": "^[0-9]+$",
                          "description": "The event's position in this service's store, as "
                                         "text"}),
                {"x-servicebus-properties": {
                    "MessageId": "$message.payload#/Id",
                    "CorrelationId": "the event's correlation id, or its Id when it starts a chain",
                    "Subject": "$message.payload#/EventType",
                    "ContentType": contract.CONTENT_TYPE,
                    "TimeToLive": _iso_duration(TIME_TO_LIVE)}})
        self.channels["servicebus.topic"] = {
            "address": topic,
            "title": topic,
            "description": "The topic every event is published to (MUSSIKON_SERVICEBUS_TOPIC).",
            "servers": server,
            "messages": messages,
            "x-servicebus-entity": {
                "type": "topic", "name": topic, "requiresDuplicateDetection": True,
                "duplicateDetectionHistoryTimeWindow": _iso_duration(
                    timedelta(seconds=settings.servicebus_duplicate_detection_window))},
        }
        self.operations["servicebus.send"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/servicebus.topic"},
            "title": "Publish every event",
            "description": "The outbox relay sends each stored event, many per batch; "
                           "MessageId is the event's id, so duplicate detection drops a "
                           "re-publish.",
            "messages": [{"$ref": f"#/channels/servicebus.topic/messages/{t}"}
                         for t in messages],
        }
        rules = subscription_rules(self.subscriptions, self.codec.event_types)
        for name, subjects in rules.items():
            types = [t for t in self.codec.event_types if t in subjects]
            channel = f"servicebus.subscription.{name}"
            self.channels[channel] = {
                "address": f"{topic}/Subscriptions/{name}",
                "title": name,
                "description": (f"The subscription {name!r} of the topic: its rule admits its "
                                f"event types and the copies scheduled for its own delayed "
                                f"retries (Subject {retry_subject(name)})."),
                "servers": server,
                "messages": {t: messages[t] for t in types},
                "x-servicebus-entity": {
                    "type": "subscription", "topic": topic, "name": name,
                    "maxDeliveryCount": settings.servicebus_max_delivery_count,
                    "lockDuration": _iso_duration(
                        timedelta(seconds=settings.servicebus_lock_duration)),
                    "rules": [{"name": RULE, "sqlFilter": rule_expression(sorted(subjects))}]},
            }
            self.operations[f"servicebus.receive.{name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_pointer(channel)}"},
                "title": f"Receive for {name}",
                "description": "Peek-lock, completed after the handler succeeded; retried, "
                               "then scheduled again, then dead-lettered. An event another "
                               "service published is recorded first.",
                "messages": [{"$ref": f"#/channels/{_pointer(channel)}/messages/{t}"}
                             for t in types],
            }
        return self._servicebus_server()

    def _servicebus_server(self) -> Document:
        connection = next((ServiceBusConnectionString.parse(one)
                           for one in split_brokers(self.settings.broker_url)
                           if is_servicebus_connection_string(one)), None)
        description = "Azure Service Bus: one topic, one subscription per handler group."
        if connection is None:
            return {"host": "{namespace}.servicebus.windows.net", "protocol": "amqps",
                    "protocolVersion": "1.0",
                    "description": description + " (MUSSIKON_BROKER_URL names no namespace)",
                    "variables": {"namespace": {"description": "The Service Bus namespace"}}}
        port = connection.port or (5672 if connection.emulator else 5671)
        return {"host": f"{connection.host}:{port}",
                "protocol": "amqp" if connection.emulator else "amqps",
                "protocolVersion": "1.0", "description": description}


def _servicebus_timestamp() -> str:
    from mussikon.adapters.messaging.servicebus.messages import TIMESTAMP

    return TIMESTAMP


_EXAMPLES: dict[tuple[str, str | None], Any] = {
    ("string", None): "x", ("string", "uuid"): "00000000-0000-0000-0000-000000000001",
    ("string", "date-time"): "2026-01-01T00:00:00Z", ("integer", None): 1,
    ("number", None): 1, ("array", None): [],
}
"""A value of each JSON type a payload schema uses."""


def _vhost(url: str) -> str:
    path = urlsplit(split_urls(url)[0]).path if url else ""
    return unquote(path[1:]) if len(path) > 1 else "/"


def _pointer(key: str) -> str:
    """A key as a JSON pointer token."""
    return key.replace("~", "~0").replace("/", "~1")


def _iso_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"PT{seconds:g}S"
