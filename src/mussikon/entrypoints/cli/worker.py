"""`mussikon worker`: the handlers, read models and sagas, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio

from mussikon.config import mask_url
from mussikon.entrypoints.cli.common import console, opened, run


def worker() -> None:
    """Run the handlers and read models until SIGTERM or Ctrl-C (finishing what is in flight)."""
    import signal

    async def go() -> None:
        async with opened() as application:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await application.start()
            console.print(f"worker running on {mask_url(application.settings.store_url)} and "
                          f"{mask_url(application.settings.broker_url)}", highlight=False)
            await stop.wait()
            console.print("stopping: finishing messages in flight")

    run(go)
