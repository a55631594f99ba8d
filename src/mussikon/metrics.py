"""The figures an operator watches, as Prometheus metrics in one registry: what the dashboard
charts and `/metrics` exposes are the same counters, histograms and gauges. Names follow
Prometheus' conventions (the client adds `_total` to counters; units in the names) and every
label takes values from a small set (subscriptions, brokers, routes, never ids or paths).

Counters move where the transports run handlers (`adapters/messaging/retries.py`), where they
retry or give up on a message, and where the relays publish; the repository times its appends
and the HTTP API its requests; gauges are set from the stores' positions by whoever samples
them (the dashboard's sampling, in `mussikon serve` and in a worker with a metrics port).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase

REGISTRY = CollectorRegistry(auto_describe=True)

Broker = Literal["memory", "rabbitmq", "servicebus"]
"""The `broker` label: which transport moved the message."""

Retry = Literal["in_process", "delayed"]
"""The `kind` label of a retry: in the worker after a short wait, or a delayed copy through
the broker (RabbitMQ's retry queues, Service Bus' scheduled messages)."""

HANDLED = Counter("mussikon_messages_handled", "Messages a subscription's handler handled.",
                  ["subscription", "broker"], registry=REGISTRY)
FAILED = Counter("mussikon_handler_failures",
                 "Attempts of a subscription's handler that raised (each retry counts).",
                 ["subscription", "broker"], registry=REGISTRY)
RETRIED = Counter("mussikon_messages_retried",
                  "Retries scheduled after a handler failed: in process or delayed.",
                  ["subscription", "broker", "kind"], registry=REGISTRY)
DEAD_LETTERED = Counter("mussikon_messages_dead_lettered",
                        "Messages a subscription gave up on after its retries.",
                        ["subscription", "broker"], registry=REGISTRY)
PUBLISHED = Counter("mussikon_messages_published",
                    "Events the outbox relay published to the broker.", ["broker"],
                    registry=REGISTRY)
HANDLER_DURATION = Histogram("mussikon_handler_duration_seconds",
                             "Seconds one attempt of a subscription's handler took.",
                             ["subscription"], registry=REGISTRY)
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


@functools.cache
def _child(metric: MetricWrapperBase, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: these are counted around every message, and
    the lookup costs twice the count."""
    return metric.labels(*labels)


def handled(subscription: str, broker: Broker) -> None:
    """A handler of `subscription` finished a message."""
    _child(HANDLED, subscription, broker).inc()


def failed(subscription: str, broker: Broker) -> None:
    """A handler of `subscription` raised on one attempt."""
    _child(FAILED, subscription, broker).inc()


def handler_took(subscription: str, seconds: float) -> None:
    """An attempt of a handler of `subscription` took `seconds`."""
    _child(HANDLER_DURATION, subscription).observe(seconds)


def retried(subscription: str, broker: Broker, kind: Retry) -> None:
    """A failed message of `subscription` will be tried again."""
    _child(RETRIED, subscription, broker, kind).inc()


def dead_lettered(subscription: str, broker: Broker) -> None:
    """`subscription` gave up on a message: it is a dead letter now."""
    _child(DEAD_LETTERED, subscription, broker).inc()


def published(broker: Broker, count: int = 1) -> None:
    """The relay published `count` events to `broker`."""
    _child(PUBLISHED, broker).inc(count)


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


def total(counter: Counter) -> float:
    """A counter's value summed over its labels."""
    return sum(sample.value for metric in counter.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


def exposition() -> bytes:
    """Every figure in Prometheus' text format."""
    return generate_latest(REGISTRY)
