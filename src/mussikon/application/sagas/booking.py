"""The booking saga: from an accepted application to a paid contract, or back to nothing.

    accepted → reserve the musician's day → draft the contract → both parties sign (within
    the signature timeout) → initial payment (declined: retried after a delay, a limited
    number of times) → contract paid

When a step fails, what was done is undone, last first: the contract is cancelled and
both parties told, the day released, the application rejected with the reason (and the
musician told, unless the cancellation already told them). Two accepted applications of
one musician for one day race for the day; one gets it, the other is compensated.

The saga owns the payment: it charges the initial payment with `initial_payment_id`
and each retry with an id of its own, so every attempt is charged once whatever is
redelivered, and a charge that cannot be made fails the booking instead of leaving it
waiting. The ContractEventHandler confirms the signed contract and reacts to each
`PaymentProcessedEvent` (notices, contract marked paid or payment failed), as the
specification has it.

An instance's id is its contract's id (`contract_id_for(application id)`), so contract
events correlate directly.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from mussikon.application import templates
from mussikon.application.sagas.services import SagaServices
from mussikon.application.sagas.steps import (
    Done,
    Failed,
    Outcome,
    SagaDefinition,
    Step,
    StepContext,
    TimeoutRequest,
    Wait,
)
from mussikon.domain.application import Application, ApplicationStatus
from mussikon.domain.contract import Contract, ContractStatus, contract_id_for
from mussikon.domain.errors import DomainError, IllegalTransition
from mussikon.domain.events import (
    ApplicationAcceptedEvent,
    ContractCancelledEvent,
    ContractSignedEvent,
    DomainEvent,
)
from mussikon.domain.gig import Gig
from mussikon.domain.musician import Musician, Organizer
from mussikon.domain.payment import PaymentStatus
from mussikon.ports.payments import ChargeRequest, InvalidPaymentRequest

_PAYMENT_IDS = uuid.UUID("5b0e2f7a-1c3d-4e8f-9a6b-2d4c6e8f0a1b")

SIGNATURE_DEADLINE = "signature-deadline"
PAYMENT_RETRY = "payment-retry"


def initial_payment_id(contract_id: str) -> str:
    """The id of a contract's initial payment: the same however often it is attempted."""
    return str(uuid.uuid5(_PAYMENT_IDS, f"{contract_id}/initial"))


def payment_id_for(contract_id: str, attempt: int) -> str:
    """The payment id of attempt `attempt` (1: the initial payment, then one per retry)."""
    if attempt == 1:
        return initial_payment_id(contract_id)
    return str(uuid.uuid5(_PAYMENT_IDS, f"{contract_id}/retry-{attempt - 1}"))


@dataclass(frozen=True, slots=True)
class BookingPolicy:
    """How long the parties have to sign, and how a declined payment is retried."""

    signature_timeout: timedelta = timedelta(hours=48)
    payment_retries: int = 2
    payment_retry_delay: timedelta = timedelta(hours=1)


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h"


class Accepted(Step):
    """The organizer accepted. Undone by rejecting the application with the reason."""

    name = "accepted"
    compensable = True

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        gig = await self.s.repository.load(Gig, ctx.text("gig_id"))
        if gig.event_date is None:
            return Failed(f"gig {gig.id} does not exist")
        musician = await self.s.repository.load(Musician, ctx.text("musician_id"))
        return Done({"gig_title": gig.title, "gig_date": gig.event_date.isoformat(),
                     "musician_name": musician.name},
                    note=f"{musician.name} for {gig.title} at {ctx.text('amount')}")

    async def compensate(self, ctx: StepContext) -> str:
        application_id = ctx.text("application_id")
        application = await self.s.repository.load(Application, application_id)
        if application.status in (ApplicationStatus.ACCEPTED, ApplicationStatus.SUBMITTED):
            with contextlib.suppress(IllegalTransition):  # rejected a moment ago: that stands
                await self.s.marketplace.reject_application(application_id, ctx.reason,
                                                            ctx.cause)
            application = await self.s.repository.load(Application, application_id)
        did = f"application {application.status.lower()}"
        if ctx.data.get("contract_drafted"):
            return f"{did}; the musician was told by the cancellation notice"
        musician = await self.s.repository.load(Musician, ctx.text("musician_id"))
        sent = await self.s.notifier.send(templates.application_rejected(
            musician.name, musician.email, ctx.key("rejection-notice"),
            application_id=application_id, gig_title=ctx.text("gig_title"),
            reason=application.reason or ctx.reason))
        return f"{did}; {musician.email} {'told' if sent else 'already told'}"


