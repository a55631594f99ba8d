"""Run the peer alone: `python -m tests.servicebus_peer --port 5673 --queue q --subscription
mussikon-events/billing=ContractSignedEvent`; prints the connection string, runs until Ctrl-C.
`--mussikon` creates the topics `mussikon-events` (for `mussikon worker`) and
`mussikon-events-demo` (for `mussikon demo`), each with every subscription the worker
receives from, with their rules; or run `mussikon broker provision` against the peer, which
creates them through its management endpoint (on the same port)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading

from .broker import EntityOptions
from .server import ServiceBusPeer

TOPIC = "mussikon-events"
DEMO_TOPIC = f"{TOPIC}-demo"
"""The topic `mussikon demo` publishes to (its own, as it has its own store)."""


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
                        help="the topics mussikon-events and mussikon-events-demo, with "
                        "the worker's subscriptions")
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
        rules = asyncio.run(_worker_rules())
        for topic in (TOPIC, DEMO_TOPIC):
            peer.create_topic(topic)
            for name, subjects in rules.items():
                peer.create_subscription(topic, name, set(subjects))
    with peer:
        print(peer.connection_string, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
