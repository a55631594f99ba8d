"""The payment gateway contract: every adapter passes these tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from mussikon.adapters.payments import TEST_CARDS, SandboxGateway
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore
from mussikon.ports.documents import DocumentStore
from mussikon.ports.payments import ChargeRequest, IdempotencyConflict, InvalidPaymentRequest


@dataclass
class GatewayUnderTest:
    """A gateway, and a way to get a fresh one over the same storage (a restart)."""

    gateway: SandboxGateway
    reopen: Callable[[], Awaitable[SandboxGateway]]


@pytest.fixture(params=["memory", "sqlite"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> AsyncIterator[GatewayUnderTest]:
    if request.param == "memory":
        documents: DocumentStore = InMemoryDocumentStore()

        async def same_memory() -> SandboxGateway:
            return SandboxGateway(documents)

        yield GatewayUnderTest(SandboxGateway(documents), same_memory)
        return
    path = str(tmp_path / "payments.db")
    databases = [await SqliteDatabase(path, synchronous="NORMAL").open()]

    async def reopen_file() -> SandboxGateway:
        await databases[-1].close()
        databases.append(await SqliteDatabase(path, synchronous="NORMAL").open())
        return SandboxGateway(SqliteDocumentStore(databases[-1]))

    try:
        yield GatewayUnderTest(SandboxGateway(SqliteDocumentStore(databases[0])), reopen_file)
    finally:
        await databases[-1].close()


def request(amount: str = "150.00", source: str = "tok_visa", key: str = "pay-1",
            **extra: str) -> ChargeRequest:
    return ChargeRequest(amount=Decimal(amount), source=source, idempotency_key=key,
                         description="Contract c-1", metadata=dict(extra))


@pytest.mark.parametrize("source", ["tok_visa", "tok_mastercard", "tok_amex"])
async def test_a_good_card_is_charged(subject: GatewayUnderTest, source: str) -> None:
    result = await subject.gateway.charge(request(source=source, contract_id="c-1"))

    assert result.status == "Completed" and result.completed
    assert re.fullmatch(r"txn_[A-Za-z0-9]{24}", result.transaction_id)
    assert result.decline_code == ""
    [charge] = await subject.gateway.charges()
    assert (charge.transaction_id, charge.amount, charge.currency, charge.source) == \
        (result.transaction_id, Decimal("150.00"), "USD", source)
    assert charge.metadata == {"contract_id": "c-1"}
    assert charge.description == "Contract c-1"


@pytest.mark.parametrize(("source", "code"), [
    ("tok_chargeDeclined", "card_declined"),
    ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("tok_chargeDeclinedExpiredCard", "expired_card"),
])
async def test_a_declining_card_is_declined_with_its_code(subject: GatewayUnderTest, source: str,
                                                          code: str) -> None:
    result = await subject.gateway.charge(request(source=source))

    assert (result.status, result.decline_code) == ("Declined", code)
    assert not result.completed
    assert result.message
    assert result.transaction_id.startswith("txn_")
    assert [c.status for c in await subject.gateway.charges()] == ["Declined"]


async def test_a_processing_error_fails(subject: GatewayUnderTest) -> None:
    result = await subject.gateway.charge(request(source="tok_processingError"))

    assert (result.status, result.decline_code) == ("Failed", "processing_error")


async def test_an_unknown_token_is_refused_naming_it_and_the_valid_ones(
        subject: GatewayUnderTest) -> None:
    with pytest.raises(InvalidPaymentRequest) as refused:
        await subject.gateway.charge(request(source="tok_bogus"))

    assert "tok_bogus" in str(refused.value)
    assert all(token in str(refused.value) for token in TEST_CARDS)
    assert await subject.gateway.charges() == []


@pytest.mark.parametrize("amount", ["0", "-5.00", "10.005", "NaN", "Infinity"])
async def test_a_bad_amount_is_refused_naming_it(subject: GatewayUnderTest, amount: str) -> None:
    with pytest.raises(InvalidPaymentRequest, match=re.escape(str(Decimal(amount)))):
        await subject.gateway.charge(request(amount=amount))

    assert await subject.gateway.charges() == []


async def test_amounts_keep_their_exact_value(subject: GatewayUnderTest) -> None:
    await subject.gateway.charge(request(amount="100", key="whole"))
    await subject.gateway.charge(request(amount="0.10", key="dime"))

    assert [str(c.amount) for c in await subject.gateway.charges()] == ["100", "0.10"]


async def test_a_bad_currency_or_key_is_refused(subject: GatewayUnderTest) -> None:
    with pytest.raises(InvalidPaymentRequest, match="usd"):
        await subject.gateway.charge(ChargeRequest(amount=Decimal(1), source="tok_visa",
                                                   idempotency_key="k", currency="usd"))
    with pytest.raises(InvalidPaymentRequest, match="idempotency_key"):
        await subject.gateway.charge(request(key=""))


async def test_a_retry_returns_the_same_result_and_charges_once(subject: GatewayUnderTest) -> None:
    first = await subject.gateway.charge(request(amount="99.50"))
    again = await subject.gateway.charge(request(amount="99.5"))  # the same amount, written anew

    assert again == first
    assert len(await subject.gateway.charges()) == 1


async def test_a_retried_decline_or_failure_is_replayed_not_recharged(
        subject: GatewayUnderTest) -> None:
    declined = await subject.gateway.charge(request(source="tok_chargeDeclined", key="d"))
    failed = await subject.gateway.charge(request(source="tok_processingError", key="f"))

    assert await subject.gateway.charge(request(source="tok_chargeDeclined", key="d")) == declined
    assert await subject.gateway.charge(request(source="tok_processingError", key="f")) == failed
    assert len(await subject.gateway.charges()) == 2


async def test_concurrent_requests_with_one_key_charge_once(subject: GatewayUnderTest) -> None:
    results = await asyncio.gather(*(subject.gateway.charge(request()) for _ in range(5)))

    assert len({r.transaction_id for r in results}) == 1
    assert len(await subject.gateway.charges()) == 1


@pytest.mark.parametrize("changed", [{"amount": "151.00"}, {"source": "tok_mastercard"}])
async def test_a_reused_key_for_another_charge_is_a_conflict(subject: GatewayUnderTest,
                                                             changed: dict[str, str]) -> None:
    await subject.gateway.charge(request())

    with pytest.raises(IdempotencyConflict, match="pay-1"):
        await subject.gateway.charge(request(**changed))
    assert len(await subject.gateway.charges()) == 1


async def test_the_ledger_lists_charges_in_order(subject: GatewayUnderTest) -> None:
    made = [await subject.gateway.charge(request(key=f"k{n}", source=source))
            for n, source in enumerate(["tok_visa", "tok_chargeDeclined", "tok_mastercard"])]

    assert [c.transaction_id for c in await subject.gateway.charges()] == \
        [r.transaction_id for r in made]


async def test_the_ledger_and_idempotency_survive_a_restart(subject: GatewayUnderTest) -> None:
    first = await subject.gateway.charge(request())

    reopened = await subject.reopen()

    assert [c.transaction_id for c in await reopened.charges()] == [first.transaction_id]
    assert await reopened.charge(request()) == first
    with pytest.raises(IdempotencyConflict):
        await reopened.charge(request(amount="1.00"))
    assert len(await reopened.charges()) == 1
