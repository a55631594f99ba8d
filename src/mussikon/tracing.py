"""Traces: OpenTelemetry spans over a command's whole way (the append, the relay's publish,
the broker, each subscription's handling, the saga steps, the notifications), off unless
an entry point switches them on.

Only the OpenTelemetry API is used here, imported when tracing is switched on (`enable`):
while it is off every helper returns at its first check, makes no span object and imports
nothing. The SDK (exporters, processors) is configured by the entry points
(`mussikon.entrypoints.telemetry`), from the standard `OTEL_*` environment variables.

Spans follow the OpenTelemetry messaging conventions: `publish <exchange or topic>`
(PRODUCER), `process <queue or subscription>` (CONSUMER, a child of the producer's context
and linked to it), with `messaging.*` attributes. The context crosses a broker as W3C
`traceparent` and `tracestate` message headers (application properties on Service Bus,
where `Diagnostic-Id` carries it too, as .NET's SDK writes and reads it). Between the
append and the relay's publish, which runs later, it is stored with the events: each
event's `traceparent` (`RecordedEvent.traceparent`) is the context its append ran in.

Every span that knows the event's correlation id carries it as `mussikon.correlation_id`
(and messaging spans as `messaging.message.conversation_id`), so a trace backend finds the
traces of one correlation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mussikon import logs

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from mussikon.domain.events import DomainEvent

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
DIAGNOSTIC_ID = "Diagnostic-Id"
"""The application property .NET's Service Bus SDK keeps the W3C trace context in."""

CORRELATION = "mussikon.correlation_id"
CONVERSATION = "messaging.message.conversation_id"

INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = "internal", "server", "client", "producer", \
    "consumer"


class _State:
    """Whether tracing is on, in one place every helper checks first."""

    tracer: Tracer | None = None
    """The tracer spans come from while tracing is on, else None."""


_state = _State()
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def enabled() -> bool:
    """True while spans are recorded."""
    return _state.tracer is not None


def enable(provider: TracerProvider | None = None) -> None:
    """Record spans from now on, through `provider` (the global one if None)."""
    from opentelemetry import trace

    _state.tracer = (provider or trace.get_tracer_provider()).get_tracer("mussikon")
    logs.trace_ids = current_trace_ids


def disable() -> None:
    """Record no more spans."""
    _state.tracer = None
    logs.trace_ids = logs.no_trace_ids


def _kind(kind: str) -> Any:
    from opentelemetry.trace import SpanKind

    return getattr(SpanKind, kind.upper())


def _current() -> Span | None:
    from opentelemetry import trace

    span = trace.get_current_span()
    return span if span.get_span_context().is_valid else None


def current_trace_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id in hex (32 and 16 digits), None without one
    (or with tracing off): what a log line names its trace by."""
    if _state.tracer is None or (span := _current()) is None:
        return None
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def traceparent() -> str | None:
    """The current span's context as a W3C `traceparent`, None without one (or with tracing
    off): what an append stores with its events."""
    if _state.tracer is None or (span := _current()) is None:
        return None
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _remote(carrier: Mapping[Any, Any] | None) -> Any:
    """The span context a message's headers carry: `traceparent` (with `tracestate`) if it
    holds a valid one, else `Diagnostic-Id` (a W3C id, as .NET writes it); None if neither
    does (a .NET service's older hierarchical ids are not W3C ones)."""
    if not carrier:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    state = _text(carrier.get(TRACESTATE))
    for name in (TRACEPARENT, DIAGNOSTIC_ID):
        if parent := _text(carrier.get(name)):
            context = propagator.extract(
                {TRACEPARENT: parent, TRACESTATE: state} if state else {TRACEPARENT: parent})
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                return span_context
    return None


def _headers_of(span: Span) -> dict[str, str]:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers, context=trace.set_span_in_context(span))
    return headers


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


def span(name: str, kind: str = INTERNAL, attributes: Mapping[str, Any] | None = None
         ) -> contextlib.AbstractContextManager[None]:
    """A span around a block, current inside it, ended with an `error.type` if the block
    raises. Nothing while tracing is off."""
    if (tracer := _state.tracer) is None:
        return _OFF
    return _spanning(tracer, name, kind, attributes or {}, None, ())


@contextlib.contextmanager
def _spanning(tracer: Tracer, name: str, kind: str, attributes: Mapping[str, Any],
              parent: Any, links: tuple[Any, ...], *, root: bool = False) -> Iterator[None]:
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    context = (trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent
               else _root() if root else None)
    with tracer.start_as_current_span(name, context=context, kind=_kind(kind),
                                      attributes=_attributes(attributes), links=links,
                                      record_exception=False,
                                      set_status_on_exception=False) as current:
        try:
            yield
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__qualname__)
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise


