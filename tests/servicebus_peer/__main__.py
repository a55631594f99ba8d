"""Run the peer alone: `python -m tests.servicebus_peer --port 5673 --queue q --subscription
mussikon-events/billing=ContractSignedEvent`; prints the connection string, runs until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import threading

from .broker import EntityOptions
from .server import ServiceBusPeer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servicebus_peer",
                                     description="A local Service Bus peer for the official SDK.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", action="append", default=[], metavar="NAME")
    parser.add_argument("--subscription", action="append", default=[],
                        metavar="TOPIC/NAME[=SUBJECT,...]",
                        help="creates the topic too; the subjects, if given, are its rule")
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
    with peer:
        print(peer.connection_string, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
