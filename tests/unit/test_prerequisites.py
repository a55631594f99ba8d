"""What each event presupposes, and that our own history always has it first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.domain.events import (
    ContractSignedEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    PaymentProcessedEvent,
)
from mussikon.domain.prerequisites import prerequisites
from tests.integration.rabbitmq_kit import sample_event


def test_an_application_presupposes_its_gig_and_its_musician() -> None:
    event = sample_event(MusicianApplicationSubmittedEvent, gig_id="g-1", musician_id="m-1")
    assert [(p.stream_id, p.event_type, p.what, p.opens_stream)
            for p in prerequisites(event)] == [
        ("gig-g-1", "EventCreatedEvent", "gig g-1 (EventCreatedEvent)", True),
        ("musician-m-1", "MusicianRegisteredEvent", "musician m-1 (MusicianRegisteredEvent)",
         True)]


def test_a_signature_presupposes_the_draft_and_a_payment_the_signature() -> None:
    [draft] = prerequisites(sample_event(ContractSignedEvent, contract_id="c-1"))
    assert (draft.stream_id, draft.event_type, draft.opens_stream) == \
        ("contract-c-1", "ContractDraftedEvent", True)
    [signed] = prerequisites(sample_event(PaymentProcessedEvent, contract_id="c-1"))
    assert (signed.stream_id, signed.event_type, signed.opens_stream) == \
        ("contract-c-1", "ContractSignedEvent", False)
    assert signed.what == "signed contract c-1 (ContractSignedEvent)"


def test_registrations_and_gigs_presuppose_nothing() -> None:
    assert prerequisites(sample_event(MusicianRegisteredEvent)) == ()
    assert prerequisites(sample_event(EventCreatedEvent)) == ()


async def test_our_own_history_has_what_every_event_presupposes_before_it() -> None:
    app = await open_app(Settings(store_url="memory://"))
    await app.start()
    try:
        market = app.marketplace
        organizer = await market.register_organizer(
            email="booking@casadeteatro.example", name="Casa de Teatro",
            payment_source="tok_visa")
        musician = await market.register_musician(
            email="ana@musicos.example", name="Ana Pérez", genres=["Jazz"],
            location="Santo Domingo")
        gig = await market.create_gig(
            organizer_id=organizer, title="Noche de Jazz", location="Santo Domingo",
            event_date=datetime.now(UTC) + timedelta(days=30), genre="Jazz",
            budget=Decimal("1500.00"))
        application = await market.submit_application(
            musician_id=musician, gig_id=gig, message="Trío de jazz",
            proposed_fee=Decimal("1200.00"))
        contract = await market.accept_application(application, organizer_id=organizer)
        await app.settle()
        await market.sign_contract(contract, musician)
        await market.sign_contract(contract, organizer)
        await app.settle()
        history = await app.store.read_all()
    finally:
        await app.close()
    seen: set[tuple[str, str]] = set()
    checked = 0
    for record in history:
        for needed in prerequisites(record.event):
            assert (needed.stream_id, needed.event_type) in seen, (record.event, needed)
            checked += 1
        seen.add((record.stream_id, record.event.event_type))
    kinds = {r.event.event_type for r in history}
    assert {"ContractPaidEvent", "PaymentProcessedEvent", "ContractSignedEvent"} <= kinds
    assert checked >= 6
