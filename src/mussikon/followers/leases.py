"""A lease in the document store: one process at a time does a piece of work.

The projection runner (per projection), the saga timeout scheduler and the outbox relay
each hold one while they work; the others sharing the store stand by and take over when
the holder releases it or stops renewing it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from mussikon.ports.documents import DocumentStore

log = logging.getLogger("mussikon.leases")


class Lease:
    """The lease `name` for `owner` (a new unique owner by default), `seconds` long.

    `hold()` takes it, or renews it when a third of its term has passed since the last
    renewal: a holder that asks often writes to the store only a few times per term, and
    still has two thirds of the term left when it renews.
    """

    def __init__(self, documents: DocumentStore, name: str, *, seconds: float,
                 owner: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.documents = documents
        self.name = name
        self.seconds = seconds
        self.owner = owner or uuid.uuid4().hex
        self._monotonic = monotonic
        self._renewed_at: float | None = None

    @property
    def held(self) -> bool:
        """True if the last `hold()` got the lease and it has not been released since."""
        return self._renewed_at is not None

    async def hold(self, *, recheck: bool = False) -> bool:
        """Take or renew the lease; False while another owner holds it. `recheck`: ask the
        store even if renewed lately (the holder has seen a sign that it lost the lease)."""
        now = self._monotonic()
        if (not recheck and self._renewed_at is not None
                and now - self._renewed_at < self.seconds / 3):
            return True
        if await self.documents.try_lease(self.name, self.owner, self.seconds):
            if self._renewed_at is None:
                log.info("lease %s taken by %s", self.name, self.owner)
            self._renewed_at = now
            return True
        if self._renewed_at is not None:
            log.warning("lease %s lost by %s: another owner took it", self.name, self.owner)
        self._renewed_at = None
        return False

    async def release(self) -> None:
        """Give the lease up, if held, so another can take over at once. A store that
        cannot be reached or is closed already lets the lease expire instead."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        with contextlib.suppress(Exception):
            await self.documents.release_lease(self.name, self.owner)
