"""Snapshots: an aggregate's state at a version, kept in the document store as a cache.

Loading starts from the newest snapshot and reads only the events after it, so the
cost of a load stops growing with the stream's length. A snapshot is taken every
`every` events. It is only a cache: if the aggregate's attributes changed since it was
written (another code version), it is ignored and the stream is read from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

from mussikon.domain.aggregate import Aggregate
from mussikon.domain.instant import format_dotnet, parse_dotnet
from mussikon.ports.documents import Changes, Document, DocumentStore

A = TypeVar("A", bound=Aggregate)

SNAPSHOTS = "snapshots"
_NOT_STATE = frozenset({"id", "version", "pending"})


def _encode(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$time": format_dotnet(value)}
    if isinstance(value, set | frozenset):
        return {"$set": sorted(value)}
    if isinstance(value, tuple):
        return {"$tuple": list(value)}
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"cannot snapshot a {type(value).__name__}")


_TAGGED: dict[str, Callable[[Any], Any]] = {
    "$decimal": Decimal, "$time": parse_dotnet, "$set": set, "$tuple": tuple,
}


def _decode(value: Any, like: Any) -> Any:
    if isinstance(value, dict):
        tag, inner = next(iter(value.items()))
        return _TAGGED[tag](inner)
    if isinstance(like, Enum):
        return type(like)(value)
    return value


class Snapshots:
    """Takes and finds snapshots of aggregates."""

    def __init__(self, documents: DocumentStore, every: int) -> None:
        self.documents = documents
        self.every = every

    async def load(self, cls: type[A], aggregate_id: str) -> A | None:
        """The aggregate as of its newest usable snapshot, or None."""
        doc = await self.documents.get(SNAPSHOTS, cls.stream_id_for(aggregate_id))
        if doc is None:
            return None
        aggregate = cls(aggregate_id)
        state = {k: v for k, v in vars(aggregate).items() if k not in _NOT_STATE}
        if doc.get("type") != cls.__name__ or sorted(doc["state"]) != sorted(state):
            return None  # written by code with other attributes: read the stream instead
        for name, value in doc["state"].items():
            setattr(aggregate, name, _decode(value, state[name]))
        aggregate.version = int(doc["version"])
        return aggregate

    def due(self, before: int, after: int) -> bool:
        """Whether saving from version `before` to `after` crossed a multiple of `every`."""
        return self.every > 0 and after // self.every > before // self.every

    async def save(self, aggregate: Aggregate) -> None:
        """Record the aggregate's state at its version."""
        doc: Document = {
            "type": type(aggregate).__name__, "version": aggregate.version,
            "state": {k: _encode(v) for k, v in vars(aggregate).items() if k not in _NOT_STATE},
        }
        changes = Changes()
        changes.put(SNAPSHOTS, aggregate.stream_id, doc)
        await self.documents.commit(changes)
