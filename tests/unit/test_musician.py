"""Musician: registration rules (valid email, at least one genre, name and location)."""

from __future__ import annotations

from typing import Any

import pytest

from mussikon.domain.errors import IllegalTransition, InvalidEmail, MissingField, NoGenres
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.domain.musician import Musician
from tests.unit.given import MUSICIAN_ID, fields, given, musician_registered, state

VALID: dict[str, Any] = {"email": "ana.perez@example.org", "name": "Ana Pérez",
                         "genres": ["Jazz", "Salsa"], "location": "Santo Domingo"}


def test_registering_records_exactly_the_registered_event() -> None:
    # given a new musician
    musician = Musician(MUSICIAN_ID)
    # when she registers
    musician.register(**VALID)
    # then one event holds what she gave
    [event] = musician.pending
    assert isinstance(event, MusicianRegisteredEvent)
    assert fields(event) == {"musician_id": MUSICIAN_ID, "email": "ana.perez@example.org",
                             "name": "Ana Pérez", "genres": ("Jazz", "Salsa"),
                             "location": "Santo Domingo"}
    assert event.event_type == "MusicianRegisteredEvent"
    assert (musician.email, musician.genres) == ("ana.perez@example.org", ("Jazz", "Salsa"))


def test_texts_are_stored_trimmed_and_repeated_genres_once() -> None:
    musician = Musician(MUSICIAN_ID)
    musician.register(email=" ana@example.org ", name=" Ana ", genres=("Jazz", " Jazz", "Son"),
                      location=" Santiago ")
    [event] = musician.pending
    assert isinstance(event, MusicianRegisteredEvent)
    assert (event.email, event.name, event.location) == ("ana@example.org", "Ana", "Santiago")
    assert event.genres == ("Jazz", "Son")


@pytest.mark.parametrize("email", ["", "ana", "ana@example", "ana perez@example.org",
                                   "@example.org", "ana@@example.org", "ana@example.org x"])
def test_an_invalid_email_is_refused_and_nothing_is_recorded(email: str) -> None:
    musician = Musician(MUSICIAN_ID)
    with pytest.raises(InvalidEmail, match=r"email .* is not a valid address"):
        musician.register(**{**VALID, "email": email})
    assert musician.pending == []
    assert not musician.exists


@pytest.mark.parametrize("genres", [[], (), ["", "  "], "Jazz", None])
def test_a_musician_without_a_genre_is_refused(genres: Any) -> None:
    musician = Musician(MUSICIAN_ID)
    with pytest.raises(NoGenres, match="genre"):
        musician.register(**{**VALID, "genres": genres})
    assert musician.pending == []


@pytest.mark.parametrize(("field", "value"), [("name", ""), ("name", "   "),
                                              ("location", ""), ("location", "\t")])
def test_a_blank_required_text_is_refused_naming_the_field(field: str, value: str) -> None:
    musician = Musician(MUSICIAN_ID)
    with pytest.raises(MissingField, match=f"{field} is required"):
        musician.register(**{**VALID, field: value})
    assert musician.pending == []


def test_a_blank_musician_id_is_refused() -> None:
    musician = Musician(" ")
    with pytest.raises(MissingField, match="musician id is required"):
        musician.register(**VALID)
    assert musician.pending == []


def test_registering_twice_is_an_illegal_transition() -> None:
    # given a registered musician
    musician = given(Musician, MUSICIAN_ID, musician_registered())
    # when she registers again, then it is refused and nothing is recorded
    with pytest.raises(IllegalTransition, match=f"musician {MUSICIAN_ID} is already registered"):
        musician.register(**VALID)
    assert musician.pending == []


def test_registering_twice_before_saving_is_refused_too() -> None:
    musician = Musician(MUSICIAN_ID)
    musician.register(**VALID)
    with pytest.raises(IllegalTransition, match="already registered"):
        musician.register(**VALID)
    assert len(musician.pending) == 1


def test_rebuilding_from_the_events_gives_the_same_state_and_version() -> None:
    musician = Musician(MUSICIAN_ID)
    musician.register(**VALID)
    saved = musician.mark_saved()
    rebuilt = Musician.rebuild(MUSICIAN_ID, saved)
    assert rebuilt.version == musician.version == 1
    assert state(rebuilt) == state(musician)
