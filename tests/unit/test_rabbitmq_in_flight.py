"""A worker consumes every event type's queue; `MUSSIKON_RABBITMQ_MAX_IN_FLIGHT` bounds the
unacknowledged messages of all of them together, shared as each queue's prefetch."""

from __future__ import annotations

from typing import Any, cast

import pytest
from pydantic import ValidationError

from mussikon.adapters.messaging.rabbitmq.consumer import EventConsumer
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.config import Settings
from mussikon.ports.transport import Subscription
from mussikon.wire import EventCodec

TYPES = [f"Thing{n}HappenedEvent" for n in range(40)]


def consumer(**options: Any) -> EventConsumer:
    async def handle(_: Any) -> None:
        return None

    return EventConsumer(cast(Any, None), Topology(TYPES), EventCodec(),
                         [Subscription("s", frozenset({TYPES[0]}), handle)], store=cast(Any, None),
                         **options)


def test_the_queues_share_the_bound_and_the_whole_worker_holds_no_more() -> None:
    shared = consumer(prefetch=100, max_in_flight=300)
    assert len(shared.queues) == 40
    assert shared.prefetch == 7  # 300 // 40
    assert shared.prefetch * len(shared.queues) <= 300
    assert shared.retry_wait_limit == 3
    assert consumer(prefetch=5, max_in_flight=10_000).prefetch == 5  # never above the prefetch
    assert consumer(prefetch=100, max_in_flight=10).prefetch == 1  # at least one per queue
    assert consumer(prefetch=100).prefetch == 100  # no bound: the prefetch per queue


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_a_bad_max_in_flight_is_refused_naming_the_setting(value: str,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("MUSSIKON_RABBITMQ_MAX_IN_FLIGHT", value)
    with pytest.raises(ValidationError, match="rabbitmq_max_in_flight"):
        Settings()


def test_the_default_is_300(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSSIKON_RABBITMQ_MAX_IN_FLIGHT", raising=False)
    assert Settings().rabbitmq_max_in_flight == 300