class ReserveDate(Step):
    """Hold the musician's day for this contract; fails if another contract holds it."""

    name = "reserve-date"
    compensable = True

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        day = datetime.fromisoformat(ctx.text("gig_date"))
        holder = await self.s.days.reserve(ctx.text("musician_id"), day, ctx.instance)
        if holder != ctx.instance:
            return Failed(f"{ctx.text('musician_name')} is already booked on {day.date()} "
                          f"(contract {holder})")
        return Done(note=f"{day.date()} held")

    async def compensate(self, ctx: StepContext) -> str:
        day = datetime.fromisoformat(ctx.text("gig_date"))
        released = await self.s.days.release(ctx.text("musician_id"), day, ctx.instance)
        return f"{day.date()} {'released' if released else 'was not held'}"


class DraftContract(Step):
    """Draw up the contract at the agreed fee. Undone by cancelling it and telling both."""

    name = "draft-contract"
    compensable = True

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        try:
            contract_id = await self.s.marketplace.draft_contract(ctx.text("application_id"),
                                                                 ctx.cause)
        except DomainError as exc:
            return Failed(f"the contract cannot be drafted: {exc}")
        return Done({"contract_drafted": True}, note=f"contract {contract_id}")

    async def compensate(self, ctx: StepContext) -> str:
        contract = await self.s.repository.load(Contract, ctx.instance)
        if contract.status is ContractStatus.PAID:
            return "the contract is paid: not cancelled"
        if contract.status is not ContractStatus.CANCELLED:
            await self.s.marketplace.cancel_contract(ctx.instance, ctx.reason, ctx.cause)
            contract = await self.s.repository.load(Contract, ctx.instance)
        told = []
        for party in (await self.s.repository.load(Musician, contract.musician_id),
                      await self.s.repository.load(Organizer, contract.organizer_id)):
            await self.s.notifier.send(templates.contract_cancelled(
                party.name, party.email, ctx.key("cancellation-notice"),
                contract_id=ctx.instance, gig_title=ctx.text("gig_title"),
                reason=contract.reason or ctx.reason))
            told.append(party.email)
        return f"contract cancelled ({contract.reason}); {' and '.join(told)} told"


class Signatures(Step):
    """Wait for both parties to sign, until the signature deadline."""

    name = "signatures"

    def __init__(self, services: SagaServices, policy: BookingPolicy) -> None:
        self.s = services
        self.timeout = policy.signature_timeout

    async def _check(self, ctx: StepContext) -> Outcome | None:
        contract = await self.s.repository.load(Contract, ctx.instance)
        if contract.status in (ContractStatus.SIGNED, ContractStatus.PAYMENT_FAILED,
                               ContractStatus.PAID):
            return Done(note="signed by both parties")
        if contract.status is ContractStatus.CANCELLED:
            return Failed(f"the contract was cancelled: {contract.reason}")
        return None

    async def run(self, ctx: StepContext) -> Outcome:
        # The contract may have been signed before this step began waiting.
        decided = await self._check(ctx)
        if decided is not None:
            return decided
        return Wait(timeout=TimeoutRequest(SIGNATURE_DEADLINE, self.timeout),
                    note=f"both parties have {_hours(self.timeout)} to sign")

    async def on_event(self, ctx: StepContext, event: DomainEvent) -> Outcome | None:
        if isinstance(event, ContractSignedEvent):
            return Done(note="signed by both parties")
        if isinstance(event, ContractCancelledEvent):
            return Failed(f"the contract was cancelled: {event.reason}")
        return None

    async def on_timeout(self, ctx: StepContext, name: str) -> Outcome:
        decided = await self._check(ctx)
        if decided is not None:
            return decided  # signed at the last moment: the event is on its way
        contract = await self.s.repository.load(Contract, ctx.instance)
        roles = {contract.musician_id: "the musician", contract.organizer_id: "the organizer"}
        missing = [role for party, role in roles.items() if party not in contract.signed_by]
        return Failed(f"not signed by both parties within {_hours(self.timeout)} "
                      f"(missing: {' and '.join(missing)})")


