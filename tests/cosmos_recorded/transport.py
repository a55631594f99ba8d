"""HTTP exchanges of the Cosmos DB SDK, recorded and replayed at its transport (azure-core's
`AsyncHttpTransport`), so that the SDK's own code (its change-feed pull model, its
continuation tokens, its handling of 304 and 410) runs without a server.

An exchange keeps what identifies the request (method, path, and the headers of the
change-feed protocol: `If-None-Match`, `A-IM`, the partition key range, the page size) and
the whole response but its per-request noise (dates, activity ids, the server's address).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.pipeline.transport import AioHttpTransport, AsyncHttpResponse, HttpRequest
from azure.core.utils import CaseInsensitiveDict

KEY_HEADERS = ("if-none-match", "a-im", "x-ms-documentdb-partitionkeyrangeid",
               "x-ms-max-item-count")
"""The request headers an exchange is matched on."""
_NOISE = frozenset({"date", "x-ms-activity-id", "content-location", "connection",
                    "x-ms-date", "transfer-encoding"})


def request_key(request: Any) -> dict[str, Any]:
    headers = {k.lower(): str(v) for k, v in request.headers.items()}
    return {"method": request.method, "path": unquote(urlsplit(request.url).path),
            **{name: headers[name] for name in KEY_HEADERS if name in headers}}


class RecordingTransport(AioHttpTransport):  # type: ignore[misc]  # (lazily exported: Any)
    """The SDK's aiohttp transport, keeping every exchange."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exchanges: list[dict[str, Any]] = []

    async def send(self, request: Any, **kwargs: Any) -> Any:
        response = await super().send(request, **kwargs)
        await response.load_body()
        body = response.body()
        self.exchanges.append({
            "request": request_key(request),
            "response": {"status": response.status_code,
                         "headers": {k.lower(): v for k, v in response.headers.items()
                                     if k.lower() not in _NOISE},
                         "body": json.loads(body) if body else None}})
        return response

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.exchanges, indent=1, ensure_ascii=False) + "\n")


class RecordedResponse(AsyncHttpResponse):
    def __init__(self, request: HttpRequest, recorded: dict[str, Any]) -> None:
        super().__init__(request, None)
        self.status_code = int(recorded["status"])
        self.headers = CaseInsensitiveDict(recorded["headers"])
        self.reason = {200: "OK", 201: "Created", 304: "Not Modified",
                       404: "Not Found", 410: "Gone"}.get(self.status_code, "")
        self.content_type = self.headers.get("content-type")
        body = recorded["body"]
        self._body = b"" if body is None else json.dumps(body).encode()

    def body(self) -> bytes:
        return self._body

    async def load_body(self) -> None:
        return None


class ReplayTransport(AioHttpTransport):  # type: ignore[misc]
    """Answers each request with the first exchange not yet replayed whose request is the
    same (method, path, key headers); a request that matches none fails the test. `rule`,
    if given, answers first: a response for a request's key, or None."""

    def __init__(self, exchanges: list[dict[str, Any]],
                 rule: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
                 ) -> None:
        super().__init__()
        self.pending = list(exchanges)
        self.rule = rule
        self.sent: list[dict[str, Any]] = []

    @classmethod
    def load(cls, path: Path) -> ReplayTransport:
        return cls(json.loads(path.read_text()))

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, request: Any, **kwargs: Any) -> Any:
        key = request_key(request)
        self.sent.append(key)
        answer = self.rule(key) if self.rule is not None else None
        if answer is not None:
            return RecordedResponse(request, answer)
        for index, exchange in enumerate(self.pending):
            if exchange["request"] == key:
                del self.pending[index]
                return RecordedResponse(request, exchange["response"])
        raise AssertionError(f"no recorded exchange for {key}; left: "
                             f"{[e['request'] for e in self.pending]}")
