"""Fakes of the outbound ports for tests that check what handlers and sagas ask for."""

from __future__ import annotations

from uuid import UUID

from mussikon.adapters.store.memory import InMemoryEventStore
from mussikon.ports.event_store import RecordedEvent, StoreUnavailable
from mussikon.ports.notifier import Notification, Notifier, SentNotification
from mussikon.wire import EventCodec


class FakeNotifier(Notifier):
    """Keeps what it was asked to send; a key sends once, as the port promises."""

    def __init__(self) -> None:
        self.outbox: list[Notification] = []

    async def send(self, notification: Notification) -> bool:
        if any(n.key == notification.key for n in self.outbox):
            return False
        self.outbox.append(notification)
        return True

    async def sent(self, limit: int = 100, after: int | None = None) -> list[SentNotification]:
        numbered = [SentNotification(n, n.created_at, "fake", number)
                    for number, n in enumerate(self.outbox, start=1)]
        return numbered[-limit:] if after is None else numbered[after:after + limit]

    def kinds_to(self, recipient: str) -> list[str]:
        """The kinds sent to one person, in order."""
        return [n.kind for n in self.outbox if n.recipient == recipient]


class UnavailableAtFirst(InMemoryEventStore):
    """An event store whose look-up by event id fails its first `failures` times (a database
    restarting)."""

    def __init__(self, codec: EventCodec, failures: int) -> None:
        super().__init__(codec)
        self.failures = failures

    async def find_event(self, event_id: UUID) -> RecordedEvent | None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("PostgreSQL is restarting")
        return await super().find_event(event_id)
