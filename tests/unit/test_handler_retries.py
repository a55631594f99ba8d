"""The retry-then-dead-letter path both transports take: a failing handler is tried once and
again after each configured delay; then the message is dead-lettered with the exception, its
message and the number of attempts."""

from __future__ import annotations

from typing import Any

import pytest

from mussikon.adapters.messaging.memory import InProcessTransport, checkpoint_name
from mussikon.adapters.messaging.retries import HandlerFailure, next_retry_delay, try_handler
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec

EVENT = MusicianRegisteredEvent(musician_id="m1", email="m1@example.com", name="Ana",
                                genres=("jazz",), location="Santo Domingo")


class Handler:
    """Fails its first `failures` calls; records the attempt numbers it was given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[int] = []

    async def __call__(self, envelope: Envelope) -> None:
        self.attempts.append(envelope.attempt)
        if len(self.attempts) <= self.failures:
            raise ValueError(f"cannot render the welcome email ({len(self.attempts)})")


async def test_one_try_passes_the_attempt_number_and_returns_what_the_handler_raised() -> None:
    handler = Handler(failures=1)
    envelope = Envelope(str(EVENT.id), EVENT)
    error = await try_handler("welcome", handler, envelope, 5, "memory")
    assert isinstance(error, ValueError)
    assert await try_handler("welcome", handler, envelope, 6, "memory") is None
    assert handler.attempts == [5, 6]


def test_each_retry_waits_its_delay_and_none_follows_the_last() -> None:
    delays = (0.1, 0.5)
    assert [next_retry_delay(delays, tries) for tries in (1, 2, 3)] == [0.1, 0.5, None]
    assert next_retry_delay((), 1) is None


def test_a_failure_names_the_exception_its_message_and_where_it_was_raised() -> None:
    try:
        raise ValueError("cannot render the welcome email")
    except ValueError as exc:
        failure = HandlerFailure(exc, attempts=3)
    assert failure.exception == "ValueError"
    assert failure.message.startswith("cannot render the welcome email (at ")
    assert "test_handler_retries.py:" in failure.message


async def test_the_in_process_transport_dead_letters_what_it_gave_up_on() -> None:
    store, documents = InMemoryEventStore(), InMemoryDocumentStore()
    transport = InProcessTransport(store, documents, EventCodec(), retry_delays=(0.0, 0.0),
                                   poll_interval=0.01)
    handler = Handler(failures=99)
    subscription = Subscription("welcome", frozenset({EVENT.event_type}), handler)
    await store.append(EVENT.stream_id, [EVENT], 0)

    await transport.start([subscription])
    await transport.wait_idle(5)
    await transport.stop()

    [letter] = await transport.dead_letters()
    assert (letter.subscription, letter.message_id, letter.event_type, letter.position) == (
        "welcome", str(EVENT.id), EVENT.event_type, 1)
    assert letter.attempts == 3 and handler.attempts == [1, 2, 3]
    assert letter.exception == "ValueError"
    assert letter.reason.startswith("cannot render the welcome email (3) (at ")
    assert EventCodec().decode(letter.body) == EVENT


async def test_a_dead_letter_that_cannot_be_written_is_tried_again_before_the_event_is_passed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, documents = InMemoryEventStore(), InMemoryDocumentStore()
    transport = InProcessTransport(store, documents, EventCodec(), retry_delays=(0.0,),
                                   poll_interval=0.01)
    handler = Handler(failures=99)
    subscription = Subscription("welcome", frozenset({EVENT.event_type}), handler)
    await store.append(EVENT.stream_id, [EVENT], 0)
    write_dead_letter = transport.dead_letter
    checkpoints_while_failing: list[int] = []

    async def store_down_once(*args: Any) -> None:
        if not checkpoints_while_failing:
            checkpoints_while_failing.append(
                await documents.checkpoint(checkpoint_name("welcome")))
            raise OSError("document store unreachable")
        await write_dead_letter(*args)

    monkeypatch.setattr(transport, "dead_letter", store_down_once)
    await transport.start([subscription])
    await transport.wait_idle(5)
    await transport.stop()

    [letter] = await transport.dead_letters()
    assert checkpoints_while_failing == [0]
    assert handler.attempts == [1, 2, 3] and letter.attempts == 3
    assert await documents.checkpoint(checkpoint_name("welcome")) == 1
