"""Domain events: facts in the past tense, immutable, named as the .NET services name them.

The five events of the specification keep its names and fields exactly; the rest
follow the same style. Python attributes are snake_case; on the wire they are the
PascalCase names the .NET classes declare (see `mussikon.wire`); where the Python name
differs from the .NET one, the field's `wire` metadata names it (`gig_id` is `EventId`).

Every event carries `id`, `occurred_at` (UTC), `schema_version` (wire `Version`) and
`event_type` (the class name, never empty), plus metadata that travels beside the
JSON body rather than in it: `correlation_id` and `causation_id`. Its aggregate id
is one of its own fields, named by `aggregate_field`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import ClassVar
from uuid import UUID, SafeUUID

from mussikon.domain.instant import utc_now

_V7 = (0x7 << 76) | (0b10 << 62)
_RAND_B = (1 << 62) - 1
_new = object.__new__
_set = object.__setattr__
_urandom = os.urandom
_time_ns = time.time_ns


def wire_name(name: str) -> dict[str, str]:
    """Field metadata naming the .NET property when it is not the PascalCase of the field."""
    return {"wire": name}


def new_event_id() -> UUID:
    """A fresh event id: a time-ordered UUID (RFC 9562 version 7: the Unix time in
    milliseconds, then 74 random bits).

    Ids made one after the other sort together, so a store's unique index on them grows at
    its end (a few pages written per commit) instead of at random places (one page per
    event). Still a plain GUID on the wire. Built without `UUID.__init__`'s checks (the value
    is in range by construction), which makes it cheaper than `uuid4`."""
    r = int.from_bytes(_urandom(10))
    u = _new(UUID)
    _set(u, "int", ((_time_ns() // 1_000_000) << 80) | _V7 | (((r >> 62) & 0xFFF) << 64)
         | (r & _RAND_B))
    _set(u, "is_safe", SafeUUID.unknown)
    return u


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    """Base of every event. Subclasses add their own fields and name their aggregate."""

    aggregate_type: ClassVar[str] = ""
    aggregate_field: ClassVar[str] = ""

    id: UUID = field(default_factory=new_event_id)
    occurred_at: datetime = field(default_factory=utc_now)
    schema_version: int = field(default=1, metadata=wire_name("Version"))
    correlation_id: UUID | None = field(default=None, compare=False)
    causation_id: UUID | None = field(default=None, compare=False)

    @property
    def event_type(self) -> str:
        """The wire name: the class name, as .NET's `typeof(T).Name` gives it."""
        return type(self).__name__

    @property
    def aggregate_id(self) -> str:
        """The id of the aggregate this event belongs to."""
        return str(getattr(self, self.aggregate_field))

    @property
    def stream_id(self) -> str:
        """The stream this event is stored in: `<aggregate type>-<aggregate id>`."""
        return f"{self.aggregate_type}-{self.aggregate_id}"


# --- musicians and organizers ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MusicianRegisteredEvent(DomainEvent):
    """A musician joined MussikOn (specification event)."""

    aggregate_type: ClassVar[str] = "musician"
    aggregate_field: ClassVar[str] = "musician_id"

    musician_id: str
    email: str
    name: str
    genres: tuple[str, ...]
    location: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrganizerRegisteredEvent(DomainEvent):
    """An organizer joined MussikOn, with the address notifications go to."""

    aggregate_type: ClassVar[str] = "organizer"
    aggregate_field: ClassVar[str] = "organizer_id"

    schema_version: int = field(default=2, metadata=wire_name("Version"))
    """Version 2 added `PaymentSource`; version 1 documents are upcast on read (wire.py)."""
    organizer_id: str
    email: str
    name: str
    payment_source: str
    """The gateway's token for the organizer's card (never a card number)."""


# --- gigs (the specification's "Event") ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EventCreatedEvent(DomainEvent):
    """An organizer published a gig (specification event; `EventId` is the gig's id)."""

    aggregate_type: ClassVar[str] = "gig"
    aggregate_field: ClassVar[str] = "gig_id"

    gig_id: str = field(metadata=wire_name("EventId"))
    organizer_id: str
    title: str
    event_date: datetime
    location: str
    genre: str
    budget: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class EventClosedEvent(DomainEvent):
    """A gig stopped taking applications (booked, or closed by its organizer)."""

    aggregate_type: ClassVar[str] = "gig"
    aggregate_field: ClassVar[str] = "gig_id"

    gig_id: str = field(metadata=wire_name("EventId"))
    reason: str


