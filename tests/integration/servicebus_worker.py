"""A worker process for the Service Bus SIGKILL test: relay and consumer over a SQLite store,
the handler of `rabbitmq_worker.effect_writer` (its effect and inbox entry in one
transaction), hanging on one chosen event.

    python -m tests.integration.servicebus_worker DB_PATH CONNECTION_STRING HANG_ON_EVENT_ID TOPIC

Prints `handling <id>` when it starts on the event it hangs on, so the test knows when to kill.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_worker import effect_writer

OPTIONS: dict[str, Any] = {"retry_delays": (0.01,), "delayed_retry_delays": (0.3,),
                           "lease_seconds": 1.5, "poll_interval": 0.02,
                           "poll_max_interval": 0.2, "timeout": 10.0}


async def main(db_path: str, connection: str, hang_on: str, topic: str) -> None:
    """Run the worker until killed."""
    db = await SqliteDatabase(db_path).open()
    documents = SqliteDocumentStore(db)
    transport = ServiceBusTransport(connection, SqliteEventStore(db), documents, EventCodec(),
                                    topic=topic, **OPTIONS)
    await transport.start([effect_writer(documents, hang_on)])
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
