"""The `Notifier` port: one message to one person, sent at most once per idempotency key."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One message to one person. `key` is the idempotency key (for example
    "welcome:<event id>:<recipient>"); `about` names what it concerns (a gig, a contract…)."""

    key: str
    kind: str
    recipient: str
    recipient_name: str
    subject: str
    body: str
    about: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        for name in ("key", "kind", "recipient", "subject"):
            if not getattr(self, name):
                raise ValueError(f"a notification needs a {name}")
        # These end up in mail headers, where a line break would inject headers. Names and
        # subjects come from users (a gig title): fold them onto one line; ids must be clean.
        for name in ("recipient_name", "subject"):
            object.__setattr__(self, name, " ".join(getattr(self, name).split()))
        for name in ("key", "kind", "recipient", "about"):
            if any(c in getattr(self, name) for c in "\r\n"):
                raise ValueError(f"notification {name} must be one line: {getattr(self, name)!r}")
        if "@" not in self.recipient or any(c.isspace() for c in self.recipient):
            raise ValueError(f"notification recipient is not an email address: {self.recipient!r}")
        if self.created_at.tzinfo is None:
            raise ValueError("notification created_at must carry its time zone")


@dataclass(frozen=True, slots=True)
class SentNotification:
    """A notification that went out: when, and through which channel."""

    notification: Notification
    sent_at: datetime
    channel: str
    number: int = 0
    """Its place in the order sent, from 1: the notifications sent are numbered without gaps."""


class NotificationError(Exception):
    """Sending failed; the notification was not recorded, so retrying it is safe."""


class Notifier(abc.ABC):
    """Sends notifications, each idempotency key at most once."""

    @abc.abstractmethod
    async def send(self, notification: Notification) -> bool:
        """Send it and return True; return False, sending nothing, if its key was sent before.

        Raises NotificationError when it could not be sent (retryable).
        """

    @abc.abstractmethod
    async def sent(self, limit: int = 100, after: int | None = None) -> list[SentNotification]:
        """The last `limit` notifications sent, newest last; with `after`, the first `limit`
        of those numbered after it, oldest first (a page: the next is after the last number
        of this one). Reads those it returns, not the others."""
