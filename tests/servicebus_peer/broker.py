"""The peer's entities, without any networking: queues, topics with subscriptions, their
dead-letter sub-queues, locks, deferral, scheduling and duplicate detection. Times are
milliseconds since the epoch, passed in by the caller so the rules read plainly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import IntEnum

from proton import timestamp

from .codec import Envelope
from .rules import TRUE, SqlFilter

DEFAULT_RULE = "$Default"


class State(IntEnum):
    """x-opt-message-state, as the SDK reads it."""

    ACTIVE = 0
    DEFERRED = 1
    SCHEDULED = 2


@dataclass(frozen=True)
class EntityOptions:
    """What a queue or subscription is configured with (the service's defaults, but a lock
    of seconds rather than a minute, and duplicate detection off)."""

    lock_duration: float = 60.0
    max_delivery_count: int = 10
    duplicate_detection_window: float | None = None
    """Seconds a MessageId is remembered by a queue or topic; None: no detection."""


@dataclass
class Stored:
    """A message in one entity."""

    sequence_number: int
    enqueued_ms: int
    envelope: Envelope
    failed_deliveries: int = 0
    """Deliveries that ended without settlement (abandon, lock expiry): the header's
    delivery-count, as the service writes it (its DeliveryCount less one, which the .NET SDK
    adds back and the Python SDK does not)."""
    state: State = State.ACTIVE
    dead_letter: dict[str, str] = field(default_factory=dict)
    """DeadLetterReason and DeadLetterErrorDescription once dead-lettered."""

    def copy(self) -> Stored:
        return Stored(self.sequence_number, self.enqueued_ms, self.envelope)

    def encode(self, locked_until_ms: int | None = None) -> bytes:
        annotations: dict[str, object] = {
            "x-opt-sequence-number": self.sequence_number,
            "x-opt-enqueued-time": timestamp(self.enqueued_ms),
            "x-opt-message-state": int(self.state)}
        if locked_until_ms is not None:
            annotations["x-opt-locked-until"] = timestamp(locked_until_ms)
        return self.envelope.encode(delivery_count=self.failed_deliveries, annotations=annotations,
                                    application_properties=self.dead_letter)


@dataclass
class Lock:
    token: uuid.UUID
    message: Stored
    until_ms: int


class LockLost(Exception):
    """The lock token names no lock held (settled already, or expired)."""


class Entity:
    """A queue or subscription (messages are received from it), or a dead-letter sub-queue."""

    def __init__(self, path: str, options: EntityOptions, *, dead_letters: bool = True) -> None:
        self.path = path
        self.options = options
        self.available: dict[int, Stored] = {}
        self.deferred: dict[int, Stored] = {}
        self.locks: dict[uuid.UUID, Lock] = {}
        self.dead_letters = (Entity(f"{path}/$DeadLetterQueue", options, dead_letters=False)
                             if dead_letters else None)

    def put(self, message: Stored) -> None:
        message.state = State.ACTIVE
        self.available[message.sequence_number] = message

    def take(self) -> Stored | None:
        """The first available message, removed (the caller locks or deletes it)."""
        if not self.available:
            return None
        return self.available.pop(min(self.available))

    def lock(self, message: Stored, now_ms: int) -> Lock:
        lock = Lock(uuid.uuid4(), message, now_ms + int(self.options.lock_duration * 1000))
        self.locks[lock.token] = lock
        return lock

    def unlock(self, token: uuid.UUID) -> Stored:
        try:
            return self.locks.pop(token).message
        except KeyError:
            raise LockLost(str(token)) from None

    def renew(self, token: uuid.UUID, now_ms: int) -> int:
        if token not in self.locks:
            raise LockLost(str(token))
        lock = self.locks[token]
        lock.until_ms = now_ms + int(self.options.lock_duration * 1000)
        return lock.until_ms

    def complete(self, token: uuid.UUID) -> None:
        self.unlock(token)

    def release(self, token: uuid.UUID) -> None:
        """Back where it was, not counted as a delivery (the receiver never saw it)."""
        message = self.unlock(token)
        (self.deferred if message.state == State.DEFERRED else self.available)[
            message.sequence_number] = message

    def abandon(self, token: uuid.UUID) -> None:
        self._failed(self.unlock(token))

    def defer(self, token: uuid.UUID) -> None:
        message = self.unlock(token)
        message.state = State.DEFERRED
        self.deferred[message.sequence_number] = message

    def dead_letter(self, token: uuid.UUID, reason: str | None, description: str | None) -> None:
        self._move_to_dead_letters(self.unlock(token), reason, description)

    def expire_locks(self, now_ms: int) -> None:
        for token in [t for t, lock in self.locks.items() if lock.until_ms <= now_ms]:
            self._failed(self.locks.pop(token).message)

    def _failed(self, message: Stored) -> None:
        message.failed_deliveries += 1
        if message.failed_deliveries >= self.options.max_delivery_count and self.dead_letters:
            self._move_to_dead_letters(
                message, "MaxDeliveryCountExceeded",
                f"Message could not be consumed after {self.options.max_delivery_count} "
                "delivery attempts.")
        elif message.state == State.DEFERRED:
            self.deferred[message.sequence_number] = message
        else:
            self.put(message)

    def _move_to_dead_letters(self, message: Stored, reason: str | None,
                              description: str | None) -> None:
        if self.dead_letters is None:  # a dead-letter queue's messages stay where they are
            self.put(message)
            return
        message.dead_letter = {k: v for k, v in (("DeadLetterReason", reason),
                                                 ("DeadLetterErrorDescription", description))
                               if v is not None}
        self.dead_letters.put(message)

    def take_deferred(self, sequence_number: int) -> Stored | None:
        return self.deferred.pop(sequence_number, None)

    def peek(self, from_sequence_number: int, count: int) -> list[Stored]:
        """Messages in sequence order from `from_sequence_number`: available, locked and
        deferred alike."""
        every = [*self.available.values(), *self.deferred.values(),
                 *(lock.message for lock in self.locks.values())]
        return sorted((m for m in every if m.sequence_number >= from_sequence_number),
                      key=lambda m: m.sequence_number)[:count]


class SendTarget:
    """A queue or a topic: what a sender sends to. It numbers messages, drops duplicates and
    holds scheduled messages until their time."""

    def __init__(self, name: str, options: EntityOptions) -> None:
        self.name = name
        self.options = options
        self.scheduled: dict[int, Stored] = {}
        self._last_sequence_number = 0
        self._seen: dict[str, int] = {}

    def deliver(self, message: Stored) -> None:
        """Put a message sent here, now due, where receivers find it."""
        raise NotImplementedError

    def accept(self, envelope: Envelope, now_ms: int) -> int | None:
        """Store a message sent here; its sequence number, or None for a duplicate dropped."""
        window = self.options.duplicate_detection_window
        if window is not None and envelope.message_id is not None:
            self._seen = {k: t for k, t in self._seen.items() if t > now_ms - window * 1000}
            if envelope.message_id in self._seen:
                return None
            self._seen[envelope.message_id] = now_ms
        self._last_sequence_number += 1
        message = Stored(self._last_sequence_number, now_ms, envelope)
        due = envelope.scheduled_enqueue_ms
        if due is not None and due > now_ms:
            message.state = State.SCHEDULED
            self.scheduled[message.sequence_number] = message
        else:
            self.deliver(message)
        return message.sequence_number

    def cancel(self, sequence_number: int) -> None:
        self.scheduled.pop(sequence_number, None)

    def enqueue_due(self, now_ms: int) -> None:
        for number, message in sorted(self.scheduled.items()):
            due = message.envelope.scheduled_enqueue_ms
            if due is None or due <= now_ms:
                del self.scheduled[number]
                message.enqueued_ms = now_ms
                self.deliver(message)


class Queue(SendTarget, Entity):
    """A queue: sent to and received from."""

    def __init__(self, name: str, options: EntityOptions) -> None:
        SendTarget.__init__(self, name, options)
        Entity.__init__(self, name, options)

    def deliver(self, message: Stored) -> None:
        self.put(message)

    def peek(self, from_sequence_number: int, count: int) -> list[Stored]:
        first = from_sequence_number
        scheduled = [m for m in self.scheduled.values() if m.sequence_number >= first]
        return sorted([*Entity.peek(self, first, count), *scheduled],
                      key=lambda m: m.sequence_number)[:count]


class Subscription(Entity):
    """A topic's subscription: it admits a message when one of its rules does (none: no
    message). Created through the peer's Python API with a set of subjects, its one rule
    admits the messages whose Subject or EventType property is in the set; through the
    management endpoint, it starts with `$Default` (1=1), as on the service."""

    def __init__(self, path: str, options: EntityOptions,
                 rules: dict[str, SqlFilter] | None = None) -> None:
        super().__init__(path, options)
        self.rules: dict[str, SqlFilter] = {DEFAULT_RULE: TRUE} if rules is None else rules

    def admits(self, envelope: Envelope) -> bool:
        return any(rule.admits(envelope) for rule in self.rules.values())


class Topic(SendTarget):
    """A topic: a copy of each message goes to every subscription whose rule admits it."""

    def __init__(self, name: str, options: EntityOptions) -> None:
        super().__init__(name, options)
        self.subscriptions: dict[str, Subscription] = {}

    def deliver(self, message: Stored) -> None:
        for subscription in self.subscriptions.values():
            if subscription.admits(message.envelope):
                subscription.put(message.copy())
