"""The bodies the HTTP API reads and writes: typed, validated, documented in /openapi.json.

Amounts are decimals, written as strings so that their scale survives (`"1200.00"`), and read
from a string or a number. Times are ISO 8601 with a time zone.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

T = TypeVar("T")

Text = Annotated[str, Field(min_length=1, max_length=500)]
Id = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
Amount = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2, allow_inf_nan=False)]


class Body(BaseModel):
    """A request body: unknown fields are refused (a typo is not silently dropped)."""

    model_config = ConfigDict(extra="forbid")


class RegisterMusician(Body):
    email: Text
    name: Text
    genres: Annotated[list[Text], Field(min_length=1, max_length=20)]
    location: Text
    musician_id: Id | None = Field(None, description="Operators and services only: the id "
                                                     "to register (default: a new one)")


class RegisterOrganizer(Body):
    email: Text
    name: Text
    payment_source: Annotated[str, Field(max_length=200)] = Field(
        "", description="The card token the booking saga charges (sandbox: tok_visa …)")
    organizer_id: Id | None = Field(None, description="Operators and services only")


class PublishGig(Body):
    title: Text
    event_date: AwareDatetime
    location: Text
    genre: Text
    budget: Amount
    organizer_id: Id | None = Field(None, description="Services only: the organizer")


class CloseGig(Body):
    reason: Text = "closed by the organizer"


class Apply(Body):
    message: Annotated[str, Field(max_length=2000)] = ""
    proposed_fee: Amount
    musician_id: Id | None = Field(None, description="Services only: the musician")


class Accept(Body):
    agreed_fee: Amount | None = Field(None, description="Default: the proposed fee")


class Reject(Body):
    reason: Text


class Sign(Body):
    party_id: Id | None = Field(None, description="Services only: the party signing")


class Written(BaseModel):
    """What a command wrote: the id of the aggregate, its stream and the stream's version
    after the write (send it back as `If-Match` to change it only if nobody did since)."""

    id: str
    stream_id: str
    version: int


class Accepted(Written):
    """An accepted application: and the contract the booking saga drafts for it."""

    contract_id: str


class PaymentOpened(Written):
    """The contract's initial payment, which the booking saga charges."""

    contract_id: str
    status: str
    amount: Decimal


class Page(BaseModel, Generic[T]):
    """One page of a list, and the cursor of the next (None: this is the last)."""

    items: list[T]
    next_cursor: str | None


class Musician(BaseModel):
    musician_id: str
    name: str
    genres: list[str]
    location: str
    registered_at: str = ""
    applications: int = 0
    contracts: int = 0


class Gig(BaseModel):
    gig_id: str
    organizer_id: str
    title: str
    event_date: str
    location: str
    genre: str
    budget: Decimal
    status: str
    version: int | None = Field(None, description="The stream's version (one gig alone)")


class Application(BaseModel):
    application_id: str
    musician_id: str
    gig_id: str
    proposed_fee: Decimal
    agreed_fee: Decimal | None = None
    status: str
    reason: str = ""
    version: int | None = Field(None, description="The stream's version (one alone)")


class Contract(BaseModel):
    contract_id: str
    application_id: str
    musician_id: str
    organizer_id: str
    gig_id: str
    amount: Decimal
    event_date: str
    status: str
    reason: str = ""
    transaction_id: str | None = None
    version: int | None = Field(None, description="The stream's version (one alone)")


class Analytics(BaseModel):
    by_kind: dict[str, int]
    by_genre: dict[str, int]
    by_location: dict[str, int]
    revenue: Decimal
    contracted: Decimal


class Event(BaseModel):
    """A stored event: where it is, its causes, and its own JSON (the wire's) as `data`."""

    position: int
    stream_id: str
    version: int
    event_type: str
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    correlation_id: str | None
    causation_id: str | None
    origin: str
    data: dict[str, Any]


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class Check(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class Health(BaseModel):
    status: str
    checks: list[Check] = []


class Problem(BaseModel):
    """An error: what is wrong, and for a refused command the rule that refused it."""

    detail: str
    rule: str | None = None
    expected: int | None = None
    actual: int | None = None
