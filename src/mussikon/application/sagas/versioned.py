"""Versioned documents: a document written only from the version it was read at.

The document store has no compare-and-set, but its inbox is a unique claim committed in the
same transaction as the documents (the notification log and the sandbox gateway claim keys
the same way). Claiming "<key>#<version + 1>" with the write makes it optimistic
concurrency: of two writers that read version 3, one claims #4 and writes; the other
commits nothing, reloads and decides again.
"""

from __future__ import annotations

from mussikon.ports.documents import Changes, Document, DocumentStore

VERSION = "version"
"""The field holding a versioned document's version (0: never written)."""


class VersionedDocuments:
    """The documents of one collection, each saved with optimistic concurrency."""

    def __init__(self, documents: DocumentStore, collection: str) -> None:
        self.documents = documents
        self.collection = collection
        self._claims = f"versions:{collection}"

    async def read(self, key: str) -> tuple[Document | None, int]:
        """The document and its version (None and 0 if it was never written)."""
        doc = await self.documents.get(self.collection, key)
        return doc, (int(doc[VERSION]) if doc is not None else 0)

    async def write(self, key: str, doc: Document, expected_version: int,
                    changes: Changes | None = None) -> bool:
        """Save `doc` as version `expected_version + 1`, together with `changes`, atomically.

        Returns False, writing nothing, if someone saved that version first.
        """
        changes = changes or Changes()
        changes.put(self.collection, key, {**doc, VERSION: expected_version + 1})
        return await self.documents.commit(
            changes, inbox=(self._claims, f"{key}#{expected_version + 1}"))