# --- applications -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MusicianApplicationSubmittedEvent(DomainEvent):
    """A musician applied to play a gig (specification event)."""

    aggregate_type: ClassVar[str] = "application"
    aggregate_field: ClassVar[str] = "application_id"

    application_id: str
    musician_id: str
    gig_id: str = field(metadata=wire_name("EventId"))
    message: str
    proposed_fee: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationAcceptedEvent(DomainEvent):
    """The organizer accepted an application at an agreed fee."""

    aggregate_type: ClassVar[str] = "application"
    aggregate_field: ClassVar[str] = "application_id"

    application_id: str
    musician_id: str
    gig_id: str = field(metadata=wire_name("EventId"))
    organizer_id: str
    agreed_fee: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationRejectedEvent(DomainEvent):
    """An application was turned down, with the reason."""

    aggregate_type: ClassVar[str] = "application"
    aggregate_field: ClassVar[str] = "application_id"

    application_id: str
    musician_id: str
    gig_id: str = field(metadata=wire_name("EventId"))
    reason: str


# --- contracts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractDraftedEvent(DomainEvent):
    """A contract was drawn up for an accepted application, at the agreed amount."""

    aggregate_type: ClassVar[str] = "contract"
    aggregate_field: ClassVar[str] = "contract_id"

    contract_id: str
    application_id: str
    musician_id: str
    organizer_id: str
    gig_id: str = field(metadata=wire_name("EventId"))
    amount: Decimal
    event_date: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractPartySignedEvent(DomainEvent):
    """One party (`Role` is `Musician` or `Organizer`) signed the contract."""

    aggregate_type: ClassVar[str] = "contract"
    aggregate_field: ClassVar[str] = "contract_id"

    contract_id: str
    party_id: str
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractSignedEvent(DomainEvent):
    """Both parties signed: the contract is in force (specification event)."""

    aggregate_type: ClassVar[str] = "contract"
    aggregate_field: ClassVar[str] = "contract_id"

    contract_id: str
    musician_id: str
    gig_id: str = field(metadata=wire_name("EventId"))
    amount: Decimal
    event_date: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractPaidEvent(DomainEvent):
    """The contract's payment went through."""

    aggregate_type: ClassVar[str] = "contract"
    aggregate_field: ClassVar[str] = "contract_id"

    contract_id: str
    payment_id: str
    transaction_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractPaymentFailedEvent(DomainEvent):
    """A payment for the contract was declined or failed; the contract awaits another."""

    aggregate_type: ClassVar[str] = "contract"
    aggregate_field: ClassVar[str] = "contract_id"

    contract_id: str
    payment_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractCancelledEvent(DomainEvent):
    """The contract was cancelled, with the reason; the musician's date is free again."""

    aggregate_type: ClassVar[str] = "contract"
    aggregate_field: ClassVar[str] = "contract_id"

    contract_id: str
    reason: str


# --- payments -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRequestedEvent(DomainEvent):
    """A payment for a signed contract was asked of the gateway."""

    aggregate_type: ClassVar[str] = "payment"
    aggregate_field: ClassVar[str] = "payment_id"

    payment_id: str
    contract_id: str
    amount: Decimal
    idempotency_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentProcessedEvent(DomainEvent):
    """The gateway answered: `Status` is `Completed`, `Declined` or `Failed` (seed event)."""

    aggregate_type: ClassVar[str] = "payment"
    aggregate_field: ClassVar[str] = "payment_id"

    payment_id: str
    contract_id: str
    amount: Decimal
    status: str
    transaction_id: str


PAYMENT_COMPLETED = "Completed"
PAYMENT_DECLINED = "Declined"
PAYMENT_FAILED = "Failed"

ALL_EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    MusicianRegisteredEvent,
    OrganizerRegisteredEvent,
    EventCreatedEvent,
    EventClosedEvent,
    MusicianApplicationSubmittedEvent,
    ApplicationAcceptedEvent,
    ApplicationRejectedEvent,
    ContractDraftedEvent,
    ContractPartySignedEvent,
    ContractSignedEvent,
    ContractPaidEvent,
    ContractPaymentFailedEvent,
    ContractCancelledEvent,
    PaymentRequestedEvent,
    PaymentProcessedEvent,
)
"""Every event the domain knows, in one explicit list: the registry is built from it."""

SPECIFICATION_EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    MusicianRegisteredEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    ContractSignedEvent,
    PaymentProcessedEvent,
)
"""The five events of the specification, which the RabbitMQ topology routes by name."""
