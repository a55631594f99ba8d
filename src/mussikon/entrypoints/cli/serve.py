"""`mussikon serve`: the HTTP API (and the handlers, read models and sagas) until SIGTERM."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from mussikon.config import load_settings
from mussikon.entrypoints.cli.common import run


def serve(host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", min=1, max=65535,
                                            help="Port to listen on.")] = 8000) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) with the handlers, read
    models and sagas running, until SIGTERM or Ctrl-C, which finishes the requests in flight
    and stops the handlers (within MUSSIKON_STOP_GRACE seconds); a second Ctrl-C stops at
    once."""
    import uvicorn

    from mussikon.entrypoints.http.api import create_api

    async def go() -> None:
        settings = load_settings()
        logging.getLogger().setLevel(settings.log_level)
        config = uvicorn.Config(create_api(settings), host=host, port=port,
                                log_level=settings.log_level.lower(), lifespan="on",
                                server_header=False)
        server = uvicorn.Server(config)
        # The server stops gracefully on SIGTERM or Ctrl-C, then raises the signal again for
        # the handler it found: this one, so that a clean stop exits 0.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _stopped)
        await server.serve()
        if not server.started:
            raise OSError(f"could not serve on {host}:{port} (see the log above)")

    run(go)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The signal that stopped the server, raised again once it has stopped: nothing to do."""
