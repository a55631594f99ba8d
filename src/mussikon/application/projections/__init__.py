"""Read models built from the store's global order, each with a checkpoint kept in the same
transaction as its update: a crash never applies an event twice nor skips one."""

from __future__ import annotations

import abc
from typing import ClassVar

from mussikon.domain.events import DomainEvent
from mussikon.ports.documents import Changes, Document, DocumentStore


class View:
    """A projection's window on its documents while it applies a batch: reads see the batch's
    own writes, writes are collected and committed with the checkpoint."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents
        self.changes = Changes()

    async def get(self, collection: str, key: str) -> Document | None:
        """The document as this batch left it."""
        if (collection, key) in self.changes.puts:
            return self.changes.puts[(collection, key)]
        if (collection, key) in self.changes.deletes:
            return None
        return await self.documents.get(collection, key)

    def put(self, collection: str, key: str, doc: Document) -> None:
        """Write a document (committed with the batch)."""
        self.changes.put(collection, key, doc)

    def delete(self, collection: str, key: str) -> None:
        """Remove a document (committed with the batch)."""
        self.changes.delete(collection, key)


class Projection(abc.ABC):
    """A read model: which events it needs, which collections it owns, how an event changes it."""

    name: ClassVar[str]
    collections: ClassVar[tuple[str, ...]]
    event_types: ClassVar[frozenset[str]]

    @abc.abstractmethod
    async def apply(self, event: DomainEvent, view: View) -> None:
        """Change the read model for one event. Must not touch anything outside `view`."""
