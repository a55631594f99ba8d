"""The audit log of the dashboard's actions (who, when, what, how it went), kept in the
document store, newest first."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from mussikon.ports.documents import Changes, DocumentStore

AUDIT = "dashboard-audit"

_LATEST = 10**17
"""Keys count down from here (microseconds since the epoch), so a range read from the first
key reads the newest entries first."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action an operator took."""

    at: datetime
    who: str
    action: str
    target: str
    outcome: str


async def record(documents: DocumentStore, who: str, action: str, target: str,
                 outcome: str) -> AuditEntry:
    """Keep an entry: `who` did `action` on `target`, with `outcome`."""
    entry = AuditEntry(datetime.now(UTC), who, action, target, outcome)
    micros = int(entry.at.timestamp() * 1_000_000)
    changes = Changes()
    changes.put(AUDIT, f"{_LATEST - micros:017d}|{uuid.uuid4().hex}",
                {"at": entry.at.isoformat(), "who": who, "action": action, "target": target,
                 "outcome": outcome})
    await documents.commit(changes)
    return entry


async def recent(documents: DocumentStore, limit: int = 100) -> list[AuditEntry]:
    """The newest `limit` entries, newest first."""
    return [AuditEntry(datetime.fromisoformat(doc["at"]), doc["who"], doc["action"],
                       doc["target"], doc["outcome"])
            for _, doc in await documents.scan_page(AUDIT, limit=limit)]
