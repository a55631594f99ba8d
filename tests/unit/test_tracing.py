"""`mussikon.tracing` and the SDK's set-up from `OTEL_*`: off by default (no span, no import
of OpenTelemetry), the context read from message headers (`traceparent` first,
`Diagnostic-Id` as the fallback), failures as `error.type`, the exporters the environment
names, and spans printed by `OTEL_TRACES_EXPORTER=console`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus.aio import ServiceBusClient
from opentelemetry.trace import SpanKind, StatusCode

from mussikon import tracing
from mussikon.adapters.messaging.retries import try_handler
from mussikon.adapters.messaging.servicebus.messages import event_message
from mussikon.adapters.messaging.servicebus.relay import ServiceBusRelay
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.entrypoints.telemetry import TracingUnavailable, exporters_wanted
from mussikon.ports.event_store import RecordedEvent
from mussikon.ports.transport import Envelope
from mussikon.wire import EventCodec
from tests.tracing_kit import named, recording_spans, traceparent_of

ROOT = Path(__file__).resolve().parents[2]
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-11111111111111111111111111111111-2222222222222222-01"


def registered() -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id="m-1", email="m@example.com", name="M",
                                   genres=("jazz",), location="Cali")


def test_off_by_default_nothing_is_made() -> None:
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.span("y")  # one shared no-op, no span object
    assert tracing.traceparent() is None and tracing.current_trace_ids() is None
    assert tracing.publication("rabbitmq", "x", registered()) is None
    assert tracing.processing("rabbitmq", "q", "s", registered(), headers={"traceparent": PARENT},
                              attempt=1) is tracing.span("z")


def test_off_no_opentelemetry_is_imported() -> None:
    """Not the API by the command line and the application (FastAPI imports it for itself),
    never the SDK."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = ("import sys, os\n"
            "import mussikon.entrypoints.cli.app, mussikon.bootstrap\n"
            "from mussikon.entrypoints.telemetry import configure_tracing\n"
            "assert configure_tracing(os.environ) is False\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
            "import mussikon.entrypoints.http.api\n"
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk',"
            " 'opentelemetry.exporter'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "[]"]


def test_current_trace_ids_name_the_current_span() -> None:
    with recording_spans() as exporter:
        with tracing.span("outer"):
            ids = tracing.current_trace_ids()
            context = tracing.traceparent()
        assert tracing.current_trace_ids() is None
    [outer] = exporter.get_finished_spans()
    assert outer.context is not None
    assert ids == (f"{outer.context.trace_id:032x}", f"{outer.context.span_id:016x}")
    assert context == traceparent_of(outer)


@pytest.mark.parametrize(("headers", "parent"), [
    ({"traceparent": PARENT}, PARENT),
    ({"Diagnostic-Id": PARENT}, PARENT),
    ({"traceparent": PARENT, "Diagnostic-Id": OTHER}, PARENT),  # traceparent first
    ({b"traceparent": PARENT.encode()}, None),  # keys are text once read
    ({"traceparent": PARENT.encode()}, PARENT),  # values may come as bytes
    ({"traceparent": "not-a-context", "Diagnostic-Id": PARENT}, PARENT),
    ({"Diagnostic-Id": "|4bf92f3577b34da6a3ce929d0e0e4736.1."}, None),  # not a W3C id
    ({}, None),
])
async def test_a_consumer_span_continues_the_context_its_message_carries(
        headers: dict[Any, Any], parent: str | None) -> None:
    event = registered()
    with recording_spans() as exporter:
        async def handler(envelope: Envelope) -> None:
            pass

        span = tracing.processing("servicebus", "topic", "musicians", event, headers=headers,
                                  attempt=2)
        assert await try_handler("musicians", handler, Envelope(str(event.id), event), 2,
                                 "servicebus", span) is None
    [consumer] = exporter.get_finished_spans()
    assert consumer.name == "process topic" and consumer.kind is SpanKind.CONSUMER
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.consumer.group.name"] == "musicians"
    assert consumer.attributes["messaging.servicebus.message.delivery_count"] == 2
    assert consumer.attributes["messaging.message.conversation_id"] == str(event.id)
    if parent is None:
        assert consumer.parent is None and not consumer.links
    else:
        _, trace_id, span_id, _ = parent.split("-")
        assert consumer.parent is not None and consumer.context is not None
        assert (consumer.context.trace_id, consumer.parent.span_id) == (int(trace_id, 16),
                                                                        int(span_id, 16))
        assert [link.context.span_id for link in consumer.links] == [int(span_id, 16)]


