"""ASGI middleware: a SERVER span per HTTP request while tracing is on (`mussikon.tracing`),
named by its method and route (`POST /gigs/{gig_id}/applications`), continuing the trace
a `traceparent` request header names. With tracing off it only checks that it is off."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mussikon import tracing

_CONTEXT_HEADERS = (b"traceparent", b"tracestate")


class ServerSpans:
    """Wraps the application: each HTTP request served inside its span."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name in _CONTEXT_HEADERS}
        status = 500

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.serving(scope["method"], scope["path"], headers) as served:
            try:
                await self.app(scope, receive, answer)
            finally:
                if served is not None:
                    route: Any = scope.get("route")
                    served.done(getattr(route, "path", None), status)
