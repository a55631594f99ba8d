"""`mussikon sagas resume` after `mussikon dlq purge`, as an operator types them: two bookings
whose saga lost the message that would have moved it (one Running at its payment, whose
handler kept failing while the provider was down; one Waiting for signatures, whose
ContractSignedEvent delivery kept failing) reach their end, each charged once, each party
told once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mussikon.adapters.payments import SandboxGateway
from mussikon.application.sagas.engine import SagaEngine
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.domain.contract import Contract, ContractStatus, contract_id_for
from mussikon.domain.events import ContractSignedEvent
from mussikon.domain.instant import utc_now
from mussikon.ports.payments import ChargeRequest, ChargeResult
from mussikon.ports.transport import Envelope


def mussikon(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSSIKON_STORE_URL": f"sqlite:///{store}",
           "MUSSIKON_BROKER_URL": "memory://", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "mussikon", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


async def opened(store: Path) -> App:
    return await open_app(Settings(store_url=f"sqlite:///{store}", broker_url="memory://",
                                   bus_retry_delays="0.01", poll_interval=0.01,
                                   poll_max_interval=0.05))


async def booking(app: App, organizer: str, n: int) -> tuple[str, str]:
    """A musician's application to a new gig, accepted: the booking saga waits for signatures.
    Returns the musician's id and the contract's."""
    m = app.marketplace
    musician = await m.register_musician(email=f"musician{n}@example.com", name=f"Musician {n}",
                                         genres=["jazz"], location="Santo Domingo")
    gig = await m.create_gig(organizer_id=organizer, title=f"Night {n}",
                             event_date=utc_now() + timedelta(days=30 + n),
                             location="Santo Domingo", genre="jazz", budget=Decimal("900"))
    application = await m.submit_application(musician_id=musician, gig_id=gig, message="Trio",
                                             proposed_fee=Decimal("800.50"))
    await app.settle()
    await m.accept_application(application, organizer_id=organizer)
    await app.settle()
    return musician, contract_id_for(application)


async def stuck_bookings(store: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Two bookings signed by both parties whose saga gave up on the message: the first while
    the payment provider was unreachable, the second while its saga could not take the
    ContractSignedEvent. Returns their contract ids."""
    refused: set[str] = set()
    handle_event = SagaEngine.handle_event

    async def refusing(self: SagaEngine, envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, ContractSignedEvent) and event.contract_id in refused:
            raise RuntimeError("the saga could not take it")
        await handle_event(self, envelope)

    async def unreachable(self: SandboxGateway, request: ChargeRequest) -> ChargeResult:
        raise ConnectionError("the payment provider is unreachable")

    with monkeypatch.context() as patched:
        # The saga's subscription is bound when the application is built.
        patched.setattr(SagaEngine, "handle_event", refusing)
        app = await opened(store)
    await app.start()
    try:
        organizer = await app.marketplace.register_organizer(
            email="casa@example.com", name="Casa", payment_source="tok_visa")
        running_musician, running = await booking(app, organizer, 1)
        waiting_musician, waiting = await booking(app, organizer, 2)
        refused.add(waiting)
        with monkeypatch.context() as patched:
            patched.setattr(SandboxGateway, "charge", unreachable)
            for contract, musician in ((running, running_musician),
                                       (waiting, waiting_musician)):
                await app.marketplace.sign_contract(contract, musician)
                await app.marketplace.sign_contract(contract, organizer)
            await app.settle()
    finally:
        await app.close()
    return running, waiting


async def test_sagas_stuck_after_their_letters_were_purged_are_resumed_to_their_end_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "mussikon.db"
    running, waiting = await stuck_bookings(store, monkeypatch)

    letters = json.loads(mussikon("dlq", "list", "--json", store=store).stdout)["dead_letters"]
    assert sorted(d["subscription"] for d in letters) == ["sagas.booking", "sagas.booking"]
    purged = mussikon("dlq", "purge", "--yes", store=store)
    assert (purged.returncode, purged.stdout) == (0, "purged 2\n"), purged.stderr

    def listed(status: str) -> list[str]:
        out = mussikon("sagas", "list", "--status", status, "--json", store=store)
        assert out.returncode == 0, out.stderr
        return [s["id"] for s in json.loads(out.stdout)["sagas"]]

    assert listed("Running") == [f"booking-{running}"]
    assert listed("Waiting") == [f"booking-{waiting}"]

    resumed = mussikon("sagas", "resume", running[:13], store=store)  # a start of the id
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(
        f"booking-{running}: Running at initial-payment -> Completed\n")
    assert "payment 1 of 800.50: Completed" in resumed.stdout

    resumed = mussikon("sagas", "resume", f"booking-{waiting}", "--json", store=store)
    assert resumed.returncode == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert (document["before"]["status"], document["after"]["status"]) == ("Waiting",
                                                                          "Completed")
    assert [e["event_type"] for e in document["redelivered"]] == ["ContractSignedEvent"]
    assert [r["step"] for r in document["records"] if r["kind"] == "StepCompleted"] == [
        "signatures", "initial-payment", "contract-paid"]

    again = mussikon("sagas", "resume", f"booking-{running}", store=store)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == f"error: saga booking-{running} is Completed: nothing to resume\n"

    # A worker now handles what the resumes wrote: the payment notices go out, once each.
    app = await opened(store)
    await app.start()
    try:
        await app.settle()
        assert isinstance(app.gateway, SandboxGateway)
        charges = await app.gateway.charges()
        for contract_id in (running, waiting):
            contract = await app.repository.load(Contract, contract_id)
            assert contract.status is ContractStatus.PAID
        sent = Counter((n.notification.kind, n.notification.recipient, n.notification.about)
                       for n in await app.notifier.sent(1000))
        assert await app.transport.dead_letters() == []
    finally:
        await app.close()
    assert len(charges) == 2  # one per booking
    assert sorted(c.amount for c in charges) == [Decimal("800.50")] * 2
    paid = {(who, about): count for (kind, who, about), count in sent.items()
            if kind == "payment-confirmation"}
    assert set(paid.values()) == {1}  # each party told once about each contract
    assert {who for who, _ in paid} == {"musician1@example.com", "musician2@example.com",
                                        "casa@example.com"}
    assert len(paid) == 4
