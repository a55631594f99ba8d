"""The OpenTelemetry SDK, set up from the standard `OTEL_*` environment variables when they
ask for traces (the optional extra `otel`); otherwise nothing is imported and tracing stays
off (`mussikon.tracing`).

Traces are on when `OTEL_TRACES_EXPORTER` names exporters (`console` prints each span as
JSON on stdout, `otlp` sends them over OTLP/HTTP), or when an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: exporter `otlp`);
`OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true` keeps them off. The SDK reads the
rest itself: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service is `mussikon`
unless they name it), `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` (batching), `OTEL_EXPORTER_OTLP_*`
(endpoint, headers, timeout). Spans still buffered are sent when the process exits.
"""

from __future__ import annotations

from collections.abc import Mapping

from mussikon import tracing

EXPORTERS = ("console", "otlp")


class TracingUnavailable(Exception):
    """The environment asks for traces that cannot be made (the message says why)."""


def exporters_wanted(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for (none: tracing stays off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
             if n.strip()]
    if not names and (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
                      or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()):
        names = ["otlp"]
    if "none" in names:
        return []
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} (known: "
            f"{', '.join(EXPORTERS)}, none)")
    return list(dict.fromkeys(names))


def configure_tracing(environ: Mapping[str, str]) -> bool:
    """Set the SDK up and switch tracing on if the environment asks for traces (once per
    process); True if tracing is on. Raises TracingUnavailable if it asks for what cannot be
    done (an unknown exporter, the SDK not installed)."""
    if tracing.enabled():
        return True
    names = exporters_wanted(environ)
    if not names:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        raise TracingUnavailable(
            "OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT asks for traces, but the "
            "OpenTelemetry SDK is not installed: install mussikon[otel]") from None
    named = environ.get("OTEL_SERVICE_NAME", "").strip() or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else
                                                       {"service.name": "mussikon"}))
    for name in names:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise TracingUnavailable(
                    "OTEL_TRACES_EXPORTER=otlp, but the OTLP exporter is not installed: "
                    "install mussikon[otel]") from None
            exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing.enable(provider)
    return True
