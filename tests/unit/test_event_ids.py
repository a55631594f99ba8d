"""Event ids: time-ordered UUIDs (RFC 9562 version 7), plain GUIDs on the wire."""

from __future__ import annotations

import time
import uuid

from mussikon.domain.events import MusicianRegisteredEvent, new_event_id


def test_an_event_id_is_a_version_7_uuid_equal_to_its_parsed_text() -> None:
    for _ in range(1000):
        made = new_event_id()
        parsed = uuid.UUID(str(made))
        assert made.version == 7 and made.variant == uuid.RFC_4122
        assert parsed == made and hash(parsed) == hash(made) and parsed.bytes == made.bytes


def test_event_ids_start_with_the_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_event_id()
    time.sleep(0.002)
    second = new_event_id()
    after = time.time_ns() // 1_000_000
    assert before <= first.int >> 80 <= second.int >> 80 <= after
    assert first < second


def test_ids_are_unique_and_events_get_one_each() -> None:
    assert len({new_event_id() for _ in range(10_000)}) == 10_000
    event = MusicianRegisteredEvent(musician_id="m-1", email="a@b.c", name="A",
                                    genres=("jazz",), location="X")
    assert event.id.version == 7
