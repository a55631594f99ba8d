"""Fakes of the outbound ports for tests that check what handlers and sagas ask for."""

from __future__ import annotations

from mussikon.ports.notifier import Notification, Notifier, SentNotification


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
