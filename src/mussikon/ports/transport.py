"""The transport port: how the store's events reach their subscriptions.

A subscription is a named group of handlers for some event types. Every transport
gives each subscription every event it subscribes to at least once, acknowledges a
message only after its handler finished, retries a failing handler with backoff and
then dead-letters the message with the reason, without holding up other messages: a
message waiting for its next try holds no handler slot. The events of one stream are
handled one after another in stream order (on a broker: in the order received), other
streams in parallel.
Events enter a transport from the store's feed (an outbox: `ports.feed`), never beside
the write, so a crash between saving and publishing loses nothing.

Adapters: `memory` (in-process, the embedded default) and `rabbitmq`.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from mussikon.domain.events import DomainEvent


@dataclass(frozen=True, slots=True)
class Envelope:
    """One delivery of one event. `message_id` is the event's id, stable across redeliveries."""

    message_id: str
    event: DomainEvent
    position: int | None = None
    attempt: int = 1
    headers: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[Envelope], Awaitable[None]]


class TransportNotReady(Exception):
    """The broker answered but lacks what the transport needs (its entities were not
    created): an operator must act, trying again will not help. The message says what is
    missing and how to create it."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A named consumer of some event types; its name keys its checkpoint, inbox, dead letters."""

    name: str
    event_types: frozenset[str]
    handler: Handler


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message given up on, with why."""

    id: str
    subscription: str
    message_id: str
    event_type: str
    position: int | None
    attempts: int
    exception: str
    reason: str
    body: str
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class Replayed:
    """What replaying one dead letter did."""

    dead_letter_id: str
    ok: bool
    """Handled and gone from the dead letters (if the transport does not replay in place:
    back in its queue, for a worker)."""
    reason: str = ""
    """Why not, when not `ok`: the handler's failure, or why it could not be sent back."""


class Transport(abc.ABC):
    """Moves events from the store's global order to subscriptions."""

    replays_in_place: ClassVar[bool] = True
    """True if `replay` runs the handlers itself and reports how they did; False if it sends
    the letter back to its queue, for a worker to handle later (failing again, it returns)."""

    @abc.abstractmethod
    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        """Begin delivering to these subscriptions (returns once running)."""

    @abc.abstractmethod
    async def open_for_operations(self, subscriptions: Sequence[Subscription]) -> None:
        """Make the dead-letter methods (`dead_letters`, `replay`, `delete_dead_letter`…)
        usable without delivering anything (no message is taken from the store or a queue,
        none is published): for an operator's command. `replay` runs these subscriptions'
        handlers if the transport `replays_in_place`. `stop` closes what this opened."""

    @abc.abstractmethod
    async def ready(self) -> str | None:
        """None if the transport is started and reaches its brokers (the in-process transport
        has none); otherwise why not, in one line naming the broker by its URL or endpoint
        with every secret masked: not started, or its connection lost (and being opened
        again). What the transport knows now: it waits for no broker."""

    @abc.abstractmethod
    def wake(self) -> None:
        """New events were appended: look now instead of at the next poll."""

    @abc.abstractmethod
    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every event stored so far was handled or dead-lettered (else TimeoutError)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop taking messages, finish those in flight, acknowledge them, disconnect."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int | None = None,
                           after: str | None = None) -> list[DeadLetter]:
        """Up to `limit` dead letters (all if None), in the transport's stable order: those
        that follow the letter `after` (KeyError if there is no such letter), or from the
        first. The order is the order they were given up on; a letter replayed and given up
        on again moves to the end. Paging with `after` visits each letter once while the
        dead letters do not change."""

    @abc.abstractmethod
    async def find_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        """The dead letter with this id, or None: a read of a few documents, however many
        letters there are."""

    @abc.abstractmethod
    async def dead_letter_ids(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids of dead letters that start with `prefix`, in id order (to find
        the letter a start of an id names): one bounded read."""

    @abc.abstractmethod
    async def replay(self, dead_letter_id: str) -> bool:
        """Deliver a dead letter again; True if it was handled and left the dead-letter queue
        (if not `replays_in_place`: True once it left it for its queue, not yet handled).
        KeyError if there is no such letter."""

    @abc.abstractmethod
    async def replay_all_dead_letters(self) -> list[Replayed]:
        """Replay every dead letter in one pass over them, oldest first; one result each. A
        letter that fails again stays, with its attempts added up."""

    @abc.abstractmethod
    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Drop one dead letter (KeyError if there is no such letter); the others stay."""

    @abc.abstractmethod
    async def purge_dead_letters(self) -> int:
        """Drop every dead letter; return how many."""
