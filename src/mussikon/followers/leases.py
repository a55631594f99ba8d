"""A lease in the document store: one process at a time does a piece of work.

The projection runner (per projection), the saga timeout scheduler and the outbox relay
each hold one while they work; the others sharing the store stand by and take over when
the holder releases it or stops renewing it.

A holder can stall past its term (a pause, a slow call) and lose the lease without
knowing. Two things keep it from working alongside the new holder: what it writes goes
through `DocumentStore.commit(fence=lease.fence)`, which the store refuses once another
owner took the lease (the fence names the generation it was taken at); and what it does
outside the store (the relay publishing to the broker) it starts only with `remaining()`
time left, measured on its own clock from before it last asked the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from mussikon.ports.documents import DocumentStore, Fence

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
        """When (by `monotonic`) the last renewal that succeeded was asked for."""
        self._generation: int | None = None

    @property
    def held(self) -> bool:
        """True if the last `hold()` got the lease and it has not been released since."""
        return self._renewed_at is not None

    @property
    def fence(self) -> Fence | None:
        """What a commit shows to be applied only while this holder keeps the lease
        (`DocumentStore.commit(fence=...)`); None if not held."""
        if self._renewed_at is None or self._generation is None:
            return None
        return Fence(self.name, self.owner, self._generation)

    def remaining(self) -> float:
        """Seconds the lease is still surely held: its term counted from before the last
        renewal was asked for (the store counts it from later); 0 if not held."""
        if self._renewed_at is None:
            return 0.0
        return max(self._renewed_at + self.seconds - self._monotonic(), 0.0)

    def renewal_due(self) -> float:
        """Seconds until `hold()` asks the store again (0: it would now)."""
        if self._renewed_at is None:
            return 0.0
        return max(self._renewed_at + self.seconds / 3 - self._monotonic(), 0.0)

    async def hold(self, *, recheck: bool = False) -> bool:
        """Take or renew the lease; False while another owner holds it. `recheck`: ask the
        store even if renewed lately (the holder has seen a sign that it lost the lease).

        The store may hand the lease back at a new generation: another owner held it
        meanwhile. Then `fence` changes, and what this holder was doing under the old one
        is refused by the store; a holder that keeps state of its own compares fences."""
        now = self._monotonic()
        if not recheck and self.renewal_due() > 0:
            return True
        generation = await self.documents.try_lease(self.name, self.owner, self.seconds)
        if generation is None:
            if self._renewed_at is not None:
                log.warning("lease %s lost by %s: another owner took it", self.name,
                            self.owner)
            self._renewed_at = self._generation = None
            return False
        if self._renewed_at is None:
            log.info("lease %s taken by %s (generation %d)", self.name, self.owner, generation)
        elif generation != self._generation:
            log.warning("lease %s was lost by %s and taken back (generation %d): another owner"
                        " held it meanwhile", self.name, self.owner, generation)
        self._renewed_at, self._generation = now, generation
        return True

    async def release(self) -> None:
        """Give the lease up, if held, so another can take over at once. A store that
        cannot be reached or is closed already lets the lease expire instead."""
        if self._renewed_at is None:
            return
        self._renewed_at = self._generation = None
        with contextlib.suppress(Exception):
            await self.documents.release_lease(self.name, self.owner)
