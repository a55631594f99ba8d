"""`mussikon asyncapi`: the AsyncAPI 3.0 document of the bus."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mussikon.config import load_settings
from mussikon.entrypoints.asyncapi import FORMATS, asyncapi_document, render
from mussikon.entrypoints.cli.common import apply_log_settings, run
from mussikon.entrypoints.cli.output import CommandFailed


def asyncapi(output_format: Annotated[str, typer.Option(
        "--format", help="json or yaml.")] = "json") -> None:
    """Print the AsyncAPI 3.0 document of the bus, generated from the code and the settings:
    every event type with its JSON schema, the RabbitMQ exchanges, routing keys and queues,
    the Service Bus topic and subscriptions, what this service sends and receives."""
    if output_format not in FORMATS:
        raise CommandFailed(f"--format {output_format!r}: use {' or '.join(FORMATS)}")

    async def go() -> None:
        settings = load_settings()
        apply_log_settings(settings)
        document = await asyncapi_document(settings)
        sys.stdout.write(render(document, output_format))

    run(go)
