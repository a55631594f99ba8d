"""`mussikon worker`: the handlers, read models and sagas, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from mussikon.config import describe_broker, mask_url, split_brokers
from mussikon.entrypoints.cli.common import console, opened, run


def worker() -> None:
    """Run the handlers and read models until SIGTERM or Ctrl-C, which finishes the messages in
    flight (for up to MUSSIKON_STOP_GRACE seconds: handlers still running then are cancelled);
    a second one stops at once (what was not acknowledged is delivered again later)."""

    async def go() -> None:
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                _stop_now(signum)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        async with opened() as application:
            await application.start()
            brokers = [describe_broker(b) for b in split_brokers(application.settings.broker_url)]
            console.print(f"worker running on {mask_url(application.settings.store_url)} and "
                          f"{' and '.join(brokers)}", highlight=False)
            await stop.wait()
            console.print(f"stopping: finishing messages in flight, for up to "
                          f"{application.settings.stop_grace:g} s (again to stop at once)",
                          highlight=False)

    run(go)


def _stop_now(signum: int) -> None:
    """Exit at once, as a crash would: every store commits atomically, and a message not
    acknowledged yet is delivered again (by the broker, or from the subscription's checkpoint,
    which never passes an event still being handled)."""
    console.print("stopped at once: the messages in flight will be delivered again")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)