def continued(carrier: Mapping[Any, Any] | None) -> contextlib.AbstractContextManager[None]:
    """The context a message's headers carry made current inside the block (no span of its
    own): what is appended there (an event another service published, recorded) is stored
    in that trace. Nothing while tracing is off or if the headers carry none."""
    if _state.tracer is None or (remote := _remote(carrier)) is None:
        return _OFF
    return _attached(remote)


@contextlib.contextmanager
def _attached(remote: Any) -> Iterator[None]:
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    try:
        yield
    finally:
        context.detach(token)


class Served:
    """The SERVER span of one HTTP request, current while it is served: `done` names its
    route and status once they are known."""

    __slots__ = ("_span", "method")

    def __init__(self, span: Span, method: str) -> None:
        self._span, self.method = span, method

    def done(self, route: str | None, status: int) -> None:
        """The request was answered with `status`, by the route `route` (a template, such as
        `/gigs/{gig_id}/applications`; None if none matched)."""
        from opentelemetry.trace import Status, StatusCode

        if route:
            self._span.update_name(f"{self.method} {route}")
            self._span.set_attribute("http.route", route)
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_attribute("error.type", str(status))
            self._span.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def serving(method: str, path: str, headers: Mapping[str, str]) -> Iterator[Served | None]:
    """The SERVER span of one HTTP request (`headers` with lower-case names), a child of the
    context its `traceparent` header carries, current inside the block; None while tracing
    is off."""
    if (tracer := _state.tracer) is None:
        yield None
        return
    from opentelemetry import trace

    remote = _remote(headers)
    context = trace.set_span_in_context(trace.NonRecordingSpan(remote)) if remote else _root()
    with tracer.start_as_current_span(method, context=context, kind=_kind(SERVER),
                                      attributes={"http.request.method": method,
                                                  "url.path": path}) as current:
        yield Served(current, method)


def _root() -> Any:
    """A context with no span: what a span that must start a trace of its own starts in."""
    from opentelemetry.context import Context

    return Context()


class Publication:
    """A PRODUCER span for one message, started before it is sent: `headers` carry its
    context on the message; `end` once it is sent."""

    __slots__ = ("_span", "headers")

    def __init__(self, span: Span) -> None:
        self._span = span
        self.headers: dict[str, str] = _headers_of(span)

    def end(self, error: BaseException | None = None) -> None:
        """End the span (with the failure, if the message could not be sent)."""
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_attribute("error.type", type(error).__qualname__)
            self._span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
        self._span.end()


@contextlib.contextmanager
def sending(publications: list[Publication]) -> Iterator[None]:
    """End the PRODUCER spans of the messages the block sends once it is done (with its
    failure, if it raises)."""
    try:
        yield
    except BaseException as exc:
        for publication in publications:
            publication.end(exc)
        raise
    for publication in publications:
        publication.end()


def publication(system: str, destination: str, event: DomainEvent, *,
                parent: str | None = None, routing_key: str | None = None
                ) -> Publication | None:
    """Start the PRODUCER span of publishing one message to `destination` (an exchange, a
    topic) on `system` (`rabbitmq`, `servicebus`), a child of the stored context `parent` (a
    `traceparent`; a new trace without one). None while tracing is off."""
    if (tracer := _state.tracer) is None:
        return None
    from opentelemetry import trace

    remote = _remote({TRACEPARENT: parent}) if parent else None
    context = trace.set_span_in_context(trace.NonRecordingSpan(remote)) if remote else _root()
    correlation_id = str(event.correlation_id or event.id)
    return Publication(tracer.start_span(
        f"publish {destination}", context=context, kind=_kind(PRODUCER),
        attributes=_attributes({
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": destination,
            "messaging.message.id": str(event.id),
            CONVERSATION: correlation_id,
            CORRELATION: correlation_id,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "mussikon.event_type": event.event_type,
        })))


def processing(system: str, destination: str, subscription: str, event: DomainEvent, *,
               headers: Mapping[Any, Any] | None, attempt: int,
               routing_key: str | None = None) -> contextlib.AbstractContextManager[None]:
    """The CONSUMER span of one subscription handling one message from `destination` (a
    queue, a subscription), current inside the block: a child of the context the message
    carries (`headers`), linked to it. Nothing while tracing is off."""
    if (tracer := _state.tracer) is None:
        return _OFF
    from opentelemetry.trace import Link

    remote = _remote(headers)
    correlation_id = str(event.correlation_id or event.id)
    return _spanning(tracer, f"process {destination}", CONSUMER, {
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": destination,
        "messaging.consumer.group.name": subscription,
        "messaging.destination.subscription.name": subscription if system == "servicebus"
        else None,
        "messaging.message.id": str(event.id),
        CONVERSATION: correlation_id,
        CORRELATION: correlation_id,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.servicebus.message.delivery_count": attempt if system == "servicebus"
        else None,
        "mussikon.delivery_attempt": attempt,
        "mussikon.event_type": event.event_type,
    }, remote, (Link(remote),) if remote is not None else (), root=True)
