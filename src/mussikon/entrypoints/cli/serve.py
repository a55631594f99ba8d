"""`mussikon serve`: the HTTP API (and the handlers, read models and sagas) until SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import CommandFailed


def serve(host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", min=1, max=65535,
                                            help="Port to listen on.")] = 8000) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) with the handlers, read
    models and sagas running, until SIGTERM or Ctrl-C, which finishes the requests in flight
    and stops the handlers (within MUSSIKON_STOP_GRACE seconds); a second Ctrl-C stops at
    once."""
    from uvicorn.config import LOGGING_CONFIG

    from mussikon.entrypoints.http.api import create_api
    from mussikon.entrypoints.http.dashboard import Dashboard

    async def go() -> None:
        listening = _listen(host, port)
        try:
            async with opened() as application:
                await application.start()
                # In JSON, uvicorn's loggers go through ours (its own set-up writes text).
                json_lines = application.settings.log_format == "json"
                dashboard = Dashboard()
                config = uvicorn.Config(create_api(application=application,
                                                   routers=dashboard.routers()),
                                        log_level=application.settings.log_level.lower(),
                                        log_config=None if json_lines else LOGGING_CONFIG,
                                        lifespan="on", server_header=False)
                server = _Server(config, on_shutdown=dashboard.close_streams)
                # The server stops gracefully on SIGTERM or Ctrl-C, then raises the signal
                # again for the handler it found: this one, so that a clean stop exits 0.
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, _stopped)
                await server.serve(sockets=[listening])
                if not server.started:
                    raise CommandFailed("the HTTP API did not start (see the log above)")
        finally:
            listening.close()

    run(go)


class _Server(uvicorn.Server):
    """uvicorn's server, which first ends the dashboard's live streams when it stops (it waits
    for the responses still open, and a stream never ends by itself)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The signal that stopped the server, raised again once it has stopped: nothing to do."""


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (an error naming them if it cannot be)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        listening = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CommandFailed(f"--host {host!r}: {exc.strerror or exc}") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError as exc:
        listening.close()
        raise CommandFailed(f"cannot listen on {host}:{port} (--host, --port): "
                            f"{exc.strerror or exc}") from None
    return listening
