"""Resuming a saga that lost the message that would have moved it (dead-lettered, then
dropped): it goes on from its durable state, each effect happens once, nothing is decided
twice, and a saga with nothing to resume is left as it is."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from mussikon.application.sagas.runtime import SagaNotStuck
from mussikon.application.sagas.state import RecordKind, SagaStatus
from mussikon.domain.contract import Contract, ContractStatus
from mussikon.domain.events import ContractSignedEvent
from mussikon.ports.payments import ChargeRequest, ChargeResult
from tests.unit.sagas_kit import SagaWorld, ScriptedGateway


@dataclass
class FlakyGateway(ScriptedGateway):
    """Unreachable while `down`, as a provider is during an outage."""

    down: bool = False

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        if self.down:
            raise ConnectionError("the payment provider is unreachable")
        return await super().charge(request)


def flaky(world: SagaWorld) -> FlakyGateway:
    gateway = FlakyGateway()
    world.gateway = gateway
    object.__setattr__(world.services, "gateway", gateway)
    return gateway


async def stuck_running(world: SagaWorld) -> tuple[str, FlakyGateway]:
    """A booking whose ContractSignedEvent was handled, but whose payment step raised every
    time it ran, so the message was given up on: the saga stays Running at the payment."""
    gateway = flaky(world)
    organizer, musician, _, contract_id = await world.accepted()
    gateway.down = True
    with pytest.raises(ConnectionError):
        await world.sign(contract_id, musician, organizer)
    gateway.down = False
    saga = await world.saga(f"booking-{contract_id}")
    assert (saga.status, saga.current_step) == (SagaStatus.RUNNING, "initial-payment")
    return saga.saga_id, gateway


async def test_a_running_saga_runs_its_step_again_and_reaches_its_end_with_one_charge() -> None:
    world = SagaWorld()
    saga_id, gateway = await stuck_running(world)
    resumed = await world.runtime.resume(saga_id)
    assert resumed.before.status is SagaStatus.RUNNING
    assert resumed.after.status is SagaStatus.COMPLETED
    assert resumed.redelivered == []  # it had handled its message: only its work was left
    assert [(r.kind, r.step) for r in resumed.records] == [
        (RecordKind.STEP_COMPLETED, "initial-payment"),
        (RecordKind.STEP_COMPLETED, "contract-paid"), (RecordKind.COMPLETED, "")]
    assert all(r.message_id.startswith("resume-") for r in resumed.records)
    assert len(gateway.charges) == 1
    contract = await world.repository.load(Contract, resumed.after.instance)
    assert contract.status is ContractStatus.PAID
    with pytest.raises(SagaNotStuck, match="is Completed: nothing to resume"):
        await world.runtime.resume(saga_id)
    await world.deliver()  # the transport delivering what the resume wrote changes nothing
    assert len(gateway.charges) == 1


async def test_two_resumes_at_once_decide_each_step_once_and_charge_once() -> None:
    world = SagaWorld()
    saga_id, gateway = await stuck_running(world)
    await asyncio.gather(world.runtime.resume(saga_id), world.runtime.resume(saga_id),
                         return_exceptions=True)
    saga = await world.saga(saga_id)
    assert saga.status is SagaStatus.COMPLETED
    history = await world.runtime.journal.history(saga_id)
    assert [h.step for h in history if h.kind == RecordKind.STEP_COMPLETED].count(
        "initial-payment") == 1
    assert [h.kind for h in history].count(RecordKind.COMPLETED) == 1
    assert len(gateway.charges) == 1


async def test_a_waiting_saga_is_given_the_stored_event_it_lost() -> None:
    world = SagaWorld()
    organizer, musician, _, contract_id = await world.accepted()
    # Both sign; the saga's delivery of ContractSignedEvent is lost (never delivered).
    for party in (musician, organizer):
        await world.marketplace.sign_contract(contract_id, party)
    saga_id = f"booking-{contract_id}"
    assert (await world.saga(saga_id)).status is SagaStatus.WAITING
    resumed = await world.runtime.resume(saga_id)
    assert [r.event.event_type for r in resumed.redelivered] == [ContractSignedEvent.__name__]
    assert resumed.after.status is SagaStatus.COMPLETED
    assert str(resumed.redelivered[0].event.id) in {r.message_id for r in resumed.records}
    assert resumed.after.handled == []  # finished: it keeps no message ids
    assert len(world.gateway.charges) == 1
    await world.deliver()  # the lost message turning up after all decides nothing again
    assert len(world.gateway.charges) == 1
    assert [h.kind for h in await world.runtime.journal.history(saga_id)].count(
        RecordKind.COMPLETED) == 1


async def test_a_saga_waiting_for_what_can_still_come_is_left_as_it_is() -> None:
    world = SagaWorld()
    _, _, _, contract_id = await world.accepted()
    saga_id = f"booking-{contract_id}"
    before = await world.saga(saga_id)
    with pytest.raises(SagaNotStuck, match=r"Waiting at step signatures, for an event or its "
                                           r"timeout at .*nothing to resume"):
        await world.runtime.resume(saga_id)
    after = await world.saga(saga_id)
    assert (after.version, after.status) == (before.version, SagaStatus.WAITING)
    with pytest.raises(KeyError, match="no saga 'booking-nope'"):
        await world.runtime.resume("booking-nope")
