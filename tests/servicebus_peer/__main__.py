"""Run the peer alone: `python -m tests.servicebus_peer --port 5673 --queue q --subscription
mussikon-events/billing=ContractSignedEvent`; prints the connection string, runs until Ctrl-C.
`--mussikon` creates the topic `mussikon-events` and every subscription `mussikon worker`
receives from, with their rules."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading

from .broker import EntityOptions
from .server import ServiceBusPeer

TOPIC = "mussikon-events"


async def _worker_rules() -> dict[str, frozenset[str]]:
    """The Service Bus subscriptions `mussikon worker` receives from, and their rules."""
    from mussikon.adapters.messaging.servicebus.entities import subscription_rules
    from mussikon.bootstrap import open_app
    from mussikon.config import Settings

    app = await open_app(Settings(store_url="memory://", broker_url="memory://"))
    try:
        return subscription_rules(app.subscriptions, app.codec.event_types)
    finally:
        await app.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servicebus_peer",
                                     description="A local Service Bus peer for the official SDK.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", action="append", default=[], metavar="NAME")
    parser.add_argument("--subscription", action="append", default=[],
                        metavar="TOPIC/NAME[=SUBJECT,...]",
                        help="creates the topic too; the subjects, if given, are its rule")
    parser.add_argument("--mussikon", action="store_true",
                        help="the topic mussikon-events and the worker's subscriptions")
    parser.add_argument("--lock-duration", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--max-delivery-count", type=int, default=10)
    parser.add_argument("--duplicate-detection-window", type=float, metavar="SECONDS")
    args = parser.parse_args(argv)
    peer = ServiceBusPeer(args.port, EntityOptions(args.lock_duration, args.max_delivery_count,
                                                   args.duplicate_detection_window))
    for name in args.queue:
        peer.create_queue(name)
    for spec in args.subscription:
        path, _, subjects = spec.partition("=")
        topic, slash, name = path.partition("/")
        if not slash or not name:
            parser.error(f"--subscription {spec!r} is not TOPIC/NAME[=SUBJECT,...]")
        if topic.lower() not in peer.topics():
            peer.create_topic(topic)
        peer.create_subscription(topic, name, set(subjects.split(",")) if subjects else None)
    if args.mussikon:
        peer.create_topic(TOPIC)
        for name, subjects in asyncio.run(_worker_rules()).items():
            peer.create_subscription(TOPIC, name, set(subjects))
    with peer:
        print(peer.connection_string, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
