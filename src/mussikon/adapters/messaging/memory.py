"""The in-process transport: each subscription is a catch-up reader of the store's feed.

Nothing is queued in memory that the store does not hold: a subscription reads the feed
(`ports.feed`) page by page, runs at most `concurrency` handlers at once (the events of one
stream in stream order, a failing one waiting for its retry without holding a handler's
place: `stream_order.py`), and keeps as its checkpoint the last one of the feed before
which everything was handled, dead-lettered or skipped as undecodable
(`followers/undecodable.py`). A crash restarts it from that checkpoint, so nothing is lost;
the inbox makes the redelivered ones harmless. `stop` gives the handlers running
`stop_grace` seconds, then cancels them: the checkpoint stays before their events, which
the next start delivers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from mussikon import metrics, tracing
from mussikon.adapters.messaging.dead_letter_store import (
    DeadLetterIndex,
    letter_document,
    letter_of,
)
from mussikon.adapters.messaging.retries import (
    HandlerFailure,
    exception_name,
    failure_message,
    next_retry_delay,
    try_handler,
)
from mussikon.adapters.messaging.stream_order import StreamOrderedWorkers
from mussikon.domain.instant import utc_now
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.followers.polling import PollLoop, wait_until
from mussikon.followers.undecodable import skip_undecodable
from mussikon.logs import handling
from mussikon.ports.documents import Document, DocumentStore
from mussikon.ports.event_store import EventStore, RecordedEvent, UndecodableEventError
from mussikon.ports.feed import START, Checkpoint, Feed
from mussikon.ports.transport import (
    DeadLetter,
    Envelope,
    Replayed,
    Subscription,
    Transport,
)
from mussikon.wire import EventCodec

log = logging.getLogger("mussikon.bus")

SYSTEM, DESTINATION = "mussikon", "in-process"
BROKER: metrics.Broker = "memory"
"""The `messaging.system` and `messaging.destination.name` of the trace spans."""


def checkpoint_name(subscription: str) -> str:
    """The checkpoint a subscription keeps in the document store."""
    return f"subscription:{subscription}"


class _Reader:
    """One subscription's loop: read, hand to the workers, advance the checkpoint.

    The workers (`StreamOrderedWorkers`) run at most `concurrency` handlers at once, the
    events of one stream in stream order; a failing event gives its worker back while it
    waits for its next attempt, holding back only the later events of its stream. At most
    `batch_size` events are held at once (handled, queued behind their stream, or waiting
    for a retry): the reader waits for room before it dispatches more.
    """

    def __init__(self, transport: InProcessTransport, subscription: Subscription,
                 feed: Feed) -> None:
        self.t = transport
        self.sub = subscription
        self.feed = feed
        """The part of the transport's feed this reader reads."""
        self.name = feed.name(checkpoint_name(subscription.name))
        """Its checkpoint's name."""
        self.next: Checkpoint = START
        """Where the next read starts: after every event dispatched or passed by."""
        self.saved: Checkpoint = START
        self.in_flight: dict[tuple[str, int], Checkpoint] = {}
        """Dispatched and neither handled nor dead-lettered yet, by (stream, version), in the
        order read: the checkpoint before each."""
        self.failed_attempts: dict[tuple[str, int], int] = {}
        """Attempts made so far, by (stream, version), of the events failing (only those)."""
        self._behind: Checkpoint | None = None
        """A checkpoint this subscription was found behind the feed at: it still is there."""
        self.workers = StreamOrderedWorkers(f"subscription:{subscription.name}",
                                            transport.concurrency, self._attempt, _stream_of)
        self.poll = PollLoop(f"subscription {subscription.name}",
                             interval=transport.poll_interval,
                             max_interval=transport.poll_max_interval)
        self.task: asyncio.Task[None] | None = None

    @property
    def done_up_to(self) -> Checkpoint:
        """Every event before this checkpoint was handled, dead-lettered or skipped."""
        return next(iter(self.in_flight.values())) if self.in_flight else self.next

    async def caught_up(self) -> bool:
        """True if every event readable now was handled, dead-lettered or skipped (the feed
        is asked only when this reader moved since it was last found behind)."""
        at = self.next  # the reader may move on while the feed is asked
        if self.in_flight or self._behind == at:
            return False
        if await self.feed.caught_up(at):
            return True
        self._behind = at
        return False

    async def start(self) -> None:
        self.saved = await self.feed.saved(self.name)
        self.next = self.saved
        self.workers.start()
        self.task = asyncio.create_task(self.run(), name=f"subscription:{self.sub.name}")

    async def run(self) -> None:
        await self.poll.run(self._dispatch_batch)

    async def stop(self, grace: float) -> None:
        """Stop reading; give the handlers running `grace` seconds, then cancel them; save the
        checkpoint, which stays before every event not handled (queued, waiting for a retry,
        or cut off), for the next start to deliver again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self.poll.stop()
        await self.workers.stop(grace)  # a dispatch waiting for room is let go
        task = self.task
        if task is not None:
            # The step in progress (a read of the store) ends at once now, unless the store
            # is slow: it is not waited for past the grace.
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._save_checkpoint()

    async def _dispatch_batch(self) -> bool:
        """Hand the next batch to the workers; True if there was one (or a row skipped).
        A store that fails leaves the position where it was, for the next try."""
        feed = self.feed
        try:
            page = await feed.read(self.next, self.t.batch_size)
        except UndecodableEventError as error:
            # The checkpoint trails the handlers in flight: it passes the row with them.
            await skip_undecodable(self.t.documents, self.name, error)
            self.next = error.checkpoint
            return True
        for unreadable in page.undecodable:
            await skip_undecodable(self.t.documents, self.name, unreadable)
        held = self.t.batch_size
        before = self.next  # the checkpoint before `record`, once it is subscribed to
        previous: RecordedEvent | None = None
        for record in page.events:
            if record.event.event_type in self.sub.event_types:
                if previous is not None and (
                        after := feed.checkpoint_after(previous)) is not None:
                    before = after
                if self.workers.pending >= held:
                    await self.workers.room(held)
                    if self.poll.stopping:
                        break  # this event and those after it wait for the next start
                self.in_flight[(record.stream_id, record.version)] = before
                self.workers.submit(record)
            previous = record
        else:
            before = page.checkpoint
        self.next = before
        await self._save_checkpoint()
        return bool(page.events or page.undecodable)

    async def _attempt(self, record: RecordedEvent) -> float | None:
        """Run the handler once: None once it succeeded or was dead-lettered after its last
        retry, else the seconds before the next attempt."""
        with handling(record.event):
            return await self._attempt_record(record)

    async def _attempt_record(self, record: RecordedEvent) -> float | None:
        position, event = record.position, record.event
        key = (record.stream_id, record.version)
        tries = self.failed_attempts.get(key, 0) + 1
        envelope = Envelope(str(event.id), event, position, tries,
                            headers={"EventType": event.event_type, "Version": "1.0"})
        span = tracing.processing(
            SYSTEM, DESTINATION, self.sub.name, event,
            headers={tracing.TRACEPARENT: record.traceparent} if record.traceparent else None,
            attempt=tries)
        error = await try_handler(self.sub.name, self.sub.handler, envelope, tries, BROKER,
                                  span)
        if error is not None:
            delay = next_retry_delay(self.t.retry_delays, tries)
            if delay is None:
                delay = await self._dead_letter(envelope, HandlerFailure(error, tries))
            else:
                metrics.retried(self.sub.name, BROKER, "in_process")
            if delay is not None:
                self.failed_attempts[key] = tries
                return delay
        self.failed_attempts.pop(key, None)
        del self.in_flight[key]
        return None

    async def _dead_letter(self, envelope: Envelope, failure: HandlerFailure) -> float | None:
        """Dead-letter what was given up on: None once kept, else (the document store
        failing) the seconds before the handler and the dead letter are tried again."""
        event = envelope.event
        log.error("%s gave up on %s %s after %d attempts: %s", self.sub.name,
                  event.event_type, event.id, failure.attempts, failure.error)
        try:
            await self.t.dead_letter(self.sub.name, envelope.message_id, event.event_type,
                                     envelope.position, failure.attempts, failure.exception,
                                     failure.message, self.t.codec.encode(event).decode())
        except Exception:
            log.exception("%s could not dead-letter %s %s", self.sub.name, event.event_type,
                          event.id)
            return self.t.retry_delays[-1] if self.t.retry_delays else self.t.poll_max_interval
        return None

    async def _save_checkpoint(self) -> None:
        # Forward-only where the feed can tell, no compare-and-set: the checkpoint is only
        # where a restart resumes, committed with no documents, and every event before it was
        # handled by whoever moved it; the inbox makes an event delivered again harmless.
        checkpoint = self.done_up_to
        if checkpoint != self.saved:
            await self.feed.save(self.name, checkpoint)
            self.saved = checkpoint


def _stream_of(record: RecordedEvent) -> str:
    return record.stream_id


class InProcessTransport(Transport):
    """Delivers events inside this process, straight from the store, at least once."""

    def __init__(self, store: EventStore, documents: DocumentStore, codec: EventCodec, *,
                 concurrency: int = 8, retry_delays: Sequence[float] = (0.05, 0.25, 1.0),
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 batch_size: int = 500, stop_grace: float = 30.0,
                 feed: Feed | None = None) -> None:
        self.store, self.documents, self.codec = store, documents, codec
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        """What the subscriptions read (by default the store's global order)."""
        self.stop_grace = stop_grace
        """Seconds `stop` gives the handlers running before it cancels them."""
        self.concurrency = concurrency
        self.retry_delays = tuple(retry_delays)
        self.poll_interval, self.poll_max_interval = poll_interval, poll_max_interval
        self.batch_size = batch_size
        self.subscriptions: dict[str, Subscription] = {}
        """Those `replay` can run: started, or opened for operations."""
        self.readers: dict[str, _Reader] = {}
        """By checkpoint name: one per subscription and part of the feed."""
        self.dead_letter_index = DeadLetterIndex(documents)
        self._started = False

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        await self.dead_letter_index.adopt_legacy()
        parts = await self.feed.parts()
        started = {reader.sub.name for reader in self.readers.values()}
        for subscription in subscriptions:
            if subscription.name in started:
                raise ValueError(f"two subscriptions are named {subscription.name!r}")
            started.add(subscription.name)
            self.subscriptions[subscription.name] = subscription
            for part in parts:
                reader = _Reader(self, subscription, part)
                self.readers[reader.name] = reader
                await reader.start()
        self._started = True

    async def ready(self) -> str | None:
        """None while started and every subscription's reader runs (no broker to reach)."""
        if not self._started:
            return "the in-process transport: not started"
        stopped = sorted(r.name for r in self.readers.values()
                         if r.task is None or r.task.done())
        if stopped:
            return f"the in-process transport: {', '.join(stopped)} stopped"
        return None

    async def open_for_operations(self, subscriptions: Sequence[Subscription]) -> None:
        """Know the subscriptions, for `replay`, without reading the store for them. Dead
        letters kept the old way are moved into the index, if the store can be written."""
        try:
            await self.dead_letter_index.adopt_legacy()
        except Exception as exc:  # a store opened read-only: the next worker moves them
            log.warning("dead letters kept the old way (by id only) stay unlisted until a "
                        "worker starts: %s", exc)
        known: dict[str, Subscription] = {}
        for subscription in subscriptions:
            if subscription.name in known:
                raise ValueError(f"two subscriptions are named {subscription.name!r}")
            known[subscription.name] = subscription
        self.subscriptions.update(known)

    def wake(self) -> None:
        for reader in self.readers.values():
            reader.poll.wake()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        async def idle() -> bool:
            for reader in self.readers.values():
                if not await reader.caught_up():
                    return False
            return True

        await wait_until(idle, timeout, wake=self.wake)

    async def stop(self) -> None:
        """Stop reading; the handlers running have `stop_grace` seconds to finish, then are
        cancelled (their events are delivered again at the next start)."""
        self._started = False
        readers = list(self.readers.values())
        for reader in readers:
            reader.poll.stop()
        results = await asyncio.gather(*(r.stop(self.stop_grace) for r in readers),
                                       return_exceptions=True)
        for reader, result in zip(readers, results, strict=True):
            if isinstance(result, Exception):  # the checkpoint stays where it was saved last
                log.warning("%s: could not save its checkpoint on stopping: %s",
                            reader.sub.name, result)

    async def dead_letter(self, subscription: str, message_id: str, event_type: str,
                          position: int | None, attempts: int, exception: str, reason: str,
                          body: str) -> None:
        """Keep a message given up on, with the reason, in the document store."""
        await self.dead_letter_index.keep([letter_document(DeadLetter(
            id=f"{subscription}:{message_id}", subscription=subscription,
            message_id=message_id, event_type=event_type, position=position,
            attempts=attempts, exception=exception, reason=reason, body=body,
            failed_at=utc_now()))])
        metrics.dead_lettered(subscription, BROKER)

    async def dead_letters(self, limit: int | None = None,
                           after: str | None = None) -> list[DeadLetter]:
        """Oldest failure first (ties by id): a range read of the index of dead letters."""
        return [letter_of(doc) for doc in await self.dead_letter_index.page(limit, after)]

    async def find_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        found = await self.dead_letter_index.get(dead_letter_id)
        return None if found is None else letter_of(found[1])

    async def dead_letter_ids(self, prefix: str, limit: int) -> list[str]:
        return await self.dead_letter_index.ids(prefix, limit)

    async def replay(self, dead_letter_id: str) -> bool:
        found = await self.dead_letter_index.get(dead_letter_id)
        if found is None:
            raise KeyError(f"no dead letter {dead_letter_id!r}")
        key, doc = found
        subscription = self.subscriptions.get(doc["subscription"])
        if subscription is None:
            raise KeyError(f"subscription {doc['subscription']!r} is not known here")
        return (await self._replay(key, doc, subscription)).ok

    async def replay_all_dead_letters(self) -> list[Replayed]:
        """Each dead letter's handler runs once, oldest first, a page of letters read at a
        time; each outcome is committed before the next letter runs. A letter that fails
        again moves to the end, where this pass meets it again and leaves it."""
        results = []
        seen: set[str] = set()
        async for page in self.dead_letter_index.pages():
            for key, doc in page:
                if doc["id"] in seen:
                    continue
                seen.add(doc["id"])
                subscription = self.subscriptions.get(doc["subscription"])
                if subscription is None:
                    results.append(Replayed(doc["id"], False, f"subscription "
                                            f"{doc['subscription']!r} is not known here"))
                    continue
                results.append(await self._replay(key, doc, subscription))
        return results

    async def _replay(self, key: str, doc: Document, subscription: Subscription) -> Replayed:
        """Run the handler on the letter: gone if it succeeds, else kept with the new
        failure, at the end."""
        try:
            event = self.codec.decode(doc["body"])
            await subscription.handler(Envelope(doc["message_id"], event, doc["position"]))
        except Exception as exc:
            doc = {**doc, "attempts": doc["attempts"] + 1, "exception": exception_name(exc),
                   "reason": failure_message(exc), "failed_at": utc_now().isoformat()}
            await self.dead_letter_index.keep([doc])
            return Replayed(doc["id"], False, f"{doc['exception']}: {doc['reason']}")
        await self.dead_letter_index.remove(key, doc["id"])
        return Replayed(doc["id"], True)

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        found = await self.dead_letter_index.get(dead_letter_id)
        if found is None:
            raise KeyError(f"no dead letter {dead_letter_id!r}")
        await self.dead_letter_index.remove(found[0], dead_letter_id)

    async def purge_dead_letters(self) -> int:
        return await self.dead_letter_index.purge()
