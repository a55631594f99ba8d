"""The Service Bus entities the transport uses: one topic, and one subscription to it per
subscription of ours, whose rule admits only its event types (by `Subject`, which is the
event's class name) and the copies scheduled for it alone (`retry_subject`). Event types
that no subscription wants have a subscription of their own (`RECORDER`), so that an event
another service publishes is recorded whatever its type (the read models follow more types
than the handlers)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mussikon.adapters.messaging.servicebus.messages import retry_subject
from mussikon.ports.transport import Subscription

RECORDER = "mussikon.record"
"""The subscription that takes the event types no subscription of ours wants."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}")
"""What Service Bus allows in a subscription's name."""


def subscription_rules(subscriptions: Sequence[Subscription],
                       event_types: Iterable[str]) -> dict[str, frozenset[str]]:
    """Each Service Bus subscription's name and the subjects its rule admits. ValueError if
    a name cannot be a Service Bus subscription's or two subscriptions share one."""
    rules: dict[str, frozenset[str]] = {}
    for subscription in subscriptions:
        name = subscription.name
        if not _NAME.fullmatch(name) or name == RECORDER:
            raise ValueError(f"subscription {name!r} cannot name a Service Bus subscription "
                             "(up to 50 letters, digits, '.', '-', '_')")
        if name in rules:
            raise ValueError(f"two subscriptions are named {name!r}")
        rules[name] = frozenset(subscription.event_types) | {retry_subject(name)}
    unwanted = set(event_types).difference(*(s.event_types for s in subscriptions))
    if unwanted:
        rules[RECORDER] = frozenset(unwanted) | {retry_subject(RECORDER)}
    return rules

