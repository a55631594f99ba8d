"""Schema evolution: an event stored by old code at version 1 is read as the current version."""

from __future__ import annotations

from pathlib import Path

import pytest

from mussikon.domain.events import OrganizerRegisteredEvent
from mussikon.domain.musician import Organizer
from tests.contract.store_adapters import ADAPTERS, open_stores

# OrganizerRegisteredEvent as the code before version 2 wrote it: no PaymentSource.
VERSION_1 = (
    '{"OrganizerId":"org-1","Email":"eventos@example.org","Name":"Casa de Teatro",'
    '"Id":"0b6f1d2e-8c3a-4f5b-a1d9-7e2c4b6a8f01","OccurredAt":"2025-03-01T10:00:00Z",'
    '"EventType":"OrganizerRegisteredEvent","Version":1}'
)


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_version_1_event_in_the_store_is_read_as_version_2(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async with open_stores(kind, tmp_path, request) as stores:
        await stores.insert_raw("organizer-org-1", 1, "OrganizerRegisteredEvent", VERSION_1)
        await stores.settle()
        [record] = await stores.events.read_all()
        event = record.event
        assert isinstance(event, OrganizerRegisteredEvent)
        assert event.schema_version == 2
        assert event.payment_source == ""
        assert event.name == "Casa de Teatro"
        organizer = Organizer.rebuild("org-1", [event])
        assert organizer.email == "eventos@example.org"
        assert OrganizerRegisteredEvent(organizer_id="o", email="a@b.io", name="N",
                                        payment_source="tok_visa").schema_version == 2
