"""The Azure Service Bus transport, on the official SDK (`azure-servicebus`, its asyncio
API): an outbox relay to a topic, one topic subscription per subscription of ours, peek-lock
consumers with bounded retries and the subscriptions' dead-letter sub-queues.

Needs the `servicebus` extra: `pip install 'mussikon[servicebus]'`.
"""

from __future__ import annotations

try:
    import azure.servicebus  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the Service Bus transport needs azure-servicebus: "
                      "pip install 'mussikon[servicebus]'") from exc
