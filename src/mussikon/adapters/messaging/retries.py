"""Retrying a failing handler, and what a dead letter says about the failure.

Both transports run a handler through `handle_with_retries`: once, then again after each
of the configured delays; a handler still failing after the last is dead-lettered by the
transport with the `HandlerFailure` (the exception's type, its message and where it was
raised, the number of attempts).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

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


async def handle_with_retries(subscription: str, handler: Handler, envelope: Envelope,
                              delays: Sequence[float], *, first_attempt: int = 1,
                              sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
                              ) -> HandlerFailure | None:
    """Run `handler` on `envelope`, and again after each of `delays` while it raises; None
    once it succeeded, else how it failed the last time. Attempts are numbered from
    `first_attempt` (in `Envelope.attempt`); `HandlerFailure.attempts` is the last one's
    number."""
    attempt = first_attempt
    for delay in (*delays, None):
        try:
            await handler(envelope if envelope.attempt == attempt
                          else replace(envelope, attempt=attempt))
            return None
        except Exception as exc:
            log.warning("%s failed on %s %s (attempt %d): %r", subscription,
                        envelope.event.event_type, envelope.message_id, attempt, exc)
            if delay is None:
                return HandlerFailure(exc, attempt)
        await sleep(delay)
        attempt += 1
    raise AssertionError("unreachable")
