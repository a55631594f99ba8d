"""The figures an operator watches, as Prometheus metrics in one registry: what the dashboard
charts and `/metrics` exposes are the same counters, histograms and gauges. Names follow
Prometheus' conventions (the client adds `_total` to counters; units in the names) and every
label takes values from a small set (subscriptions, brokers, routes, never ids or paths).

Counters move where the transports run handlers (`adapters/messaging/retries.py`), where they
retry or give up on a message, and where the relays publish; the repository times its appends
and the HTTP API its requests; gauges are set from the stores' positions by whoever samples
them (the dashboard's sampling, in `mussikon serve` and in a worker with a metrics port).
What moves around every message (`MessageCounter`, `MessageDurations`) is kept as plain
numbers and read by the registry when it is scraped; the rest are the client's own metrics.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)

Broker = Literal["memory", "rabbitmq", "servicebus"]
"""The `broker` label: which transport moved the message."""

Retry = Literal["in_process", "delayed"]
"""The `kind` label of a retry: in the worker after a short wait, or a delayed copy through
the broker (RabbitMQ's retry queues, Service Bus' scheduled messages)."""

class MessageCounter:
    """A counter moved around every message, kept as plain numbers: a count adds to a dict
    entry, and a scrape reads the entries as one Prometheus counter family. The client's own
    `Counter` takes a lock and checks itself on every count, several times this. Counts are
    made on the event loop's thread; a scrape from another thread copies the entries first.
    """

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}
        REGISTRY.register(self)

    def add(self, labels: tuple[str, ...], amount: float = 1) -> None:
        """Count `amount` for these label values (in the order of `labels`)."""
        values = self.values
        values[labels] = values.get(labels, 0) + amount

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        return [family]


class MessageDurations:
    """A histogram observed around every message, kept as plain numbers (see
    `MessageCounter`): per label values, a count per bucket and the sum. The buckets are the
    client's defaults, 5 ms to 10 s."""

    BOUNDS = (*Histogram.DEFAULT_BUCKETS[:-1], math.inf)
    _LE = tuple("+Inf" if bound == math.inf else repr(bound) for bound in BOUNDS)

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], list[float]] = {}
        """Per label values: the count of each bucket (not cumulative), then the sum."""
        REGISTRY.register(self)

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        """One duration of `seconds` for these label values."""
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = [0.0] * (len(self.BOUNDS) + 1)
        entry[bisect.bisect_left(self.BOUNDS, seconds)] += 1  # `le`: a bound counts as in
        entry[-1] += seconds

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, entry in list(self.values.items()):
            counts = list(itertools.accumulate(entry[:-1]))
            family.add_metric(labels, list(zip(self._LE, counts, strict=True)),
                              sum_value=entry[-1])
        return [family]


HANDLED = MessageCounter("mussikon_messages_handled",
                         "Messages a subscription's handler handled.", ("subscription", "broker"))
FAILED = MessageCounter("mussikon_handler_failures",
                        "Attempts of a subscription's handler that raised (each retry counts).",
                        ("subscription", "broker"))
RETRIED = MessageCounter("mussikon_messages_retried",
                         "Retries scheduled after a handler failed: in process or delayed.",
                         ("subscription", "broker", "kind"))
DEAD_LETTERED = MessageCounter("mussikon_messages_dead_lettered",
                               "Messages a subscription gave up on after its retries.",
                               ("subscription", "broker"))
PUBLISHED = MessageCounter("mussikon_messages_published",
                           "Events the outbox relay published to the broker.", ("broker",))
HANDLER_DURATION = MessageDurations("mussikon_handler_duration_seconds",
                                    "Seconds one attempt of a subscription's handler took.",
                                    ("subscription",))
APPEND_DURATION = Histogram("mussikon_store_append_duration_seconds",
                            "Seconds an append of a stream's new events to the store took.",
                            registry=REGISTRY)
HTTP_DURATION = Histogram("mussikon_http_request_duration_seconds",
                          "Seconds the HTTP API took to answer a request, by method, route "
                          "template and status class (2xx, 4xx, ...).",
                          ["method", "route", "status"], registry=REGISTRY)
HEAD = Gauge("mussikon_store_head_position", "The newest position of the store's global order.",
             registry=REGISTRY)
LAG = Gauge("mussikon_reader_lag_events",
            "Events of the global order a reader (projection, relay, subscription) has not "
            "passed yet.", ["reader", "kind"], registry=REGISTRY)
OUTBOX_AGE = Gauge("mussikon_outbox_age_seconds",
                   "Seconds since the oldest event an outbox relay has not passed yet was "
                   "recorded (0: it is up to date).", ["relay"], registry=REGISTRY)
SAGAS = Gauge("mussikon_saga_instances", "Saga instances of each kind at each status.",
              ["kind", "status"], registry=REGISTRY)
DEAD_LETTERS = Gauge("mussikon_dead_letters", "Dead letters kept, waiting for an operator.",
                     registry=REGISTRY)


def handled(subscription: str, broker: Broker) -> None:
    """A handler of `subscription` finished a message."""
    HANDLED.add((subscription, broker))


def failed(subscription: str, broker: Broker) -> None:
    """A handler of `subscription` raised on one attempt."""
    FAILED.add((subscription, broker))


def handler_took(subscription: str, seconds: float) -> None:
    """An attempt of a handler of `subscription` took `seconds`."""
    HANDLER_DURATION.observe((subscription,), seconds)


def retried(subscription: str, broker: Broker, kind: Retry) -> None:
    """A failed message of `subscription` will be tried again."""
    RETRIED.add((subscription, broker, kind))


def dead_lettered(subscription: str, broker: Broker) -> None:
    """`subscription` gave up on a message: it is a dead letter now."""
    DEAD_LETTERED.add((subscription, broker))


def published(broker: Broker, count: int = 1) -> None:
    """The relay published `count` events to `broker`."""
    PUBLISHED.add((broker,), count)


def reader_kind(reader: str) -> str:
    """What kind of reader a checkpoint's name belongs to: projection, relay, subscription."""
    name = reader.split(":", 1)[0]
    if name.startswith("projection"):
        return "projection"
    if "relay" in name:
        return "relay"
    if name.startswith("subscription"):
        return "subscription"
    return "other"


def total(counter: MessageCounter) -> float:
    """A counter's value summed over its labels."""
    return sum(list(counter.values.values()))


def exposition() -> bytes:
    """Every figure in Prometheus' text format."""
    return generate_latest(REGISTRY)