class InitialPayment(Step):
    """Charge the organizer the contract's amount; retry a decline after a delay, a few times."""

    name = "initial-payment"

    def __init__(self, services: SagaServices, policy: BookingPolicy) -> None:
        self.s = services
        self.retries, self.delay = policy.payment_retries, policy.payment_retry_delay

    async def run(self, ctx: StepContext) -> Outcome:
        m = self.s.marketplace
        attempt = int(ctx.data.get("payment_attempt", 1))
        payment_id = payment_id_for(ctx.instance, attempt)
        try:
            payment = await m.request_payment(ctx.instance, payment_id, ctx.cause)
        except DomainError as exc:
            return Failed(f"no payment can be requested: {exc}")
        detail = ""
        if payment.status is PaymentStatus.REQUESTED:
            organizer = await self.s.repository.load(Organizer, ctx.text("organizer_id"))
            try:
                result = await self.s.gateway.charge(ChargeRequest(
                    amount=payment.amount, source=organizer.payment_source,
                    idempotency_key=payment.idempotency_key,
                    description=f"MussikOn contract {ctx.instance}",
                    metadata={"contract_id": ctx.instance, "payment_id": payment_id}))
            except InvalidPaymentRequest as exc:
                return Failed(f"the organizer's card cannot be charged: {exc}")
            detail = f" ({result.decline_code})" if result.decline_code else ""
            payment = await m.record_payment_outcome(
                payment_id, status=result.status, transaction_id=result.transaction_id,
                cause=ctx.cause)
        outcome = f"payment {attempt} of {payment.amount}: {payment.status}{detail}"
        if payment.status is PaymentStatus.COMPLETED:
            return Done({"payment_id": payment_id, "transaction_id": payment.transaction_id},
                        note=outcome)
        if attempt > self.retries:
            return Failed(f"the payment was declined {attempt} times; last: {outcome}")
        return Wait({"payment_attempt": attempt + 1},
                    timeout=TimeoutRequest(PAYMENT_RETRY, self.delay),
                    note=f"{outcome}; retry {attempt} of {self.retries} in {_hours(self.delay)}")

    async def on_event(self, ctx: StepContext, event: DomainEvent) -> Outcome | None:
        if isinstance(event, ContractCancelledEvent):
            return Failed(f"the contract was cancelled: {event.reason}")
        return None

    async def on_timeout(self, ctx: StepContext, name: str) -> Outcome:
        return await self.run(ctx)


class ContractPaid(Step):
    """Mark the contract paid (the ContractEventHandler may have done it already)."""

    name = "contract-paid"

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        try:
            await self.s.marketplace.mark_contract_paid(
                ctx.instance, payment_id=ctx.text("payment_id"),
                transaction_id=ctx.text("transaction_id"), cause=ctx.cause)
        except IllegalTransition as exc:
            # Cancelled by someone between the charge and now. The gateway port has no
            # refunds: the reason names the transaction for the operator who refunds it.
            return Failed(f"{exc}; transaction {ctx.text('transaction_id')} needs a refund")
        return Done(note=f"contract paid ({ctx.text('transaction_id')})")


class BookingSaga(SagaDefinition):
    """One instance per accepted application, keyed by the contract id it leads to."""

    kind = "booking"
    event_types = frozenset(e.__name__ for e in (ApplicationAcceptedEvent, ContractSignedEvent,
                                                  ContractCancelledEvent))

    def __init__(self, services: SagaServices, policy: BookingPolicy | None = None) -> None:
        policy = policy or BookingPolicy()
        self.policy = policy
        self._steps: list[Step] = [
            Accepted(services), ReserveDate(services), DraftContract(services),
            Signatures(services, policy), InitialPayment(services, policy),
            ContractPaid(services),
        ]

    @property
    def steps(self) -> Sequence[Step]:
        return self._steps

    def correlate(self, event: DomainEvent) -> str | None:
        match event:
            case ApplicationAcceptedEvent():
                return contract_id_for(event.application_id)
            case ContractSignedEvent() | ContractCancelledEvent():
                return event.contract_id
        return None

    def starts(self, event: DomainEvent) -> bool:
        return isinstance(event, ApplicationAcceptedEvent)

    def streams(self, instance: str, data: Mapping[str, Any]) -> list[str]:
        return [f"{ApplicationAcceptedEvent.aggregate_type}-{data['application_id']}",
                f"{ContractSignedEvent.aggregate_type}-{instance}"]

    def initial_data(self, event: DomainEvent) -> dict[str, Any]:
        assert isinstance(event, ApplicationAcceptedEvent)
        return {"application_id": event.application_id, "musician_id": event.musician_id,
                "organizer_id": event.organizer_id, "gig_id": event.gig_id,
                "amount": str(Decimal(event.agreed_fee))}
