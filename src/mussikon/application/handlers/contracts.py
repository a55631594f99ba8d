"""The specification's ContractEventHandler: a contract was signed, a payment was processed.

The initial payment the specification takes here (`ProcessInitialPaymentAsync`) is taken by
the booking saga (`mussikon.application.sagas.booking`), which also retries a declined one: a single
owner charges each attempt once, and a charge that cannot be made fails the booking with
compensation instead of dead-lettering this handler.
"""

from __future__ import annotations

import contextlib

from mussikon.application import templates
from mussikon.application.handlers.dependencies import Dependencies, react, read_models_at
from mussikon.application.projections.directory import CONTRACTS, GIGS, ORGANIZERS, PROFILES
from mussikon.application.repository import Cause
from mussikon.domain.errors import IllegalTransition
from mussikon.domain.events import PAYMENT_COMPLETED, ContractSignedEvent, PaymentProcessedEvent
from mussikon.ports.documents import Document
from mussikon.ports.transport import Envelope

__all__ = ["ContractSignedEvent", "PaymentProcessedEvent", "on_contract_signed",
           "on_payment_processed"]


async def _parties(deps: Dependencies, contract_id: str) -> tuple[Document, Document, Document]:
    contract = await deps.documents.get(CONTRACTS, contract_id)
    if contract is None:
        raise RuntimeError(f"contract {contract_id} is not in the directory")
    musician = await deps.documents.get(PROFILES, contract["musician_id"])
    organizer = await deps.documents.get(ORGANIZERS, contract["organizer_id"])
    if musician is None or organizer is None:
        raise RuntimeError(f"the parties of contract {contract_id} are not in the directory")
    return contract, musician, organizer


async def on_contract_signed(envelope: Envelope, deps: Dependencies) -> None:
    """Confirm to both parties and track it (the booking saga takes the initial payment)."""

    event = envelope.event
    assert isinstance(event, ContractSignedEvent)
    await read_models_at(envelope, deps, "directory")
    contract, musician, organizer = await _parties(deps, event.contract_id)
    gig = await deps.documents.get(GIGS, event.gig_id) or {"title": event.gig_id}
    for party in (musician, organizer):
        await deps.notifier.send(templates.contract_confirmation(
            party["name"], party["email"], event.id, contract_id=event.contract_id,
            gig_title=str(gig["title"]), amount=event.amount, gig_date=event.event_date))
    react(envelope, "contracts", f"confirmation sent to {musician['email']} and "
                                 f"{organizer['email']}")
    await read_models_at(envelope, deps, "analytics")
    react(envelope, "contracts", f"contract of {contract['amount']} counted in analytics")


async def on_payment_processed(envelope: Envelope, deps: Dependencies) -> None:
    """Completed: confirm and mark the contract paid. Otherwise: tell both parties and mark the
    contract's payment failed."""

    event = envelope.event
    assert isinstance(event, PaymentProcessedEvent)
    await read_models_at(envelope, deps, "directory")
    _, musician, organizer = await _parties(deps, event.contract_id)
    cause = Cause.of(event)
    completed = event.status == PAYMENT_COMPLETED
    outcome = "received" if completed else event.status.lower()
    for party in (musician, organizer):
        await deps.notifier.send(
            templates.payment_confirmation(
                party["name"], party["email"], event.id, contract_id=event.contract_id,
                amount=event.amount, transaction_id=event.transaction_id)
            if completed else templates.payment_failed(
                party["name"], party["email"], event.id, contract_id=event.contract_id,
                amount=event.amount, reason=f"the payment was {event.status.lower()}"))
    react(envelope, "contracts", f"payment {outcome}: {musician['email']} and "
                                 f"{organizer['email']} told")
    await read_models_at(envelope, deps, "analytics")
    react(envelope, "contracts", f"payment of {event.amount} counted in analytics")
    if completed:
        await deps.marketplace.mark_contract_paid(
            event.contract_id, payment_id=event.payment_id,
            transaction_id=event.transaction_id, cause=cause)
        react(envelope, "contracts", f"contract {event.contract_id} marked paid")
        return
    # After its last retry the booking saga cancels the contract, possibly before this runs:
    # a cancelled contract has nothing left to mark.
    with contextlib.suppress(IllegalTransition):
        await deps.marketplace.mark_contract_payment_failed(
            event.contract_id, payment_id=event.payment_id,
            reason=f"payment {event.payment_id} {event.status.lower()}", cause=cause)
    react(envelope, "contracts", f"contract {event.contract_id} marked payment failed")
