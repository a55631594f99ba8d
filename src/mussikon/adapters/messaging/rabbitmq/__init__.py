"""The RabbitMQ transport: the specification's topology, an outbox relay with publisher
confirms, consumers with bounded retries and a dead-letter queue.

Needs the `rabbitmq` extra (aiormq): `pip install 'mussikon[rabbitmq]'`.
"""

from __future__ import annotations

try:
    import aiormq  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the RabbitMQ transport needs aiormq: pip install 'mussikon[rabbitmq]'") \
        from exc

from mussikon.adapters.messaging.rabbitmq.connection import BrokerConnection, BrokerUnavailable
from mussikon.adapters.messaging.rabbitmq.topology import (
    SPECIFICATION_ROUTING_KEYS,
    QueueType,
    Topology,
    derived_routing_key,
)
from mussikon.adapters.messaging.rabbitmq.transport import RabbitMqTransport

__all__ = [
    "SPECIFICATION_ROUTING_KEYS",
    "BrokerConnection",
    "BrokerUnavailable",
    "QueueType",
    "RabbitMqTransport",
    "Topology",
    "derived_routing_key",
]
