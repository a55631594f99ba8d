"""Recording spans in a test: the SDK's in-memory exporter, with `mussikon.tracing` on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mussikon import tracing


@contextmanager
def recording_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span ended kept in the exporter returned; off again after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans of this name."""
    return [s for s in spans if s.name == name]


def traceparent_of(span: ReadableSpan) -> str:
    """A span's context as a W3C traceparent."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
