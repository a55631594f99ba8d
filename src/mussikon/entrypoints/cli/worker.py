"""`mussikon worker`: the handlers, read models and sagas, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from prometheus_client import start_http_server

from mussikon import metrics
from mussikon.config import Settings, describe_broker, load_settings, mask_url, split_brokers
from mussikon.entrypoints.cli.common import CommandFailed, console, opened, run


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
        settings = load_settings()
        shutdown = _serve_metrics(settings)
        try:
            async with opened(settings) as application:
                await application.start()
                # The gauges (lags, outbox age, sagas, dead letters) are sampled as the
                # dashboard of `mussikon serve` samples them, for the metrics port alone.
                sampler = None
                if settings.metrics_port:
                    # Imported here: the dashboard's package imports FastAPI, which a worker
                    # without a metrics port does without.
                    from mussikon.entrypoints.http.dashboard.samples import Sampler
                    sampler = Sampler()
                    sampler.start(application)
                try:
                    brokers = [describe_broker(b) for b in split_brokers(settings.broker_url)]
                    console.print(f"worker running on {mask_url(settings.store_url)} and "
                                  f"{' and '.join(brokers)}", highlight=False)
                    await stop.wait()
                    console.print(f"stopping: finishing messages in flight, for up to "
                                  f"{settings.stop_grace:g} s (again to stop at once)",
                                  highlight=False)
                finally:
                    if sampler is not None:
                        await sampler.stop()
        finally:
            await asyncio.to_thread(shutdown)

    run(go)


def _serve_metrics(settings: Settings) -> Callable[[], None]:
    """Serve `/metrics` on MUSSIKON_METRICS_HOST:MUSSIKON_METRICS_PORT, if a port is set, from
    a thread of the Prometheus client; what stops it again (nothing to stop if no port)."""
    if not settings.metrics_port:
        return lambda: None
    host, port = settings.metrics_host, settings.metrics_port
    try:
        server, thread = start_http_server(port, host, registry=metrics.REGISTRY)
    except OSError as exc:
        raise CommandFailed(f"MUSSIKON_METRICS_PORT: cannot listen on {host}:{port} "
                            f"({exc.strerror or exc})") from None
    console.print(f"metrics on http://{host}:{port}/metrics", highlight=False)

    def shutdown() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return shutdown


def _stop_now(signum: int) -> None:
    """Exit at once, as a crash would: every store commits atomically, and a message not
    acknowledged yet is delivered again (by the broker, or from the subscription's checkpoint,
    which never passes an event still being handled)."""
    console.print("stopped at once: the messages in flight will be delivered again")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)
