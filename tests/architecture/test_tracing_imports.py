"""OpenTelemetry stays behind `mussikon.tracing` (the API only) and the entry points' set-up
of the SDK (`mussikon.entrypoints.telemetry`): no other module names it, so the domain, the
ports and the application know only the project's own tracing helpers."""

from __future__ import annotations

import grimp


def test_only_tracing_and_the_set_up_import_opentelemetry() -> None:
    graph = grimp.build_graph("mussikon", include_external_packages=True)
    assert sorted(graph.find_modules_that_directly_import("opentelemetry")) == [
        "mussikon.entrypoints.telemetry", "mussikon.tracing"]
    lines = [d["line_contents"] for d in graph.get_import_details(
        importer="mussikon.tracing", imported="opentelemetry")]
    assert lines and not [line for line in lines if ".sdk" in line or ".exporter" in line]
