"""`mussikon bench bus --broker servicebus`: the Service Bus transport's path beside a raw loop
on the same official SDK (`azure-servicebus`, asyncio), against the same local peer
(`tests/servicebus_peer`), in the same run.

There is no Service Bus here: the peer is a Python AMQP 1.0 broker (python-qpid-proton) in a
process of its own, fresh for every contender and round. It is slow, and its speed says
nothing about the service; what the ratio measures is our client-side cost against the
SDK's plainest loop, both held back by the same peer.

- `transport-path` (messages/s): the relay of one process sends events already in the store
  (written before the clock starts) to the topic in `ServiceBusMessageBatch`es; a worker
  process receives them from its topic subscription (peek-lock), runs a handler that counts
  (no inbox) and completes each. Timed from the relay process's start (its connection
  included) to the worker's last completion.
  Peer `raw-azure-servicebus`: a sender process sends the messages our relay sends for the
  same events (body and properties: the wire contract's, so that both carry the same
  bytes), made before the clock starts, in `ServiceBusMessageBatch`es, one after the
  other; a receiver process
  receives up to `prefetch` at a time (prefetch `prefetch`, peek-lock) and completes each
  batch at once (`asyncio.gather`). Timed from the sender's start (its connection
  included) to the last completion. Its receiver waits on the socket as long as ours at a
  time (`consumer.SOCKET_TIMEOUT`), so that the ratio compares the code, not that setting.

With `rounds` > 1 the contenders take turns round after round; a figure is the messages over
the time summed over the rounds. The CPU each contender's processes spent (µs per message,
the peer's excluded) is reported beside.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.bus import (
    EVENT_TYPE,
    THROUGHPUT,
    TRANSPORT_PATH,
    Progress,
    _drop_store,
    _event,
    _fill_store,
    _get,
    _log_warnings,
    _open_store,
    _reap,
    _run,
    _store_label,
    _store_spec,
    _StoreSpec,
    _Tally,
)
from bench.bus import Options as BusOptions
from bench.report import Report, Result
from mussikon.ports.transport import Envelope, Subscription

BENCHMARK = "bus-servicebus"
RAW_SDK = "raw-azure-servicebus"
TARGETS: dict[str, float] = {RAW_SDK: 0.8}
"""The least ours/peer ratio wanted (issue 13's)."""
WORKLOADS = (TRANSPORT_PATH,)
TOPIC = "mussikon-events"
SUBSCRIPTION = "bench"
"""Our worker's subscription, and the raw receiver's."""
REPOSITORY = Path(__file__).resolve().parent.parent
"""Where `tests.servicebus_peer` is imported from."""
PEER_START = 60.0
"""Seconds the peer may take to start."""


@dataclass(frozen=True, slots=True)
class Options:
    """How big, how many rounds, and the worker's settings."""

    messages: int = 10_000
    rounds: int = 3
    store: str = "sqlite"
    """Where our relay reads the events from: `sqlite` (a file) or a `postgresql://` URL."""
    synchronous: str = "FULL"
    prefetch: int = 200
    """Messages each receiver holds, ours and the raw one's."""
    concurrency: int = 64
    """Handlers at once in our worker."""
    peers: bool = True
    workloads: tuple[str, ...] = WORKLOADS
    directory: str | None = None


def run(options: Options, progress: Progress | None = None) -> Report:
    """Run the transport path, ours then the raw SDK loop in each round; return the report."""
    say = progress or (lambda _line: None)
    bus_options = BusOptions(store=options.store, synchronous=options.synchronous)
    report = Report(BENCHMARK, settings={
        "broker": "local Service Bus peer (tests/servicebus_peer, Python, own process)",
        "store": _store_label(bus_options), "messages": str(options.messages),
        "prefetch": str(options.prefetch), "concurrency": str(options.concurrency),
        "rounds": str(options.rounds)})
    directory = Path(tempfile.mkdtemp(prefix="mussikon-sb-", dir=options.directory))
    tally, cpu = _Tally(), _Tally()
    n = options.messages
    try:
        for round_ in range(options.rounds):
            store = _store_spec(bus_options, directory, f"servicebus{round_}")
            asyncio.run(_fill_store(store, n))
            say(f"{TRANSPORT_PATH} round {round_ + 1}: ours")
            seconds, spent = _ours(options, store)
            tally.add("ours", n, seconds)
            cpu.add("ours", n, spent)
            asyncio.run(_drop_store(store))
            if options.peers:
                say(f"{TRANSPORT_PATH} round {round_ + 1}: {RAW_SDK}")
                seconds, spent = _raw(options)
                tally.add(RAW_SDK, n, seconds)
                cpu.add(RAW_SDK, n, spent)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    contenders = ["ours", RAW_SDK] if options.peers else ["ours"]
    report.settings["client CPU, µs/message"] = ", ".join(
        f"{name} {cpu.seconds[name] * 1e6 / cpu.messages[name]:.0f}" for name in contenders)
    report.results.append(Result(
        TRANSPORT_PATH, THROUGHPUT, tally.rate("ours"),
        {RAW_SDK: tally.rate(RAW_SDK)} if options.peers else {},
        TARGETS if options.peers else {}))
    return report


# --- the peer -------------------------------------------------------------------------------


@contextlib.contextmanager
def _peer(rules: dict[str, frozenset[str]]) -> Iterator[str]:
    """A fresh peer in a process of its own, with the topic and a subscription per rule;
    yields its connection string, stops it afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "tests.servicebus_peer", "--port", str(port)]
    for name, subjects in rules.items():
        command += ["--subscription", f"{TOPIC}/{name}={','.join(sorted(subjects))}"]
    if not (REPOSITORY / "tests" / "servicebus_peer").is_dir():
        raise RuntimeError(f"benchmark: the Service Bus peer is not in {REPOSITORY / 'tests'}")
    process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = _first_line(process, PEER_START)
        if not line.startswith("Endpoint="):
            raise RuntimeError(f"benchmark: the Service Bus peer did not start "
                               f"(exit code {process.poll()})")
        yield line.strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The peer's first line of output (its connection string, once it listens)."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.append(process.stdout.readline())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout)
    return lines[0] if lines else ""


def _our_rules() -> dict[str, frozenset[str]]:
    """The Service Bus subscriptions our worker receives from, as the transport names them."""
    from mussikon.adapters.messaging.servicebus.entities import subscription_rules
    from mussikon.wire import EventCodec

    return subscription_rules([Subscription(SUBSCRIPTION, frozenset({EVENT_TYPE}), _count)],
                              EventCodec().event_types)


async def _count(envelope: Envelope) -> None:
    """Stands for the handler when naming the subscriptions."""


# --- ours -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    """What the two processes of one run of ours do."""

    connection: str
    store: _StoreSpec
    messages: int
    prefetch: int
    concurrency: int


def _ours(options: Options, store: _StoreSpec) -> tuple[float, float]:
    """The worker process, then the relay process, on a fresh peer; the seconds from the
    relay process's start to the worker's last completion, and the CPU seconds of both."""
    with _peer(_our_rules()) as connection:
        job = _Job(connection, store, options.messages, options.prefetch, options.concurrency)
        context = multiprocessing.get_context("spawn")
        ready: Queue[Any] = context.Queue()
        worker_out: Queue[Any] = context.Queue()
        relay_out: Queue[Any] = context.Queue()
        worker = context.Process(target=_our_worker, args=(job, ready, worker_out))
        relay = context.Process(target=_our_relay, args=(job, relay_out))
        try:
            worker.start()
            _get(ready, "the worker to start", worker)
            relay.start()
            relayed = _get(relay_out, "the relay process", worker, relay)
            handled = _get(worker_out, "the worker", worker, relay)
        finally:
            _reap(worker, relay)
    return float(handled["end"] - relayed["start"]), float(handled["cpu"] + relayed["cpu"])


def _our_worker(job: _Job, ready: Queue[Any], out: Queue[Any]) -> None:
    """A worker process: receive until `job.messages` messages were handled and completed."""
    _log_warnings()
    _run(_run_our_worker(job, ready, out), "worker")


async def _run_our_worker(job: _Job, ready: Queue[Any], out: Queue[Any]) -> None:
    from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
    from mussikon.wire import EventCodec

    store, documents, close = await _open_store(job.store, pool_size=job.concurrency + 2)
    handled = 0
    done = asyncio.Event()

    async def handle(envelope: Envelope) -> None:
        nonlocal handled
        handled += 1
        if handled == job.messages:
            done.set()

    transport = ServiceBusTransport(job.connection, store, documents, EventCodec(),
                                    topic=TOPIC, relay=False, prefetch=job.prefetch,
                                    concurrency=job.concurrency)
    await transport.start([Subscription(SUBSCRIPTION, frozenset({EVENT_TYPE}), handle)])
    ready.put("ready")
    cpu = time.process_time()
    await done.wait()
    consumer = transport.consumer
    while consumer is not None and consumer.unsettled:  # noqa: ASYNC110
        await asyncio.sleep(0.001)  # the last completions in flight
    out.put({"end": time.perf_counter(), "cpu": time.process_time() - cpu})
    await transport.stop()
    await close()


def _our_relay(job: _Job, out: Queue[Any]) -> None:
    """The relay process: send every stored event, then say when it started."""
    _log_warnings()
    _run(_run_our_relay(job, out), "relay")


async def _run_our_relay(job: _Job, out: Queue[Any]) -> None:
    from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
    from mussikon.wire import EventCodec

    store, documents, close = await _open_store(job.store)
    transport = ServiceBusTransport(job.connection, store, documents, EventCodec(), topic=TOPIC)
    started, cpu = time.perf_counter(), time.process_time()
    await transport.start([])
    relay, head = transport.relay, await store.head_position()
    while relay is not None and await relay.position() < head:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    out.put({"start": started, "cpu": time.process_time() - cpu})
    await transport.stop()
    await close()


# --- the raw SDK loop -----------------------------------------------------------------------


def _raw(options: Options) -> tuple[float, float]:
    """The raw receiver process, then the raw sender process, on a fresh peer; the seconds
    from the sender's start (its connection included) to the last completion, and the
    CPU seconds of both."""
    with _peer({SUBSCRIPTION: frozenset({EVENT_TYPE})}) as connection:
        context = multiprocessing.get_context("spawn")
        ready: Queue[Any] = context.Queue()
        receiver_out: Queue[Any] = context.Queue()
        sender_out: Queue[Any] = context.Queue()
        receiver = context.Process(target=_raw_receiver, args=(
            connection, options.messages, options.prefetch, ready, receiver_out))
        sender = context.Process(target=_raw_sender, args=(
            connection, options.messages, sender_out))
        try:
            receiver.start()
            _get(ready, "the raw receiver to start", receiver)
            sender.start()
            sent = _get(sender_out, "the raw sender", receiver, sender)
            received = _get(receiver_out, "the raw receiver", receiver, sender)
        finally:
            _reap(receiver, sender)
    return float(received["end"] - sent["start"]), float(received["cpu"] + sent["cpu"])


def _raw_sender(connection: str, n: int, out: Queue[Any]) -> None:
    """Send `n` messages in `ServiceBusMessageBatch`es, one after the other: the messages our
    relay sends for the same events (body and properties, `messages.event_message`), made
    before the clock starts."""

    async def main() -> None:
        from azure.servicebus.aio import ServiceBusClient
        from azure.servicebus.exceptions import MessageSizeExceededError

        from mussikon.adapters.messaging.servicebus.messages import event_message
        from mussikon.wire import EventCodec

        codec = EventCodec()
        messages = [event_message(codec, _event(i), position=i + 1) for i in range(n)]
        started, cpu = time.perf_counter(), time.process_time()
        async with (ServiceBusClient.from_connection_string(connection) as client,
                    client.get_topic_sender(TOPIC) as sender):
            batch = await sender.create_message_batch()
            for message in messages:
                try:
                    batch.add_message(message)
                except MessageSizeExceededError:
                    await sender.send_messages(batch)
                    batch = await sender.create_message_batch()
                    batch.add_message(message)
            await sender.send_messages(batch)
            out.put({"start": started, "cpu": time.process_time() - cpu})

    _log_warnings()
    asyncio.run(main())


def _raw_receiver(connection: str, n: int, prefetch: int, ready: Queue[Any],
                  out: Queue[Any]) -> None:
    """Receive up to `prefetch` messages at a time (peek-lock, prefetch `prefetch`) and
    complete each batch at once, until `n` were completed."""

    async def main() -> None:
        from azure.servicebus import ServiceBusReceiveMode
        from azure.servicebus.aio import ServiceBusClient

        from mussikon.adapters.messaging.servicebus.consumer import SOCKET_TIMEOUT

        async with (ServiceBusClient.from_connection_string(connection) as client,
                    client.get_subscription_receiver(
                        TOPIC, SUBSCRIPTION, receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                        prefetch_count=prefetch, socket_timeout=SOCKET_TIMEOUT) as receiver):
            ready.put("ready")
            cpu, got = time.process_time(), 0
            while got < n:
                messages = await receiver.receive_messages(prefetch, max_wait_time=1.0)
                await asyncio.gather(*(receiver.complete_message(m) for m in messages))
                got += len(messages)
            out.put({"end": time.perf_counter(), "cpu": time.process_time() - cpu})

    _log_warnings()
    asyncio.run(main())


