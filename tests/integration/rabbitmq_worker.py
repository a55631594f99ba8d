"""A worker process for the SIGKILL test: relay and consumer over a SQLite store, whose handler
writes its effect and its inbox entry in one transaction, and hangs on one chosen event.

    python -m tests.integration.rabbitmq_worker DB_PATH AMQP_URL PREFIX HANG_ON_EVENT_ID

Prints `handling <id>` when it starts on the event it hangs on, so the test knows when to kill.
"""

from __future__ import annotations

import asyncio
import sys

from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.ports.documents import Changes, DocumentStore
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import FAST

EFFECTS = "effects"
SUBSCRIPTION = "welcome"


def effect_writer(documents: DocumentStore, hang_on: str = "") -> Subscription:
    """A subscription whose effect is a document written with its inbox entry, atomically."""

    async def handle(envelope: Envelope) -> None:
        if envelope.message_id == hang_on:
            print(f"handling {hang_on}", flush=True)
            await asyncio.sleep(3600)  # killed here
        changes = Changes()
        changes.put(EFFECTS, envelope.message_id, {"event": envelope.event.event_type})
        await documents.commit(changes, inbox=(SUBSCRIPTION, envelope.message_id))

    return Subscription(SUBSCRIPTION, frozenset({"MusicianRegisteredEvent"}), handle)


async def main(db_path: str, url: str, prefix: str, hang_on: str) -> None:
    """Run the worker until killed."""
    db = await SqliteDatabase(db_path).open()
    documents = SqliteDocumentStore(db)
    # The tests' settings, so the test's own transport declares (and deletes) the same queues.
    transport = RabbitMqTransport(url, SqliteEventStore(db), documents, EventCodec(),
                                  prefix=prefix, connection_name=f"test-{prefix}", **FAST)
    await transport.start([effect_writer(documents, hang_on)])
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
