"""The AsyncAPI document `mussikon asyncapi` prints: valid against the official AsyncAPI 3.0
JSON Schema (a copy in tests/asyncapi), its payload schemas those of the .NET wire format
(the golden documents and every event the codec writes validate; a document missing a field
or with a wrong type does not), its headers those the relays really set, its names those the
settings give; the command's formats and its one-line refusal."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import jsonschema
import pytest
import yaml

from mussikon.adapters.messaging.rabbitmq.properties import event_properties
from mussikon.adapters.messaging.servicebus.messages import event_message
from mussikon.config import Settings
from mussikon.domain.events import ALL_EVENT_TYPES, DomainEvent
from mussikon.entrypoints.asyncapi import asyncapi_document, render
from mussikon.wire import EventCodec
from tests.command_line import environment, mussikon, one_error_line
from tests.unit.test_wire import sample

TESTS = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((TESTS / "asyncapi" / "asyncapi-3.0.0.schema.json").read_text())
GOLDEN = TESTS / "golden"
TYPES = [cls.__name__ for cls in ALL_EVENT_TYPES]
CONNECTION = ("Endpoint=sb://mussikon.servicebus.windows.net/;SharedAccessKeyName=Root;"
              "SharedAccessKey=c2VjcmV0LWtleS1uZXZlci1zaG93bg==")


def settings(**more: Any) -> Settings:
    return Settings(store_url="memory://", **more)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncio.run(asyncapi_document(settings()))


def payload_validator(document: Mapping[str, Any], event_type: str) -> jsonschema.Validator:
    """A validator of `event_type`'s payload schema, its references resolved in the
    document."""
    schema = {**document["components"]["schemas"][event_type],
              "components": document["components"]}
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def headers_validator(document: Mapping[str, Any], message: str) -> jsonschema.Validator:
    schema = document["components"]["messages"][message]["headers"]
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def test_the_schema_copy_is_the_official_one() -> None:
    assert SCHEMA["title"] == "AsyncAPI 3.0.0 schema."
    assert "bindings-amqp-0.3.0-channel" in SCHEMA["definitions"]


@pytest.mark.parametrize("broker_url", ["memory://", "amqp://app:s3cret@rabbit:5673/tenant",
                                        CONNECTION, f"amqp://app:s3cret@rabbit/,{CONNECTION}"])
async def test_the_document_is_valid_asyncapi_3(broker_url: str) -> None:
    document = await asyncapi_document(settings(broker_url=broker_url))
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
              for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(document)]
    assert errors == []
    text = render(document, "json") + render(document, "yaml")
    assert "s3cret" not in text and "c2VjcmV0" not in text  # hosts and ports alone


def test_the_validation_catches_a_broken_document(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    broken["operations"]["servicebus.send"]["action"] = "publish"
    broken["channels"]["rabbitmq.dlq"]["bindings"]["amqp"]["is"] = "exchange"
    assert len(list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken))) == 2


def test_every_event_type_is_a_message_on_both_brokers_sent_and_received(
        document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    assert sorted(messages) == sorted([f"rabbitmq.{t}" for t in TYPES]
                                      + [f"servicebus.{t}" for t in TYPES])
    operations = document["operations"]
    for event_type in TYPES:
        send = operations[f"rabbitmq.send.{event_type}"]
        receive = operations[f"rabbitmq.receive.{event_type}"]
        assert (send["action"], receive["action"]) == ("send", "receive")
    sent = operations["servicebus.send"]["messages"]
    assert [m["$ref"].rsplit("/", 1)[1] for m in sent] == TYPES
    received = {m["$ref"].rsplit("/", 1)[1] for key, op in operations.items()
                if key.startswith("servicebus.receive.") for m in op["messages"]}
    assert received == set(TYPES)  # the recorder's subscription takes what no handler wants
    assert operations["rabbitmq.receive.MusicianRegisteredEvent"]["x-handled-by"] == sorted(
        operations["rabbitmq.receive.MusicianRegisteredEvent"]["x-handled-by"])
    assert operations["rabbitmq.receive.MusicianRegisteredEvent"]["x-handled-by"]
    presupposes = operations["rabbitmq.receive.MusicianApplicationSubmittedEvent"][
        "x-presupposes"]
    assert presupposes == ["EventCreatedEvent", "MusicianRegisteredEvent"]
    assert operations["rabbitmq.receive.MusicianRegisteredEvent"]["x-presupposes"] == []


def test_every_reference_points_at_something(document: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        node: Any = document
        for token in ref.removeprefix("#/").split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        assert node, ref


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_the_golden_documents_validate_against_their_payload_schema(
        document: dict[str, Any], name: str) -> None:
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    payload_validator(document, name).validate(golden)


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_what_the_codec_writes_validates_and_a_broken_body_does_not(
        document: dict[str, Any], cls: type[DomainEvent]) -> None:
    codec = EventCodec()
    body = json.loads(codec.encode(sample(cls)))
    validator = payload_validator(document, cls.__name__)
    validator.validate(body)
    schema = document["components"]["schemas"][cls.__name__]
    assert list(schema["properties"]) == list(body)  # the .NET names, in the .NET order
    assert not validator.is_valid({k: v for k, v in body.items() if k != "Id"})
    own = next(iter(body))
    assert not validator.is_valid({**body, own: [body[own]]})
    assert not validator.is_valid({**body, "Id": "not a guid"})
    assert not validator.is_valid({**body, "EventType": "SomethingElse"})


def test_the_headers_are_those_the_relays_set(document: dict[str, Any]) -> None:
    codec = EventCodec()
    for cls in ALL_EVENT_TYPES:
        event = dataclasses.replace(sample(cls), correlation_id=uuid4(), causation_id=uuid4())
        properties = event_properties(event, position=42)
        headers_validator(document, f"rabbitmq.{cls.__name__}").validate(properties.headers)
        assert properties.message_id == str(event.id)  # the document's x-amqp-properties
        message = event_message(codec, event, position=2**40)
        application = {str(k): jsonable(v)
                       for k, v in (message.application_properties or {}).items()}
        headers_validator(document, f"servicebus.{cls.__name__}").validate(application)
        assert message.message_id == str(event.id)
        assert message.subject == cls.__name__
    rabbitmq = headers_validator(document, "rabbitmq.ContractSignedEvent")
    assert not rabbitmq.is_valid({"EventType": "ContractSignedEvent", "Version": "2.0"})
    assert not rabbitmq.is_valid({"EventType": "EventCreatedEvent", "Version": "1.0"})


async def test_the_settings_name_the_exchange_queues_and_topic() -> None:
    document = await asyncapi_document(settings(
        broker_url="amqp://guest:guest@rabbit:5673/tenant", rabbitmq_prefix="blue.",
        rabbitmq_events_exchange="shared.events", rabbitmq_queue_type="classic",
        rabbitmq_retry_delays="2,30", servicebus_topic="blue-events"))
    channels = document["channels"]
    publish = channels["rabbitmq.publish.musician.registered"]["bindings"]["amqp"]
    assert publish["exchange"]["name"] == "shared.events"
    assert publish["exchange"]["vhost"] == "tenant"
    queue = channels["rabbitmq.queue.musician.registered"]
    assert queue["address"] == "blue.musician.registered"
    assert queue["x-amqp-queue-arguments"] == {}  # classic: declared as .NET declares it
    assert queue["x-amqp-bindings"] == [
        {"exchange": "shared.events", "exchangeType": "topic", "routingKey": key}
        for key in ("musician.registered", "musicianregisteredevent")]
    assert [c["address"] for k, c in channels.items() if k.startswith("rabbitmq.retry.")] == [
        "blue.mussikon.retry.2s", "blue.mussikon.retry.30s"]
    assert channels["rabbitmq.dlq"]["address"] == "blue.mussikon.dlq"
    assert channels["servicebus.topic"]["address"] == "blue-events"
    assert document["servers"]["rabbitmq"]["host"] == "rabbit:5673"


def test_the_command_prints_json_or_yaml_and_refuses_another_format(
        tmp_path: Path, document: dict[str, Any]) -> None:
    env = environment(store_url="memory://")
    as_yaml = mussikon("asyncapi", "--format", "yaml", cwd=tmp_path, env=env)
    assert as_yaml.returncode == 0, as_yaml.stderr
    printed = yaml.safe_load(as_yaml.stdout)
    assert printed == json.loads(render(document, "json"))
    assert yaml.safe_load(render(document, "yaml")) == printed
    line = one_error_line(mussikon("asyncapi", "--format", "xml", cwd=tmp_path, env=env))
    assert "--format 'xml': use json or yaml" in line
