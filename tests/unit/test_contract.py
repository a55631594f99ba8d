"""Contract: only for an accepted application at the agreed amount, signed once by both parties,
then paid (a failed payment may be retried) or cancelled before it is paid."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from mussikon.domain.application import Application
from mussikon.domain.contract import MUSICIAN, ORGANIZER, Contract, ContractStatus
from mussikon.domain.errors import (
    AmountMismatch,
    AmountNotPositive,
    ApplicationNotAccepted,
    GigMismatch,
    IllegalTransition,
    MissingField,
    NotAParty,
    NotFound,
)
from mussikon.domain.events import (
    ContractCancelledEvent,
    ContractDraftedEvent,
    ContractPaidEvent,
    ContractPartySignedEvent,
    ContractPaymentFailedEvent,
    ContractSignedEvent,
    DomainEvent,
)
from mussikon.domain.gig import Gig
from tests.unit.given import (
    APPLICATION_ID,
    CONTRACT_ID,
    FEE,
    GIG_DATE,
    GIG_ID,
    MUSICIAN_ID,
    ORGANIZER_ID,
    PAYMENT_ID,
    application_accepted,
    application_rejected,
    application_submitted,
    contract_cancelled,
    contract_drafted,
    contract_paid,
    contract_payment_failed,
    fields,
    gig_closed,
    gig_created,
    given,
    party_signed,
    signed_contract_history,
    state,
)

STRANGER_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"

NEW: tuple[DomainEvent, ...] = ()
DRAFTED = (contract_drafted(),)
SIGNED = signed_contract_history()
PAYMENT_FAILED = (*SIGNED, contract_payment_failed())
PAID = (*SIGNED, contract_paid())
CANCELLED = (*DRAFTED, contract_cancelled())
STATES = {"new": NEW, "drafted": DRAFTED, "signed": SIGNED, "payment-failed": PAYMENT_FAILED,
          "paid": PAID, "cancelled": CANCELLED}


def contract(state_name: str) -> Contract:
    return given(Contract, CONTRACT_ID, *STATES[state_name])


def accepted(fee: Decimal = FEE) -> Application:
    return given(Application, APPLICATION_ID, application_submitted(fee),
                 application_accepted(fee))


def gig() -> Gig:
    return given(Gig, GIG_ID, gig_created(), gig_closed())


# --- draft ----------------------------------------------------------------------------------


def test_drafting_for_an_accepted_application_records_the_agreed_terms() -> None:
    # given an accepted application at 1200.50 and its gig
    new = Contract(CONTRACT_ID)
    # when the contract is drawn up at that amount
    new.draft(application=accepted(Decimal("1200.50")), gig=gig(), amount=Decimal("1200.50"))
    # then the draft holds the parties, the gig's date and the exact amount
    [event] = new.pending
    assert isinstance(event, ContractDraftedEvent)
    assert fields(event) == {"contract_id": CONTRACT_ID, "application_id": APPLICATION_ID,
                             "musician_id": MUSICIAN_ID, "organizer_id": ORGANIZER_ID,
                             "gig_id": GIG_ID, "amount": Decimal("1200.50"),
                             "event_date": GIG_DATE}
    assert str(event.amount) == "1200.50"
    assert new.status is ContractStatus.DRAFTED


@pytest.mark.parametrize(("history", "status"), [
    ((), "new"),
    ((application_submitted(),), "submitted"),
    ((application_submitted(), application_rejected()), "rejected"),
], ids=["new", "submitted", "rejected"])
def test_a_contract_needs_an_accepted_application(history: tuple[DomainEvent, ...],
                                                  status: str) -> None:
    new = Contract(CONTRACT_ID)
    application = given(Application, APPLICATION_ID, *history)
    with pytest.raises(ApplicationNotAccepted,
                       match=f"application {APPLICATION_ID} is {status}, not accepted"):
        new.draft(application=application, gig=gig(), amount=FEE)
    assert new.pending == []


@pytest.mark.parametrize("amount", [Decimal("1200.49"), Decimal("1500.00")])
def test_a_contract_amount_other_than_the_agreed_fee_is_refused(amount: Decimal) -> None:
    new = Contract(CONTRACT_ID)
    with pytest.raises(AmountMismatch,
                       match=f"contract amount {amount} differs from the agreed fee 1200.50"):
        new.draft(application=accepted(Decimal("1200.50")), gig=gig(), amount=amount)
    assert new.pending == []


@pytest.mark.parametrize("amount", [1200.5, True])
def test_a_float_contract_amount_is_refused_even_when_it_equals_the_fee(amount: Any) -> None:
    # 1200.5 == Decimal("1200.50") in Python, but a float is not an exact amount
    new = Contract(CONTRACT_ID)
    with pytest.raises(AmountNotPositive, match="contract amount must be a decimal amount"):
        new.draft(application=accepted(Decimal("1200.50")), gig=gig(), amount=amount)
    assert new.pending == []


def test_a_contract_for_another_gig_than_the_applications_is_refused() -> None:
    new = Contract(CONTRACT_ID)
    other = given(Gig, STRANGER_ID, gig_created(STRANGER_ID))
    with pytest.raises(GigMismatch, match=f"is for gig {GIG_ID}, not {STRANGER_ID}"):
        new.draft(application=accepted(), gig=other, amount=FEE)
    assert new.pending == []


def test_a_contract_for_a_gig_that_was_not_loaded_is_refused() -> None:
    new = Contract(CONTRACT_ID)
    with pytest.raises(NotFound, match=f"gig {GIG_ID} does not exist"):
        new.draft(application=accepted(), gig=Gig(GIG_ID), amount=FEE)
    assert new.pending == []


@pytest.mark.parametrize("state_name", ["drafted", "signed", "payment-failed", "paid",
                                        "cancelled"])
def test_drafting_an_existing_contract_is_an_illegal_transition(state_name: str) -> None:
    existing = contract(state_name)
    with pytest.raises(IllegalTransition, match=f"contract {CONTRACT_ID} is already drafted"):
        existing.draft(application=accepted(), gig=gig(), amount=FEE)
    assert existing.pending == []


# --- sign -----------------------------------------------------------------------------------


def test_the_first_signature_records_only_that_party() -> None:
    drafted = contract("drafted")
    drafted.sign(MUSICIAN_ID)
    [event] = drafted.pending
    assert isinstance(event, ContractPartySignedEvent)
    assert fields(event) == {"contract_id": CONTRACT_ID, "party_id": MUSICIAN_ID,
                             "role": MUSICIAN}
    assert drafted.status is ContractStatus.DRAFTED


def test_the_second_party_signing_puts_the_contract_in_force_once() -> None:
    # given the organizer signed first
    drafted = given(Contract, CONTRACT_ID, contract_drafted(), party_signed(ORGANIZER_ID))
    # when the musician signs
    drafted.sign(MUSICIAN_ID)
    # then her signature and the seed's ContractSignedEvent are recorded, exactly once
    assert [type(e) for e in drafted.pending] == [ContractPartySignedEvent, ContractSignedEvent]
    signed = drafted.pending[1]
    assert isinstance(signed, ContractSignedEvent)
    assert fields(signed) == {"contract_id": CONTRACT_ID, "musician_id": MUSICIAN_ID,
                              "gig_id": GIG_ID, "amount": FEE, "event_date": GIG_DATE}
    assert drafted.status is ContractStatus.SIGNED


def test_both_parties_signing_in_one_session_gives_one_signed_event() -> None:
    drafted = contract("drafted")
    drafted.sign(MUSICIAN_ID)
    drafted.sign(MUSICIAN_ID)  # a repeated signature changes nothing
    drafted.sign(ORGANIZER_ID)
    assert [type(e) for e in drafted.pending] == [
        ContractPartySignedEvent, ContractPartySignedEvent, ContractSignedEvent]
    roles = [e.role for e in drafted.pending if isinstance(e, ContractPartySignedEvent)]
    assert roles == [MUSICIAN, ORGANIZER]


def test_a_party_signing_again_records_nothing() -> None:
    drafted = given(Contract, CONTRACT_ID, contract_drafted(), party_signed(MUSICIAN_ID))
    drafted.sign(MUSICIAN_ID)
    assert drafted.pending == []
    assert drafted.status is ContractStatus.DRAFTED


def test_someone_who_is_not_a_party_cannot_sign() -> None:
    drafted = contract("drafted")
    with pytest.raises(NotAParty, match=f"{STRANGER_ID} is not a party to contract {CONTRACT_ID}"):
        drafted.sign(STRANGER_ID)
    assert drafted.pending == []


@pytest.mark.parametrize(("state_name", "status"), [
    ("new", "New"), ("signed", "Signed"), ("payment-failed", "PaymentFailed"), ("paid", "Paid"),
    ("cancelled", "Cancelled")])
def test_only_a_draft_is_signed(state_name: str, status: str) -> None:
    existing = contract(state_name)
    with pytest.raises(IllegalTransition,
                       match=f"contract {CONTRACT_ID} is {status}; only a draft is signed"):
        existing.sign(MUSICIAN_ID)
    assert existing.pending == []


# --- payment outcome and cancel -------------------------------------------------------------


@pytest.mark.parametrize("state_name", ["signed", "payment-failed"])
def test_a_signed_contract_or_one_whose_payment_failed_is_marked_paid(state_name: str) -> None:
    payable = contract(state_name)
    payable.mark_paid(payment_id=PAYMENT_ID, transaction_id="txn_1")
    [event] = payable.pending
    assert isinstance(event, ContractPaidEvent)
    assert fields(event) == {"contract_id": CONTRACT_ID, "payment_id": PAYMENT_ID,
                             "transaction_id": "txn_1"}
    assert payable.status is ContractStatus.PAID


@pytest.mark.parametrize("state_name", ["signed", "payment-failed"])
def test_a_failed_payment_is_recorded_with_its_reason(state_name: str) -> None:
    payable = contract(state_name)
    payable.mark_payment_failed(payment_id=PAYMENT_ID, reason="card declined")
    [event] = payable.pending
    assert isinstance(event, ContractPaymentFailedEvent)
    assert fields(event) == {"contract_id": CONTRACT_ID, "payment_id": PAYMENT_ID,
                             "reason": "card declined"}
    assert payable.status is ContractStatus.PAYMENT_FAILED


def test_marking_paid_needs_the_payment_id() -> None:
    signed = contract("signed")
    with pytest.raises(MissingField, match="payment id is required"):
        signed.mark_paid(payment_id=" ", transaction_id="txn_1")
    assert signed.pending == []


def test_a_failed_payment_needs_a_reason() -> None:
    signed = contract("signed")
    with pytest.raises(MissingField, match="reason is required"):
        signed.mark_payment_failed(payment_id=PAYMENT_ID, reason="")
    assert signed.pending == []


@pytest.mark.parametrize(("state_name", "status"), [
    ("new", "New"), ("drafted", "Drafted"), ("paid", "Paid"), ("cancelled", "Cancelled")])
def test_only_a_signed_or_payment_failed_contract_is_marked_paid(state_name: str,
                                                                 status: str) -> None:
    existing = contract(state_name)
    with pytest.raises(IllegalTransition,
                       match=f"contract {CONTRACT_ID} is {status}; cannot be marked paid"):
        existing.mark_paid(payment_id=PAYMENT_ID, transaction_id="txn_1")
    assert existing.pending == []


@pytest.mark.parametrize(("state_name", "status"), [
    ("new", "New"), ("drafted", "Drafted"), ("paid", "Paid"), ("cancelled", "Cancelled")])
def test_only_a_signed_or_payment_failed_contract_has_a_payment_fail(state_name: str,
                                                                     status: str) -> None:
    existing = contract(state_name)
    with pytest.raises(IllegalTransition,
                       match=f"contract {CONTRACT_ID} is {status}; payment cannot fail"):
        existing.mark_payment_failed(payment_id=PAYMENT_ID, reason="declined")
    assert existing.pending == []


@pytest.mark.parametrize("state_name", ["drafted", "signed", "payment-failed"])
def test_a_contract_not_yet_paid_is_cancelled_with_its_reason(state_name: str) -> None:
    unpaid = contract(state_name)
    unpaid.cancel("gig called off")
    [event] = unpaid.pending
    assert isinstance(event, ContractCancelledEvent)
    assert fields(event) == {"contract_id": CONTRACT_ID, "reason": "gig called off"}
    assert unpaid.status is ContractStatus.CANCELLED


@pytest.mark.parametrize(("state_name", "status"), [
    ("new", "New"), ("paid", "Paid"), ("cancelled", "Cancelled")])
def test_a_new_paid_or_cancelled_contract_cannot_be_cancelled(state_name: str,
                                                              status: str) -> None:
    existing = contract(state_name)
    with pytest.raises(IllegalTransition,
                       match=f"contract {CONTRACT_ID} is {status}; cannot be cancelled"):
        existing.cancel("changed our minds")
    assert existing.pending == []


def test_cancelling_needs_a_reason() -> None:
    drafted = contract("drafted")
    with pytest.raises(MissingField, match="reason is required"):
        drafted.cancel("  ")
    assert drafted.pending == []


# --- rebuild --------------------------------------------------------------------------------


def test_rebuilding_from_the_events_gives_the_same_state_and_version() -> None:
    live = Contract(CONTRACT_ID)
    live.draft(application=accepted(), gig=gig(), amount=FEE)
    live.sign(ORGANIZER_ID)
    live.sign(MUSICIAN_ID)
    live.mark_payment_failed(payment_id=PAYMENT_ID, reason="card declined")
    live.mark_paid(payment_id="retry-1", transaction_id="txn_2")
    saved = live.mark_saved()
    rebuilt = Contract.rebuild(CONTRACT_ID, saved)
    assert rebuilt.version == live.version == 6
    assert state(rebuilt) == state(live)
    assert rebuilt.signed_by == {MUSICIAN_ID, ORGANIZER_ID}
    assert (rebuilt.status, rebuilt.payment_id) == (ContractStatus.PAID, "retry-1")
