"""The demo flow end to end, and the command line a user types."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from mussikon.adapters.clock import OffsetClock
from mussikon.application.projections.directory import CONTRACTS
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.entrypoints.demo import DemoFailed, run_demo


async def test_the_demo_flow_on_memory_reaches_every_expected_outcome() -> None:
    app = await open_app(Settings(store_url="memory://", poll_interval=0.01), OffsetClock())
    try:
        out = await run_demo(app, Console(quiet=True))
        statuses = {k: (await app.documents.get(CONTRACTS, v) or {}).get("status")
                    for k, v in out.contracts.items()}
        won, lost = out.double_booking["won"], out.double_booking["lost"]
        assert {won, lost} == {"ana-jazz", "ana-bolero"}
        assert statuses == {won: "Paid", lost: None, "juan-salsa": "Cancelled",
                            "mar-merengue": "Paid", "luis-fiesta": "Cancelled"}
        assert len(out.refused) == 2
        charges = await app.gateway.charges()  # type: ignore[attr-defined]
        # One per paid contract, and Juan's declined card three times (the initial payment and
        # two retries), whatever was redelivered; the unsigned contract was never charged.
        assert sorted(c.status for c in charges) == ["Completed"] * 2 + ["Declined"] * 3
        assert len({c.idempotency_key for c in charges}) == 5
    finally:
        await app.close()


async def test_the_demo_needs_a_clock_it_can_move() -> None:
    app = await open_app(Settings(store_url="memory://"))
    try:
        with pytest.raises(DemoFailed, match="AdjustableClock"):
            await run_demo(app, Console(quiet=True))
    finally:
        await app.close()


def mussikon(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSSIKON_STORE_URL": f"sqlite:///{store}",
           "MUSSIKON_BROKER_URL": "memory://", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "mussikon", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_the_demo_command_runs_twice_on_one_sqlite_file_and_the_store_can_be_inspected(
        tmp_path: Path) -> None:
    store = tmp_path / "demo.db"
    first = mussikon("demo", "--fresh", "--quiet", store=store)
    assert first.returncode == 0, first.stderr
    assert "all expected outcomes happened" in first.stdout
    again = mussikon("demo", "--quiet", store=store)
    assert again.returncode == 0, again.stderr
    by_type = mussikon("events", "by-type", "PaymentProcessedEvent", "--since", "2020-01-01",
                       store=store)
    assert by_type.returncode == 0, by_type.stderr
    assert by_type.stdout.count("PaymentProcessedEvent") >= 6
    listed = mussikon("notifications", "list", "--limit", "500", store=store)
    assert listed.returncode == 0
    assert "payment-failed" in listed.stdout
    assert "welcome" in listed.stdout
    status = mussikon("projections", "status", store=store)
    assert "directory" in status.stdout


def test_bad_input_gets_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    store = tmp_path / "x.db"
    assert mussikon("db", "migrate", store=store).returncode == 0  # reading makes no store
    unknown = mussikon("events", "by-type", "NoSuchEvent", store=store)
    assert unknown.returncode == 1
    assert "unknown event type 'NoSuchEvent'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    missing = mussikon("events", "stream", "musician-nobody", store=store)
    assert missing.returncode == 1
    assert "no stream 'musician-nobody'" in missing.stderr
    env = {**os.environ, "MUSSIKON_STORE_URL": "mysql://root:hunter2@localhost/x"}
    bad = subprocess.run([sys.executable, "-m", "mussikon", "events", "tail"], env=env,
                         text=True, capture_output=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert "hunter2" not in bad.stderr
    assert "MUSSIKON_STORE_URL" in bad.stderr
