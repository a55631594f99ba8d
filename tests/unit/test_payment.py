"""Payment: only for a signed contract and for its amount, requested once, processed once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from mussikon.domain.contract import Contract
from mussikon.domain.errors import (
    AmountMismatch,
    AmountNotPositive,
    ContractNotSigned,
    IllegalTransition,
    MissingField,
)
from mussikon.domain.events import (
    PAYMENT_COMPLETED,
    PAYMENT_DECLINED,
    PAYMENT_FAILED,
    DomainEvent,
    PaymentProcessedEvent,
    PaymentRequestedEvent,
)
from mussikon.domain.payment import Payment, PaymentStatus
from tests.unit.given import (
    CONTRACT_ID,
    FEE,
    MUSICIAN_ID,
    PAYMENT_ID,
    contract_cancelled,
    contract_drafted,
    contract_paid,
    contract_payment_failed,
    fields,
    given,
    party_signed,
    payment_processed,
    payment_requested,
    signed_contract_history,
    state,
)

CONTRACTS: dict[str, tuple[DomainEvent, ...]] = {
    "signed": signed_contract_history(),
    "payment-failed": (*signed_contract_history(), contract_payment_failed()),
    "new": (),
    "drafted": (contract_drafted(),),
    "half-signed": (contract_drafted(), party_signed(MUSICIAN_ID)),
    "paid": (*signed_contract_history(), contract_paid()),
    "cancelled": (contract_drafted(), contract_cancelled()),
}
PAYMENTS: dict[str, tuple[DomainEvent, ...]] = {
    "new": (),
    "requested": (payment_requested(),),
    "completed": (payment_requested(), payment_processed(PAYMENT_COMPLETED)),
    "declined": (payment_requested(), payment_processed(PAYMENT_DECLINED)),
    "failed": (payment_requested(), payment_processed(PAYMENT_FAILED)),
}


def contract(name: str) -> Contract:
    return given(Contract, CONTRACT_ID, *CONTRACTS[name])


def payment(name: str) -> Payment:
    return given(Payment, PAYMENT_ID, *PAYMENTS[name])


@pytest.mark.parametrize("contract_state", ["signed", "payment-failed"])
def test_a_payment_for_a_signed_contract_at_its_amount_is_requested(contract_state: str) -> None:
    # given a signed contract of 1200.50 (or one whose last payment failed)
    new = Payment(PAYMENT_ID)
    # when a payment of that amount is requested
    new.request(contract=contract(contract_state), amount=Decimal("1200.50"))
    # then the request carries the amount exactly and an idempotency key of its own
    [event] = new.pending
    assert isinstance(event, PaymentRequestedEvent)
    assert fields(event) == {"payment_id": PAYMENT_ID, "contract_id": CONTRACT_ID,
                             "amount": Decimal("1200.50"),
                             "idempotency_key": f"payment-{PAYMENT_ID}"}
    assert str(event.amount) == "1200.50"
    assert new.status is PaymentStatus.REQUESTED


@pytest.mark.parametrize(("contract_state", "status"), [
    ("new", "New"), ("drafted", "Drafted"), ("half-signed", "Drafted"), ("paid", "Paid"),
    ("cancelled", "Cancelled")])
def test_a_payment_needs_a_signed_contract(contract_state: str, status: str) -> None:
    new = Payment(PAYMENT_ID)
    with pytest.raises(ContractNotSigned,
                       match=f"contract {CONTRACT_ID} is {status}, not signed"):
        new.request(contract=contract(contract_state), amount=FEE)
    assert new.pending == []


@pytest.mark.parametrize("amount", [Decimal("1200.49"), Decimal("2401.00")])
def test_a_payment_of_another_amount_than_the_contracts_is_refused(amount: Decimal) -> None:
    new = Payment(PAYMENT_ID)
    with pytest.raises(AmountMismatch,
                       match=f"payment {amount} differs from contract amount 1200.50"):
        new.request(contract=contract("signed"), amount=amount)
    assert new.pending == []


@pytest.mark.parametrize("amount", [1200.5, True, None])
def test_a_payment_amount_that_is_not_a_decimal_is_refused(amount: Any) -> None:
    # 1200.5 == Decimal("1200.50") in Python, but a float is not an exact amount
    new = Payment(PAYMENT_ID)
    with pytest.raises(AmountNotPositive, match="payment amount must be a decimal amount"):
        new.request(contract=contract("signed"), amount=amount)
    assert new.pending == []


@pytest.mark.parametrize("payment_state", ["requested", "completed", "declined", "failed"])
def test_requesting_an_existing_payment_is_an_illegal_transition(payment_state: str) -> None:
    existing = payment(payment_state)
    with pytest.raises(IllegalTransition, match=f"payment {PAYMENT_ID} was already requested"):
        existing.request(contract=contract("signed"), amount=FEE)
    assert existing.pending == []


@pytest.mark.parametrize("outcome", [PAYMENT_COMPLETED, PAYMENT_DECLINED, PAYMENT_FAILED])
def test_the_gateways_answer_records_the_seed_event(outcome: str) -> None:
    requested = payment("requested")
    requested.record_outcome(status=outcome, transaction_id="txn_01JDQ8Z5K3M9")
    [event] = requested.pending
    assert isinstance(event, PaymentProcessedEvent)
    assert fields(event) == {"payment_id": PAYMENT_ID, "contract_id": CONTRACT_ID,
                             "amount": FEE, "status": outcome,
                             "transaction_id": "txn_01JDQ8Z5K3M9"}
    assert requested.status == outcome


@pytest.mark.parametrize(("payment_state", "status"), [
    ("new", "New"), ("completed", "Completed"), ("declined", "Declined"), ("failed", "Failed")])
def test_only_a_requested_payment_gets_an_outcome(payment_state: str, status: str) -> None:
    existing = payment(payment_state)
    with pytest.raises(IllegalTransition, match=f"payment {PAYMENT_ID} is {status}; only a "
                                                f"requested payment gets an outcome"):
        existing.record_outcome(status=PAYMENT_COMPLETED, transaction_id="txn_2")
    assert existing.pending == []


def test_an_unknown_outcome_is_refused() -> None:
    requested = payment("requested")
    with pytest.raises(IllegalTransition, match="unknown payment status 'Pending'"):
        requested.record_outcome(status="Pending", transaction_id="txn_1")
    assert requested.pending == []


def test_an_outcome_needs_the_transaction_id() -> None:
    requested = payment("requested")
    with pytest.raises(MissingField, match="transaction id is required"):
        requested.record_outcome(status=PAYMENT_COMPLETED, transaction_id="")
    assert requested.pending == []
    assert requested.status is PaymentStatus.REQUESTED


def test_rebuilding_from_the_events_gives_the_same_state_and_version() -> None:
    live = Payment(PAYMENT_ID)
    live.request(contract=contract("signed"), amount=FEE)
    live.record_outcome(status=PAYMENT_DECLINED, transaction_id="txn_9")
    saved = live.mark_saved()
    rebuilt = Payment.rebuild(PAYMENT_ID, saved)
    assert rebuilt.version == live.version == 2
    assert state(rebuilt) == state(live)
    assert (rebuilt.status, rebuilt.transaction_id) == (PaymentStatus.DECLINED, "txn_9")
