"""The marketplace's commands: what users ask for, checked by the aggregates and saved.

Each method loads what the rules need, lets the aggregate decide, and saves the events
it recorded. A refused command raises a DomainError and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from mussikon.application.repository import A, Cause, Repository
from mussikon.domain.aggregate import Aggregate
from mussikon.domain.application import Application, application_id_for
from mussikon.domain.contract import Contract, ContractStatus, contract_id_for
from mussikon.domain.errors import AlreadyApplied, NotAParty, NotFound
from mussikon.domain.gig import Gig
from mussikon.domain.instant import utc_now
from mussikon.domain.musician import Musician, Organizer
from mussikon.domain.payment import Payment, PaymentStatus
from mussikon.ports.event_store import ConcurrencyError


def new_id() -> str:
    """A new aggregate id: a GUID string, as the .NET services use."""
    return str(uuid.uuid4())


def _at_version(aggregate: Aggregate, expected_version: int | None) -> None:
    """Refuse to change an aggregate that is not at the version the caller last saw."""
    if expected_version is not None and aggregate.version != expected_version:
        raise ConcurrencyError(aggregate.stream_id, expected_version, aggregate.version)


def _attempts(expected_version: int | None) -> int:
    """A command given the version it expects is tried once: a retry after a conflict would
    act on a state the caller has not seen."""
    return 1 if expected_version is not None else 5


class Marketplace:
    """Commands on musicians, organizers, gigs, applications, contracts and payments."""

    def __init__(self, repository: Repository, clock: Callable[[], datetime] = utc_now) -> None:
        self.repo = repository
        self.clock = clock

    async def register_musician(self, *, email: str, name: str, genres: list[str],
                                location: str, musician_id: str | None = None,
                                cause: Cause | None = None) -> str:
        """Register a musician; returns the musician id."""
        musician = Musician(musician_id or new_id())
        musician.register(email=email, name=name, genres=genres, location=location)
        await self.repo.save(musician, cause or Cause.new())
        return musician.id

    async def register_organizer(self, *, email: str, name: str, payment_source: str = "",
                                 organizer_id: str | None = None,
                                 cause: Cause | None = None) -> str:
        """Register an organizer; returns the organizer id."""
        organizer = Organizer(organizer_id or new_id())
        organizer.register(email=email, name=name, payment_source=payment_source)
        await self.repo.save(organizer, cause or Cause.new())
        return organizer.id

    async def create_gig(self, *, organizer_id: str, title: str, event_date: datetime,
                         location: str, genre: str, budget: Decimal, gig_id: str | None = None,
                         cause: Cause | None = None) -> str:
        """Publish a gig for a registered organizer; returns the gig id (the wire's EventId)."""
        organizer = await self.repo.load(Organizer, organizer_id)
        if not organizer.exists:
            raise NotFound(f"organizer {organizer_id} is not registered")
        gig = Gig(gig_id or new_id())
        gig.create(organizer_id=organizer_id, title=title, event_date=event_date,
                   location=location, genre=genre, budget=budget, now=self.clock())
        await self.repo.save(gig, cause or Cause.new())
        return gig.id

    async def close_gig(self, gig_id: str, reason: str, cause: Cause | None = None, *,
                        expected_version: int | None = None) -> None:
        """Stop a gig taking applications. With `expected_version`: only if the gig's stream
        is at that version (ConcurrencyError otherwise)."""
        def change(gig: Gig) -> None:
            _at_version(gig, expected_version)
            gig.close(reason)

        await self.repo.update(Gig, gig_id, change, cause or Cause.new(),
                               attempts=_attempts(expected_version))

    async def submit_application(self, *, musician_id: str, gig_id: str, message: str,
                                 proposed_fee: Decimal, cause: Cause | None = None) -> str:
        """A musician applies to a gig; returns the application id."""
        musician = await self.repo.load(Musician, musician_id)
        gig = await self.repo.load(Gig, gig_id)
        application = await self.repo.load(Application, application_id_for(gig_id, musician_id))
        application.submit(musician=musician, gig=gig, message=message,
                           proposed_fee=proposed_fee)
        try:
            await self.repo.save(application, cause or Cause.new())
        except ConcurrencyError:
            raise AlreadyApplied(
                f"musician {musician_id} has already applied to gig {gig_id}") from None
        return application.id

    async def accept_application(self, application_id: str, *, organizer_id: str,
                                 agreed_fee: Decimal | None = None,
                                 cause: Cause | None = None,
                                 expected_version: int | None = None) -> str:
        """The gig's organizer accepts an application; returns the id of the contract the
        booking saga drafts for it. With `expected_version`: only if the application's stream
        is at that version (ConcurrencyError otherwise)."""
        application = await self._existing(Application, application_id)
        _at_version(application, expected_version)
        gig = await self.repo.load(Gig, application.gig_id)
        if gig.organizer_id != organizer_id:
            raise NotAParty(f"{organizer_id} is not the organizer of gig {gig.id}")
        application.accept(gig=gig, agreed_fee=agreed_fee)
        await self.repo.save(application, cause or Cause.new())
        return contract_id_for(application_id)

    async def reject_application(self, application_id: str, reason: str,
                                 cause: Cause | None = None, *,
                                 expected_version: int | None = None) -> None:
        """Turn an application down, with the reason. With `expected_version`: only if the
        application's stream is at that version (ConcurrencyError otherwise)."""
        def change(application: Application) -> None:
            _at_version(application, expected_version)
            application.reject(reason)

        await self._existing(Application, application_id)
        await self.repo.update(Application, application_id, change, cause or Cause.new(),
                               attempts=_attempts(expected_version))

    async def draft_contract(self, application_id: str, cause: Cause | None = None) -> str:
        """Draw up the contract of an accepted application at its agreed fee; returns its id."""
        application = await self._existing(Application, application_id)
        gig = await self.repo.load(Gig, application.gig_id)
        contract = await self.repo.load(Contract, contract_id_for(application_id))
        if contract.exists:
            return contract.id  # drafting again finds the same contract
        contract.draft(application=application, gig=gig,
                       amount=application.agreed_fee or Decimal(0))
        await self.repo.save(contract, cause or Cause.new())
        return contract.id

    async def sign_contract(self, contract_id: str, party_id: str,
                            cause: Cause | None = None, *,
                            expected_version: int | None = None) -> Contract:
        """A party signs; the second signature puts the contract in force. With
        `expected_version`: only if the contract's stream is at that version
        (ConcurrencyError otherwise)."""
        def change(contract: Contract) -> None:
            _at_version(contract, expected_version)
            contract.sign(party_id)

        await self._existing(Contract, contract_id)
        contract, _ = await self.repo.update(Contract, contract_id, change,
                                             cause or Cause.new(),
                                             attempts=_attempts(expected_version))
        return contract

    async def _existing(self, cls: type[A], aggregate_id: str) -> A:
        aggregate = await self.repo.load(cls, aggregate_id)
        if not aggregate.exists:
            raise NotFound(f"{cls.__name__.lower()} {aggregate_id} does not exist")
        return aggregate

    async def request_payment(self, contract_id: str, payment_id: str,
                              cause: Cause | None = None) -> Payment:
        """Open a payment for a signed contract at its amount (no-op if it exists already)."""
        contract = await self._existing(Contract, contract_id)
        payment = await self.repo.load(Payment, payment_id)
        if not payment.exists:
            payment.request(contract=contract, amount=contract.amount)
            try:
                await self.repo.save(payment, cause or Cause.new())
            except ConcurrencyError:  # opened at the same moment by another caller
                return await self.repo.load(Payment, payment_id)
        return payment

    async def record_payment_outcome(self, payment_id: str, *, status: str, transaction_id: str,
                                     cause: Cause | None = None) -> Payment:
        """Record the gateway's answer (PaymentProcessedEvent) once."""
        payment = await self._existing(Payment, payment_id)
        if payment.status is PaymentStatus.REQUESTED:
            payment.record_outcome(status=status, transaction_id=transaction_id)
            await self.repo.save(payment, cause or Cause.new())
        return payment

    async def mark_contract_paid(self, contract_id: str, *, payment_id: str,
                                 transaction_id: str, cause: Cause | None = None) -> None:
        """The contract's payment went through (no-op if already marked)."""
        def change(contract: Contract) -> None:
            if contract.status is not ContractStatus.PAID:
                contract.mark_paid(payment_id=payment_id, transaction_id=transaction_id)

        await self._existing(Contract, contract_id)
        await self.repo.update(Contract, contract_id, change, cause or Cause.new())

    async def mark_contract_payment_failed(self, contract_id: str, *, payment_id: str,
                                           reason: str, cause: Cause | None = None) -> None:
        """A payment of the contract failed (no-op if this payment's failure is recorded)."""
        def change(contract: Contract) -> None:
            if not (contract.status is ContractStatus.PAYMENT_FAILED
                    and contract.payment_id == payment_id):
                contract.mark_payment_failed(payment_id=payment_id, reason=reason)

        await self._existing(Contract, contract_id)
        await self.repo.update(Contract, contract_id, change, cause or Cause.new())

    async def cancel_contract(self, contract_id: str, reason: str,
                              cause: Cause | None = None) -> None:
        """Cancel a contract that is not paid (no-op if already cancelled)."""
        def change(contract: Contract) -> None:
            if contract.status is not ContractStatus.CANCELLED:
                contract.cancel(reason)

        await self._existing(Contract, contract_id)
        await self.repo.update(Contract, contract_id, change, cause or Cause.new())
