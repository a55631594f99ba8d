"""The booking saga: accepted → day reserved → contract drafted → signed (deadline) → initial
payment (retried) → paid; each step's failure and the compensation that undoes the rest."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

from mussikon.application.repository import Cause
from mussikon.application.sagas.booking import BookingPolicy, initial_payment_id, payment_id_for
from mussikon.application.sagas.state import SagaState, SagaStatus
from mussikon.domain.application import Application, ApplicationStatus
from mussikon.domain.contract import Contract, ContractStatus, contract_id_for
from mussikon.domain.events import ApplicationAcceptedEvent, ContractSignedEvent
from mussikon.domain.payment import Payment, PaymentStatus
from mussikon.ports.transport import Envelope
from tests.unit.sagas_kit import MUSICIAN, ORGANIZER, SagaWorld

UNDONE = ["draft-contract", "reserve-date", "accepted"]


async def contract_of(world: SagaWorld, contract_id: str) -> Contract:
    return await world.repository.load(Contract, contract_id)


async def application_of(world: SagaWorld, application_id: str) -> Application:
    return await world.repository.load(Application, application_id)


async def test_an_accepted_application_gets_its_day_and_a_contract_then_waits_for_signatures(
        ) -> None:
    world = SagaWorld()
    _, musician, _, contract_id = await world.accepted()
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.status is SagaStatus.WAITING
    assert saga.completed == ["accepted", "reserve-date", "draft-contract"]
    assert saga.current_step == "signatures"
    assert (await contract_of(world, contract_id)).status is ContractStatus.DRAFTED
    contract = await contract_of(world, contract_id)
    assert contract.event_date is not None
    assert await world.days.holder(musician, contract.event_date) == contract_id
    [deadline] = saga.timeouts.values()
    assert deadline.due_at == world.clock.now() + timedelta(hours=48)


async def test_signed_by_both_the_initial_payment_is_taken_once_and_the_contract_is_paid(
        ) -> None:
    world = SagaWorld()
    organizer, musician, _, contract_id = await world.accepted()
    await world.sign(contract_id, musician, organizer)
    [signed] = await world.store.read_by_type(ContractSignedEvent.__name__)
    await world.redeliver(Envelope(str(signed.event.id), signed.event))  # a redelivery
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.status is SagaStatus.COMPLETED
    assert saga.timeouts == {}
    assert list(world.gateway.charges) == [f"payment-{initial_payment_id(contract_id)}"]
    [(request, _)] = world.gateway.charges.values()
    assert (request.amount, request.source) == (Decimal("1200.50"), "tok_visa")
    contract = await contract_of(world, contract_id)
    assert contract.status is ContractStatus.PAID
    assert contract.payment_id == initial_payment_id(contract_id)
    assert await world.runtime.scheduler.pending() == []


async def test_unsigned_at_the_deadline_the_contract_is_cancelled_both_told_the_day_freed(
        ) -> None:
    world = SagaWorld()
    _, musician, application_id, contract_id = await world.accepted()
    await world.sign(contract_id, musician)  # the organizer never signs
    assert await world.later(timedelta(hours=47)) == 0
    assert (await world.saga(f"booking-{contract_id}")).status is SagaStatus.WAITING
    assert await world.later(timedelta(hours=1)) == 1
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.failed_step == "signatures"
    assert saga.reason == "not signed by both parties within 48 h (missing: the organizer)"
    assert saga.compensated == UNDONE
    contract = await contract_of(world, contract_id)
    assert (contract.status, contract.reason) == (ContractStatus.CANCELLED, saga.reason)
    assert contract.event_date is not None
    assert await world.days.holder(musician, contract.event_date) is None
    application = await application_of(world, application_id)
    assert (application.status, application.reason) == (ApplicationStatus.REJECTED, saga.reason)
    assert world.notifier.kinds_to(ORGANIZER).count("contract-cancelled") == 1
    # The cancellation notice told the musician; no second notice about the application.
    assert world.notifier.kinds_to(MUSICIAN)[-1:] == ["contract-cancelled"]
    assert world.gateway.calls == 0


async def test_signed_just_before_the_deadline_fires_the_booking_goes_on() -> None:
    world = SagaWorld()
    organizer, musician, _, contract_id = await world.accepted()
    await world.marketplace.sign_contract(contract_id, musician)
    await world.marketplace.sign_contract(contract_id, organizer)  # not delivered yet
    await world.later(timedelta(hours=48))
    assert (await world.saga(f"booking-{contract_id}")).status is SagaStatus.COMPLETED
    assert (await contract_of(world, contract_id)).status is ContractStatus.PAID


async def test_the_signature_deadline_is_configurable() -> None:
    world = SagaWorld(BookingPolicy(signature_timeout=timedelta(minutes=30)))
    _, _, _, contract_id = await world.accepted()
    assert await world.later(timedelta(minutes=30)) == 1
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.reason == ("not signed by both parties within 0.5 h "
                           "(missing: the musician and the organizer)")


async def test_a_contract_cancelled_while_waiting_for_signatures_ends_the_booking() -> None:
    world = SagaWorld()
    _, _, application_id, contract_id = await world.accepted()
    await world.marketplace.cancel_contract(contract_id, "the gig was called off")
    await world.deliver()
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.reason == "the contract was cancelled: the gig was called off"
    assert saga.timeouts == {}
    assert await world.runtime.scheduler.pending() == []
    assert (await contract_of(world, contract_id)).reason == "the gig was called off"
    assert (await application_of(world, application_id)).status is ApplicationStatus.REJECTED


async def declined_then(world: SagaWorld, *answers: str) -> tuple[str, str, str]:
    world.gateway.script.extend(answers)  # type: ignore[arg-type]
    organizer, musician, application_id, contract_id = await world.accepted()
    await world.sign(contract_id, musician, organizer)
    return musician, application_id, contract_id


async def test_a_declined_payment_is_retried_after_the_delay_with_a_new_payment_id() -> None:
    world = SagaWorld(BookingPolicy(payment_retries=2, payment_retry_delay=timedelta(hours=1)))
    _, _, contract_id = await declined_then(world, "Declined", "Completed")
    saga = await world.saga(f"booking-{contract_id}")
    assert (saga.status, saga.current_step) == (SagaStatus.WAITING, "initial-payment")
    assert await world.later(timedelta(minutes=59)) == 0
    assert len(world.gateway.charges) == 1
    assert await world.later(timedelta(minutes=1)) == 1
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.status is SagaStatus.COMPLETED
    assert list(world.gateway.charges) == [f"payment-{payment_id_for(contract_id, n)}"
                                           for n in (1, 2)]
    contract = await contract_of(world, contract_id)
    assert (contract.status, contract.payment_id) == (ContractStatus.PAID,
                                                      payment_id_for(contract_id, 2))
    first = await world.repository.load(Payment, initial_payment_id(contract_id))
    assert first.status is PaymentStatus.DECLINED


async def test_declined_after_every_retry_the_contract_is_cancelled_and_the_day_released(
        ) -> None:
    world = SagaWorld(BookingPolicy(payment_retries=2, payment_retry_delay=timedelta(hours=1)))
    musician, application_id, contract_id = await declined_then(
        world, "Declined", "Declined", "Declined")
    for _ in range(2):
        assert await world.later(timedelta(hours=1)) == 1
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.failed_step == "initial-payment"
    assert saga.reason.startswith("the payment was declined 3 times; last: payment 3 of "
                                  "1200.50: Declined")
    assert saga.compensated == UNDONE
    assert len(world.gateway.charges) == 3  # three attempts, three keys, nothing charged twice
    contract = await contract_of(world, contract_id)
    assert contract.status is ContractStatus.CANCELLED
    assert contract.event_date is not None
    assert await world.days.holder(musician, contract.event_date) is None
    assert (await application_of(world, application_id)).status is ApplicationStatus.REJECTED
    for party in (MUSICIAN, ORGANIZER):
        assert world.notifier.kinds_to(party).count("contract-cancelled") == 1
    assert await world.later(timedelta(hours=5)) == 0  # nothing left scheduled


async def test_a_card_that_cannot_be_charged_fails_the_booking_at_once() -> None:
    world = SagaWorld()
    organizer, musician, _, contract_id = await world.accepted(source="")
    await world.sign(contract_id, musician, organizer)
    saga = await world.saga(f"booking-{contract_id}")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.reason == "the organizer's card cannot be charged: no card token"
    assert (await contract_of(world, contract_id)).status is ContractStatus.CANCELLED


async def test_a_booking_for_a_gig_that_does_not_exist_fails_at_its_first_step() -> None:
    world = SagaWorld()
    accepted = ApplicationAcceptedEvent(application_id="a-1", musician_id="m-1",
                                        gig_id="no-such-gig", organizer_id="o-1",
                                        agreed_fee=Decimal(100))
    await world.booking.handle_event(Envelope(str(accepted.id), accepted))
    saga = await world.saga(f"booking-{contract_id_for('a-1')}")
    assert (saga.status, saga.failed_step) == (SagaStatus.COMPENSATED, "accepted")
    assert saga.reason == "gig no-such-gig does not exist"
    assert saga.compensated == []


async def test_a_contract_that_cannot_be_drafted_releases_the_day_and_keeps_the_rejection(
        ) -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig = await world.gig(organizer)
    application_id = await world.apply(musician, gig)
    await world.deliver()
    await world.marketplace.accept_application(application_id, organizer_id=organizer)
    # Rejected (by someone else) before the saga drafts the contract.
    await world.marketplace.reject_application(application_id, "changed my mind", Cause.new())
    await world.deliver()
    contract_id = contract_id_for(application_id)
    saga = await world.saga(f"booking-{contract_id}")
    assert (saga.status, saga.failed_step) == (SagaStatus.COMPENSATED, "draft-contract")
    assert saga.compensated == ["reserve-date", "accepted"]
    application = await application_of(world, application_id)
    assert application.reason == "changed my mind"  # the first rejection stands
    assert not (await contract_of(world, contract_id)).exists
    [notice] = [n for n in world.notifier.outbox if n.kind == "application-rejected"]
    assert notice.recipient == MUSICIAN
    assert "changed my mind" in notice.body


async def test_two_accepted_applications_for_one_day_give_one_contract_and_one_rejection(
        ) -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gigs = [await world.gig(organizer, title=title) for title in ("Jazz night", "Bolero night")]
    applications = [await world.apply(musician, gig) for gig in gigs]
    await world.deliver()
    for application_id in applications:
        await world.marketplace.accept_application(application_id, organizer_id=organizer)
    accepted = await world.store.read_by_type(ApplicationAcceptedEvent.__name__)
    write, lost = world.days.days.write, []

    async def counting_write(*args: Any) -> bool:
        written = await write(*args)
        lost.extend([] if written else [args[0]])
        return written

    world.days.days.write = counting_write  # type: ignore[method-assign,assignment]
    # Both bookings race for the musician's day.
    await asyncio.gather(*(world.booking.handle_event(Envelope(str(r.event.id), r.event))
                           for r in accepted))
    await world.deliver()
    sagas: list[SagaState] = [await world.saga(f"booking-{contract_id_for(a)}")
                              for a in applications]
    assert {s.status for s in sagas} == {SagaStatus.WAITING, SagaStatus.COMPENSATED}
    winner, loser = sorted(sagas, key=lambda s: s.status is SagaStatus.COMPENSATED)
    assert loser.failed_step == "reserve-date"
    assert loser.reason == (f"Ana is already booked on {winner.data['gig_date'][:10]} "
                            f"(contract {winner.instance})")
    assert loser.compensated == ["accepted"]
    assert (await contract_of(world, winner.instance)).exists
    assert not (await contract_of(world, loser.instance)).exists
    rejected = await application_of(world, loser.data["application_id"])
    assert (rejected.status, rejected.reason) == (ApplicationStatus.REJECTED, loser.reason)
    assert world.notifier.kinds_to(MUSICIAN).count("application-rejected") == 1
    assert lost  # both read the day free; one write lost, and that booking read who won


async def test_a_contract_cancelled_between_the_charge_and_marking_it_paid_asks_for_a_refund(
        ) -> None:
    world = SagaWorld()
    organizer, musician, _, contract_id = await world.accepted()
    marketplace = world.marketplace
    mark_paid = marketplace.mark_contract_paid

    async def cancelled_first(contract: str, **kwargs: Any) -> None:
        await marketplace.cancel_contract(contract, "called off by the organizer")
        await mark_paid(contract, **kwargs)

    marketplace.mark_contract_paid = cancelled_first  # type: ignore[method-assign,assignment]
    await world.sign(contract_id, musician, organizer)
    saga = await world.saga(f"booking-{contract_id}")
    assert (saga.status, saga.failed_step) == (SagaStatus.COMPENSATED, "contract-paid")
    assert saga.reason.endswith(f"transaction {saga.data['transaction_id']} needs a refund")
    assert saga.compensated == UNDONE
    assert (await contract_of(world, contract_id)).reason == "called off by the organizer"
