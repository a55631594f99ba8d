"""Business rules shared by several aggregates, each a named check that raises a named error."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from mussikon.domain.errors import (
    AmountNotPositive,
    GigDateNotInFuture,
    InvalidEmail,
    MissingField,
    NoGenres,
)

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is the mailer's job.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def require_text(name: str, value: str) -> str:
    """A required text field: not blank. Returns it stripped."""
    if not isinstance(value, str) or not value.strip():
        raise MissingField(f"{name} is required and must not be blank")
    return value.strip()


def require_valid_email(email: str) -> str:
    """An email address of the form name@domain.tld."""
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise InvalidEmail(f"email {email!r} is not a valid address")
    return email.strip()


def require_genres(genres: object) -> tuple[str, ...]:
    """At least one genre, each non-blank; duplicates dropped, order kept."""
    if isinstance(genres, str) or not isinstance(genres, list | tuple):
        raise NoGenres("genres must be a list of genre names")
    cleaned = tuple(dict.fromkeys(g.strip() for g in genres if isinstance(g, str) and g.strip()))
    if not cleaned:
        raise NoGenres("a musician needs at least one genre")
    return cleaned


def require_positive_amount(name: str, value: object) -> Decimal:
    """A money amount: a finite Decimal above zero (floats are refused: they are not exact)."""
    if isinstance(value, float | bool) or not isinstance(value, Decimal | int | str):
        raise AmountNotPositive(f"{name} must be a decimal amount, got {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise AmountNotPositive(f"{name} {value!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise AmountNotPositive(f"{name} must be positive, got {value}")
    return amount


def require_future(name: str, when: datetime, now: datetime) -> datetime:
    """A date strictly after `now`; both must be aware."""
    if when.tzinfo is None:
        raise GigDateNotInFuture(f"{name} {when.isoformat()} has no time zone")
    if when <= now:
        raise GigDateNotInFuture(f"{name} {when.isoformat()} is not in the future")
    return when
