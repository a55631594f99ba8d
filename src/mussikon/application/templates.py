"""The notifications MussikOn sends, one function per kind, built from the facts of the event
that causes them.

Each key is "<kind>:<event id>:<recipient>", so one event notifies each person once however
often it is delivered. Names and titles come from users: inside a body they are folded
onto one line (a `Notification` folds its subject and recipient name itself).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from mussikon.ports.notifier import Notification

KINDS = (
    "welcome", "new-gig", "application-received", "application-accepted",
    "application-rejected", "contract-confirmation", "contract-cancelled",
    "payment-confirmation", "payment-failed",
)
"""Every kind the templates build."""


def _line(text: str) -> str:
    return " ".join(text.split())


def _money(amount: Decimal, currency: str = "USD") -> str:
    return f"{amount:,.2f} {currency}"


def _day(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _make(kind: str, event_id: UUID | str, recipient: str, recipient_name: str, subject: str,
          body: str, about: str, at: datetime | None) -> Notification:
    return Notification(
        key=f"{kind}:{event_id}:{recipient.strip().lower()}", kind=kind,
        recipient=recipient.strip(), recipient_name=recipient_name, subject=subject,
        body=body, about=about,
        created_at=at or datetime.now(UTC),
    )


def welcome(musician_name: str, email: str, event_id: UUID | str, *, musician_id: str = "",
            at: datetime | None = None) -> Notification:
    """Welcome a newly registered musician."""
    return _make("welcome", event_id, email, musician_name, "Welcome to MussikOn",
                 f"Hi {_line(musician_name)},\n\nyour musician profile is ready. We will tell"
                 " you about gigs that match your genres and location.\n\nMussikOn",
                 musician_id, at)


def new_gig(musician_name: str, email: str, event_id: UUID | str, *, gig_id: str, title: str,
            genre: str, location: str, gig_date: datetime, budget: Decimal,
            at: datetime | None = None) -> Notification:
    """Tell a matching musician about a new gig."""
    return _make("new-gig", event_id, email, musician_name, f"New {genre} gig: {title}",
                 f"Hi {_line(musician_name)},\n\na new gig matches your profile:\n\n"
                 f"  {_line(title)}\n  {genre} in {location}, {_day(gig_date)}\n"
                 f"  Budget: {_money(budget)}\n\nApply with gig id {gig_id}.\n\nMussikOn",
                 gig_id, at)


def application_received(organizer_name: str, email: str, event_id: UUID | str, *,
                         application_id: str, gig_title: str, musician_name: str,
                         proposed_fee: Decimal, message: str,
                         at: datetime | None = None) -> Notification:
    """Tell an organizer that a musician applied to their gig."""
    return _make("application-received", event_id, email, organizer_name,
                 f"New application for {gig_title}",
                 f"Hi {_line(organizer_name)},\n\n{_line(musician_name)} applied to play"
                 f" {_line(gig_title)} for {_money(proposed_fee)}.\n\nTheir message:\n"
                 f"{message}\n\nApplication id: {application_id}\n\nMussikOn",
                 application_id, at)


def application_accepted(musician_name: str, email: str, event_id: UUID | str, *,
                         application_id: str, gig_title: str, agreed_fee: Decimal,
                         at: datetime | None = None) -> Notification:
    """Tell a musician that the organizer accepted their application."""
    return _make("application-accepted", event_id, email, musician_name,
                 f"You got the gig: {gig_title}",
                 f"Hi {_line(musician_name)},\n\nyour application to play {_line(gig_title)}"
                 f" was accepted for {_money(agreed_fee)}. A contract follows.\n\nMussikOn",
                 application_id, at)


def application_rejected(musician_name: str, email: str, event_id: UUID | str, *,
                         application_id: str, gig_title: str, reason: str,
                         at: datetime | None = None) -> Notification:
    """Tell a musician that their application was not accepted."""
    return _make("application-rejected", event_id, email, musician_name,
                 f"Your application for {gig_title}",
                 f"Hi {_line(musician_name)},\n\nyour application to play {_line(gig_title)}"
                 f" was not accepted. Reason: {reason or 'none given'}.\n\nMussikOn",
                 application_id, at)


def contract_confirmation(party_name: str, email: str, event_id: UUID | str, *,
                          contract_id: str, gig_title: str, amount: Decimal,
                          gig_date: datetime, at: datetime | None = None) -> Notification:
    """Confirm a signed contract to one of its parties."""
    return _make("contract-confirmation", event_id, email, party_name,
                 f"Contract signed: {gig_title}",
                 f"Hi {_line(party_name)},\n\nthe contract for {_line(gig_title)} on"
                 f" {_day(gig_date)} is signed by both parties. Amount: {_money(amount)}.\n\n"
                 f"Contract id: {contract_id}\n\nMussikOn",
                 contract_id, at)


def contract_cancelled(party_name: str, email: str, event_id: UUID | str, *, contract_id: str,
                       gig_title: str, reason: str, at: datetime | None = None) -> Notification:
    """Tell a party that a contract was cancelled."""
    return _make("contract-cancelled", event_id, email, party_name,
                 f"Contract cancelled: {gig_title}",
                 f"Hi {_line(party_name)},\n\nthe contract for {_line(gig_title)} was"
                 f" cancelled. Reason: {reason or 'none given'}.\n\nContract id: {contract_id}"
                 "\n\nMussikOn",
                 contract_id, at)


def payment_confirmation(party_name: str, email: str, event_id: UUID | str, *,
                         contract_id: str, amount: Decimal, transaction_id: str,
                         at: datetime | None = None) -> Notification:
    """Confirm to a party that a contract's payment went through."""
    return _make("payment-confirmation", event_id, email, party_name,
                 f"Payment of {_money(amount)} completed",
                 f"Hi {_line(party_name)},\n\nthe payment of {_money(amount)} for contract"
                 f" {contract_id} is complete.\n\nTransaction id: {transaction_id}\n\nMussikOn",
                 contract_id, at)


def payment_failed(party_name: str, email: str, event_id: UUID | str, *, contract_id: str,
                   amount: Decimal, reason: str, at: datetime | None = None) -> Notification:
    """Tell a party that a contract's payment did not go through."""
    return _make("payment-failed", event_id, email, party_name,
                 f"Payment of {_money(amount)} failed",
                 f"Hi {_line(party_name)},\n\nthe payment of {_money(amount)} for contract"
                 f" {contract_id} did not go through: {reason or 'no reason given'}.\n"
                 "The organizer can pay again with another card.\n\nMussikOn",
                 contract_id, at)
