"""Organizer: registration rules (valid email and a name)."""

from __future__ import annotations

import pytest

from mussikon.domain.errors import IllegalTransition, InvalidEmail, MissingField
from mussikon.domain.events import OrganizerRegisteredEvent
from mussikon.domain.musician import Organizer
from tests.unit.given import ORGANIZER_ID, fields, given, organizer_registered, state


def test_registering_records_exactly_the_registered_event() -> None:
    # given a new organizer
    organizer = Organizer(ORGANIZER_ID)
    # when it registers with a payment source
    organizer.register(email="eventos@example.org", name="Casa de Teatro",
                       payment_source=" tok_visa ")
    # then one event holds what it gave
    [event] = organizer.pending
    assert isinstance(event, OrganizerRegisteredEvent)
    assert fields(event) == {"organizer_id": ORGANIZER_ID, "email": "eventos@example.org",
                             "name": "Casa de Teatro", "payment_source": "tok_visa"}
    assert organizer.payment_source == "tok_visa"


@pytest.mark.parametrize("email", ["", "eventos", "eventos@example", "a b@example.org"])
def test_an_invalid_email_is_refused_and_nothing_is_recorded(email: str) -> None:
    organizer = Organizer(ORGANIZER_ID)
    with pytest.raises(InvalidEmail, match=r"email .* is not a valid address"):
        organizer.register(email=email, name="Casa de Teatro")
    assert organizer.pending == []


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_name_is_refused(name: str) -> None:
    organizer = Organizer(ORGANIZER_ID)
    with pytest.raises(MissingField, match="name is required"):
        organizer.register(email="eventos@example.org", name=name)
    assert organizer.pending == []


def test_registering_twice_is_an_illegal_transition() -> None:
    organizer = given(Organizer, ORGANIZER_ID, organizer_registered())
    with pytest.raises(IllegalTransition, match=f"organizer {ORGANIZER_ID} is already"):
        organizer.register(email="eventos@example.org", name="Casa de Teatro")
    assert organizer.pending == []


def test_rebuilding_from_the_events_gives_the_same_state_and_version() -> None:
    organizer = Organizer(ORGANIZER_ID)
    organizer.register(email="eventos@example.org", name="Casa de Teatro", payment_source="tok")
    saved = organizer.mark_saved()
    rebuilt = Organizer.rebuild(ORGANIZER_ID, saved)
    assert rebuilt.version == organizer.version == 1
    assert state(rebuilt) == state(organizer)
