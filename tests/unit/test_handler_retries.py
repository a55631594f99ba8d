"""The retry-then-dead-letter path both transports take: a failing handler is tried once and
again after each configured delay; then the message is dead-lettered with the exception, its
message and the number of attempts."""

from __future__ import annotations

from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.adapters.messaging.retries import HandlerFailure, handle_with_retries
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


class Sleeps(list[float]):
    """A fake sleep that records how long it was asked to sleep."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def test_a_handler_that_recovers_is_retried_after_each_delay_until_it_succeeds() -> None:
    handler, sleeps = Handler(failures=2), Sleeps()
    failure = await handle_with_retries("welcome", handler, Envelope(str(EVENT.id), EVENT),
                                        (0.1, 0.5, 2.0), sleep=sleeps)
    assert failure is None
    assert handler.attempts == [1, 2, 3]
    assert sleeps == [0.1, 0.5]


async def test_a_handler_failing_every_time_is_given_up_after_its_retries() -> None:
    handler, sleeps = Handler(failures=99), Sleeps()
    failure = await handle_with_retries("welcome", handler, Envelope(str(EVENT.id), EVENT),
                                        (0.1, 0.5), sleep=sleeps)
    assert isinstance(failure, HandlerFailure)
    assert handler.attempts == [1, 2, 3]
    assert sleeps == [0.1, 0.5]  # no sleep after the last attempt
    assert failure.attempts == 3
    assert failure.exception == "ValueError"
    assert failure.message.startswith("cannot render the welcome email (3) (at ")
    assert "test_handler_retries.py:" in failure.message


async def test_attempts_go_on_counting_from_the_first_attempt_given() -> None:
    handler = Handler(failures=99)
    failure = await handle_with_retries("welcome", handler, Envelope(str(EVENT.id), EVENT),
                                        (0.0,), first_attempt=5, sleep=Sleeps())
    assert handler.attempts == [5, 6]
    assert failure is not None and failure.attempts == 6


async def test_the_in_process_transport_dead_letters_what_it_gave_up_on() -> None:
    store, documents = InMemoryEventStore(), InMemoryDocumentStore()
    transport = InProcessTransport(store, documents, EventCodec(), retry_delays=(0.0, 0.0))
    handler = Handler(failures=99)
    subscription = Subscription("welcome", frozenset({EVENT.event_type}), handler)

    await transport.deliver(subscription, EVENT, position=1)

    [letter] = await transport.dead_letters()
    assert (letter.subscription, letter.message_id, letter.event_type, letter.position) == (
        "welcome", str(EVENT.id), EVENT.event_type, 1)
    assert letter.attempts == 3 and handler.attempts == [1, 2, 3]
    assert letter.exception == "ValueError"
    assert letter.reason.startswith("cannot render the welcome email (3) (at ")
    assert EventCodec().decode(letter.body) == EVENT
