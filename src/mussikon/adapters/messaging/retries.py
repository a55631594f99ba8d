"""Retrying a failing handler, and what a dead letter says about the failure.

Both transports run a handler once per attempt through `try_handler`, then again after
each of the configured delays (`next_retry_delay`), scheduled by `StreamOrderedWorkers`
so that no worker sleeps through the wait; a handler still failing after the last is
dead-lettered by the transport with the `HandlerFailure` (the exception's type, its
message and where it was raised, the number of attempts).
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mussikon import metrics
from mussikon.ports.transport import Envelope, Handler

log = logging.getLogger("mussikon.bus")


@dataclass(frozen=True, slots=True)
class HandlerFailure:
    """How a handler failed at its last attempt, and how many attempts there were."""

    error: Exception
    attempts: int

    @property
    def exception(self) -> str:
        """The exception's type, as a dead letter names it."""
        return exception_name(self.error)

    @property
    def message(self) -> str:
        """The exception's message and where it was raised, as a dead letter keeps it."""
        return failure_message(self.error)


def exception_name(error: BaseException) -> str:
    """The name a dead letter gives an exception's type."""
    return type(error).__qualname__


def failure_message(error: BaseException) -> str:
    """The exception's message (its type's name if it has none) and the file and line it was
    raised at."""
    text = str(error) or type(error).__name__
    where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    if not where:
        return text
    return f"{text} (at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno})"


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


async def try_handler(subscription: str, handler: Handler, envelope: Envelope,
                      attempt: int, broker: metrics.Broker,
                      span: contextlib.AbstractContextManager[None] = _NO_SPAN
                      ) -> Exception | None:
    """Run `handler` once on `envelope` as attempt number `attempt` (in `Envelope.attempt`),
    inside `span` (the attempt's trace span, `mussikon.tracing.processing`); None if it
    succeeded, else the exception it raised (logged as a warning). Each outcome is counted,
    and the attempt timed, per subscription and `broker` (`metrics`). The transports call it
    inside `logs.handling(event)`, so that what is logged meanwhile carries the event's ids.
    """
    started = time.perf_counter()
    try:
        with span:
            await handler(envelope if envelope.attempt == attempt
                          else replace(envelope, attempt=attempt))
        metrics.handled(subscription, broker)
        return None
    except Exception as exc:
        metrics.failed(subscription, broker)
        log.warning("%s failed on %s %s (attempt %d): %r", subscription,
                    envelope.event.event_type, envelope.message_id, attempt, exc)
        return exc
    finally:
        metrics.handler_took(subscription, time.perf_counter() - started)


def next_retry_delay(delays: Sequence[float], tries: int) -> float | None:
    """The seconds to wait before trying again after `tries` failed attempts, None once
    the in-process retries (one per delay) are used up."""
    return delays[tries - 1] if tries <= len(delays) else None


STORE_WAIT_FIRST, STORE_WAIT_MAX = 0.1, 5.0
"""Seconds a message waits before asking the store again, after its first failure to answer
(then doubled each time), and at most."""


def store_wait_delay(waits: int) -> float:
    """The seconds a message waits in the consumer after the store failed to answer for it
    `waits` times (a database restarting): not the message's fault and no handler's attempt,
    so it is neither counted nor handed back to the broker, which would count each return
    toward its delivery limit and dead-letter it within seconds."""
    return min(STORE_WAIT_MAX, STORE_WAIT_FIRST * 2.0 ** (waits - 1))
