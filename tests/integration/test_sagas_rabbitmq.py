"""The sagas over RabbitMQ: the demo's whole booking flow (double booking, declined card retried
then cancelled, signature deadline) with the application's events going through the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from mussikon.adapters.clock import OffsetClock
from mussikon.application.projections.directory import CONTRACTS
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.entrypoints.demo import run_demo
from tests.integration.rabbitmq_kit import BrokerNamespace

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def app_on_rabbitmq(rabbitmq_url: str, unique_name: str,
                          tmp_path: Path) -> AsyncIterator[App]:
    """The application on SQLite, its transport RabbitMQ under a prefix of its own."""
    app = await open_app(Settings(store_url=f"sqlite:///{tmp_path / 'rabbit.db'}",
                                  sqlite_synchronous="NORMAL", poll_interval=0.01,
                                  poll_max_interval=0.1), OffsetClock())
    namespace = BrokerNamespace(rabbitmq_url, unique_name)
    app.transport = namespace.transport(app.store, app.documents, queue_type="classic")
    try:
        yield app
    finally:
        await app.close()
        await namespace.cleanup()


async def test_the_demo_booking_flow_runs_through_rabbitmq(app_on_rabbitmq: App) -> None:
    app = app_on_rabbitmq
    out = await run_demo(app, Console(quiet=True))
    won, lost = out.double_booking["won"], out.double_booking["lost"]
    statuses = {k: (await app.documents.get(CONTRACTS, v) or {}).get("status")
                for k, v in out.contracts.items()}
    assert statuses == {won: "Paid", lost: None, "juan-salsa": "Cancelled",
                        "mar-merengue": "Paid", "luis-fiesta": "Cancelled"}
    charges = await app.gateway.charges()  # type: ignore[attr-defined]
    assert sorted(c.status for c in charges) == ["Completed"] * 2 + ["Declined"] * 3
    assert await app.transport.dead_letters() == []