async def test_a_failing_handler_marks_its_span_with_the_error_type() -> None:
    event = registered()

    async def handler(envelope: Envelope) -> None:
        raise LookupError("no such gig")

    with recording_spans() as exporter:
        span = tracing.processing("rabbitmq", "q", "gigs", event, headers=None, attempt=1)
        error = await try_handler("gigs", handler, Envelope(str(event.id), event), 1, "memory",
                                  span)
    assert isinstance(error, LookupError)
    [consumer] = exporter.get_finished_spans()
    assert consumer.attributes is not None
    assert consumer.attributes["error.type"] == "LookupError"
    assert consumer.status.status_code is StatusCode.ERROR


async def test_service_bus_messages_carry_the_context_as_dotnet_reads_it() -> None:
    """The relay's messages: `traceparent` and `Diagnostic-Id` (the same value), under the
    PRODUCER span, a child of the context the event was appended in."""
    codec, event = EventCodec(), registered()
    client = ServiceBusClient.from_connection_string(
        "Endpoint=sb://localhost/;SharedAccessKeyName=k;SharedAccessKey=a2V5")
    relay = ServiceBusRelay(InMemoryEventStore(codec), InMemoryDocumentStore(), codec, client,
                            "events")
    record = RecordedEvent(1, event.stream_id, 1, event, event.occurred_at,
                           traceparent=PARENT)
    message = event_message(codec, event, 1)
    with recording_spans() as exporter:
        [publication] = relay._traced([(record, message)])
        publication.end()
    [producer] = named(exporter.get_finished_spans(), "publish events")
    properties = message.application_properties or {}
    assert properties["traceparent"] == properties["Diagnostic-Id"] == traceparent_of(producer)
    assert producer.kind is SpanKind.PRODUCER and producer.parent is not None
    assert producer.parent.span_id == int(PARENT.split("-")[2], 16)
    assert producer.attributes is not None
    assert producer.attributes["messaging.message.id"] == str(event.id)


@pytest.mark.parametrize(("environment", "exporters"), [
    ({}, []),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": " Console , otlp "}, ["console", "otlp"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
])
def test_the_environment_names_the_exporters(environment: dict[str, str],
                                             exporters: list[str]) -> None:
    assert exporters_wanted(environment) == exporters


def test_an_unknown_exporter_is_named() -> None:
    with pytest.raises(TracingUnavailable, match="unknown exporter 'zipkin'"):
        exporters_wanted({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_the_console_exporter_prints_the_spans_of_a_command(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("OTEL_", "MUSSIKON_"))}
    environment |= {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "mussikon-test",
                    "MUSSIKON_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    created = subprocess.run([sys.executable, "-m", "mussikon", "db", "migrate"],
                             capture_output=True, text=True, env=environment, cwd=tmp_path,
                             timeout=60, check=False)
    assert created.returncode == 0, created.stderr
    done = subprocess.run([sys.executable, "-m", "mussikon", "events",
                           "tail", "--json"], capture_output=True, text=True, env=environment,
                          cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (start := re.compile(r"\S").search(done.stdout, at)) is not None:
        value, at = decoder.raw_decode(done.stdout, start.start())
        if isinstance(value, dict) and "context" in value:
            spans.append(value)
    [command] = [s for s in spans if s["name"] == "mussikon events tail"]
    assert command["resource"]["attributes"]["service.name"] == "mussikon-test"
    assert command["parent_id"] is None


def test_an_unknown_exporter_stops_a_command_with_one_line(
        tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("OTEL_", "MUSSIKON_"))}
    environment |= {"OTEL_TRACES_EXPORTER": "zipkin",
                    "MUSSIKON_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    done = subprocess.run([sys.executable, "-m", "mussikon", "events",
                           "tail"], capture_output=True, text=True, env=environment,
                          cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: OTEL_TRACES_EXPORTER: unknown exporter 'zipkin' (known: console, otlp, none)"]


def test_a_json_log_line_written_inside_a_span_names_its_trace() -> None:
    import logging

    from mussikon.logs import JsonFormatter

    def line() -> dict[str, Any]:
        record = logging.LogRecord("mussikon.test", logging.INFO, __file__, 1, "hello", None,
                                   None)
        return dict(json.loads(JsonFormatter().format(record)))

    with recording_spans() as exporter:
        with tracing.span("outer"):
            inside = line()
        outside = line()
    [outer] = exporter.get_finished_spans()
    assert outer.context is not None
    assert (inside["trace_id"], inside["span_id"]) == (f"{outer.context.trace_id:032x}",
                                                       f"{outer.context.span_id:016x}")
    assert "trace_id" not in outside and "span_id" not in outside
    assert "trace_id" not in line()  # tracing off again
