"""ASGI middleware: each HTTP request timed in `mussikon_http_request_duration_seconds`, by
method, route template (`/gigs/{gig_id}`, never the path itself) and status class, so the
labels take few values whatever the clients send; its `_count` gives the request rate."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mussikon import metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route label of a request no route took (a 404 on an unknown path)."""


class RequestMetrics:
    """Wraps the application: each HTTP request timed and counted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            route: Any = scope.get("route")
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.HTTP_DURATION.labels(
                method, getattr(route, "path", None) or UNMATCHED, f"{status // 100}xx",
            ).observe(time.perf_counter() - start)
