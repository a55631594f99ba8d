"""The event store port's helpers: the record the adapters' read loops make, and the reading
of a refused multi-stream append."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.event_store import (
    ANY_VERSION,
    NO_STREAM,
    ConcurrencyError,
    RecordedEvent,
    check_batch,
    refused_batch,
)


def registered(n: int) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=f"m-{n}", email="a@example.com", name="Ana",
                                   genres=("jazz",), location="Santo Domingo")


def test_a_recorded_event_is_a_frozen_record_compared_by_its_fields() -> None:
    event, at = registered(1), datetime(2026, 1, 2, tzinfo=UTC)

    made = RecordedEvent(7, "s", 3, event, at)

    assert made == RecordedEvent(7, "s", 3, event, at)
    assert (made.position, made.stream_id, made.version, made.event, made.recorded_at) == (
        7, "s", 3, event, at)
    assert hash(made) == hash(RecordedEvent(7, "s", 3, event, at))
    with pytest.raises(AttributeError):
        made.version = 4  # type: ignore[misc]
    assert made != RecordedEvent(7, "s", 4, event, at)


def test_a_batch_naming_a_stream_twice_is_refused() -> None:
    check_batch([("a", [registered(1)], NO_STREAM), ("b", [], 0)])
    with pytest.raises(ValueError, match="'a'"):
        check_batch([("a", [registered(1)], NO_STREAM), ("a", [registered(2)], 1)])


def test_a_refused_batch_all_stored_already_is_a_retry() -> None:
    a1, a2, b1 = registered(1), registered(2), registered(3)
    batch = [("a", [a1, a2], NO_STREAM), ("b", [b1], ANY_VERSION), ("idle", [], 5)]
    stored = {str(a1.id): ("a", 1), str(a2.id): ("a", 2), str(b1.id): ("b", 4)}

    assert refused_batch(batch, {"a": 3, "b": 4, "idle": 0}, stored) == [3, 4, 0]


def test_a_refused_batch_names_the_first_stream_at_fault() -> None:
    a1, b1 = registered(1), registered(2)
    batch = [("a", [a1], 2), ("b", [b1], NO_STREAM)]

    with pytest.raises(ConcurrencyError) as raised:
        refused_batch(batch, {"a": 2, "b": 1}, {})
    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == ("b", 0, 1)

    with pytest.raises(ConcurrencyError) as stored_elsewhere:
        refused_batch(batch, {"a": 2, "b": 0}, {str(b1.id): ("c", 1)})
    assert stored_elsewhere.value.stream_id == "b"


def test_a_refused_batch_with_no_stream_at_fault_may_be_tried_again() -> None:
    batch = [("a", [registered(1)], 2), ("b", [registered(2)], ANY_VERSION)]

    assert refused_batch(batch, {"a": 2, "b": 7}, {}) is None
    with pytest.raises(ConcurrencyError) as raised:
        refused_batch(batch, {"a": 2, "b": 7}, {}, last_try=True)
    assert raised.value.stream_id == "a"
