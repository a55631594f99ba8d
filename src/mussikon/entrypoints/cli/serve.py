"""`mussikon serve`: the HTTP API (and the handlers, read models and sagas) until SIGTERM."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from mussikon.config import load_settings
from mussikon.entrypoints.cli.common import run


def serve(host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", min=1, max=65535,
                                            help="Port to listen on.")] = 8000) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) with the handlers, read
    models and sagas running, until SIGTERM or Ctrl-C, which finishes the requests and
    messages in flight."""
    import uvicorn

    from mussikon.entrypoints.http.api import create_api

    async def go() -> None:
        settings = load_settings()
        logging.getLogger().setLevel(settings.log_level)
        config = uvicorn.Config(create_api(settings), host=host, port=port,
                                log_level=settings.log_level.lower(), lifespan="on",
                                server_header=False)
        server = uvicorn.Server(config)
        await server.serve()
        if not server.started:
            raise OSError(f"could not serve on {host}:{port} (see the log above)")

    run(go)
