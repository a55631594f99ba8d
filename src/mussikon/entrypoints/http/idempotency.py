"""`Idempotency-Key`: a POST retried with the same key gets the first answer, and has no second
effect.

The first successful answer is kept in the document store under the caller and the key, with
a digest of the request (method, path, `If-Match` and body). A retry with the same request gets
that answer again; the same key with another request is refused (422). The ids a keyed command
creates are derived from the caller and the key, so copies racing each other write one
aggregate: the store refuses the others, which get the first answer if it is kept by then,
else the conflict (409). A refused command keeps nothing: its retry runs again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import HTTPException, Request, status
from pydantic import BaseModel

from mussikon.domain.errors import DomainError
from mussikon.entrypoints.http.accounts import Principal
from mussikon.ports.documents import Changes, DocumentStore
from mussikon.ports.event_store import ConcurrencyError

IDEMPOTENCY = "api-idempotency"
_IDS = uuid.UUID("8d3c1f52-6a0e-4b7d-9c21-5e4f3a2b1c0d")

M = TypeVar("M", bound=BaseModel)


def request_digest(request: Request, body: BaseModel | None) -> str:
    """What makes two requests the same request."""
    text = "\n".join((request.method, request.url.path, request.headers.get("if-match", ""),
                      body.model_dump_json() if body is not None else ""))
    return hashlib.sha256(text.encode()).hexdigest()


class Keyed:
    """The ids a command creates: derived from the caller and the idempotency key when there
    is one, new otherwise."""

    def __init__(self, principal: Principal, key: str | None) -> None:
        self.seed = f"{principal.name}\n{key}" if key else None

    def new_id(self, what: str) -> str:
        """An id for the `what` this request creates."""
        if self.seed is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(_IDS, f"{self.seed}\n{what}"))


async def once(documents: DocumentStore, principal: Principal, key: str | None,
               digest: str, model: type[M], command: Callable[[Keyed], Awaitable[M]]) -> M:
    """Run `command` once per (caller, key): a retry gets the first answer."""
    if key is None:
        return await command(Keyed(principal, None))
    if not 1 <= len(key) <= 200:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "header Idempotency-Key: 1 to 200 characters")
    doc_key = f"{principal.name}\n{key}"
    earlier = await _earlier(documents, doc_key, digest, model)
    if earlier is not None:
        return earlier
    try:
        result = await command(Keyed(principal, key))
    except (DomainError, ConcurrencyError):
        # A copy of this request that ran at the same time may have written first.
        earlier = await _earlier(documents, doc_key, digest, model)
        if earlier is not None:
            return earlier
        raise
    changes = Changes()
    changes.put(IDEMPOTENCY, doc_key, {"digest": digest,
                                       "response": result.model_dump(mode="json")})
    await documents.commit(changes)
    return result


async def _earlier(documents: DocumentStore, doc_key: str, digest: str,
                   model: type[M]) -> M | None:
    doc = await documents.get(IDEMPOTENCY, doc_key)
    if doc is None:
        return None
    if doc["digest"] != digest:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "header Idempotency-Key: this key was used with another request")
    return model.model_validate(doc["response"])
