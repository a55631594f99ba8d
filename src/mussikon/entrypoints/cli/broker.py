"""`mussikon broker …`: the broker's entities."""

from __future__ import annotations

from typing import Annotated

import typer

from mussikon.bootstrap import provision_broker
from mussikon.config import load_settings
from mussikon.entrypoints.cli.common import apply_log_settings, run
from mussikon.entrypoints.cli.demo import demo_settings
from mussikon.entrypoints.cli.output import console_for_output, plain

broker_app = typer.Typer(help="The broker's entities.", no_args_is_help=True)


@broker_app.command("provision")
def broker_provision(for_demo: Annotated[bool, typer.Option(
        "--demo", help="What `mussikon demo` uses instead: its own RabbitMQ names, its own "
        "Service Bus topic (<MUSSIKON_SERVICEBUS_TOPIC>-demo).")] = False) -> None:
    """Create what the broker of MUSSIKON_BROKER_URL needs, or bring it to what is needed,
    printing one line per thing done or found. On Service Bus: the topic (with duplicate
    detection), one subscription per handler (MaxDeliveryCount, lock duration) and its rule;
    needs the Manage right on the namespace. Running it again changes nothing."""
    async def go() -> None:
        settings = load_settings()
        if for_demo:
            settings = demo_settings(settings)
        apply_log_settings(settings)
        console = console_for_output()
        changes = await provision_broker(settings, lambda line: console.print(plain(line)))
        if changes is None:
            return
        if changes:
            console.print(plain(f"{changes} change{'s' if changes != 1 else ''} made"))
        else:
            console.print(plain("nothing changed"))

    run(go)
