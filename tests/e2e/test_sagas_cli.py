"""`mussikon sagas list` and `mussikon sagas show` after the demo, as an operator types them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def mussikon(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSSIKON_STORE_URL": f"sqlite:///{store}",
           "MUSSIKON_BROKER_URL": "memory://", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "mussikon", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sagas") / "mussikon.db"
    demo = mussikon("demo", "--quiet", store=path)
    assert demo.returncode == 0, demo.stderr
    return path.with_name("mussikon-demo.db")  # the demo's own store, beside the configured one


def test_sagas_list_shows_every_instance_and_filters_by_status(store: Path) -> None:
    everything = mussikon("sagas", "list", store=store)
    assert everything.returncode == 0, everything.stderr
    assert "11 saga(s)" in everything.stdout  # six applications, five bookings
    compensated = mussikon("sagas", "list", "--status", "compensated", store=store)
    assert "3 saga(s)" in compensated.stdout
    assert "not signed by both parties within 48 h" in compensated.stdout
    assert "the payment was declined 3 times" in compensated.stdout
    assert "is already booked on" in compensated.stdout
    bookings = mussikon("sagas", "list", "--kind", "booking", "--status", "Completed",
                        store=store)
    assert "2 saga(s)" in bookings.stdout


def test_sagas_show_gives_the_steps_the_data_and_the_history_with_times(store: Path) -> None:
    listed = mussikon("sagas", "list", "--kind", "booking", "--status", "Compensated",
                      store=store).stdout
    declined = next(line for line in listed.splitlines() if "declined 3 times" in line)
    match = re.search(r"booking-[0-9a-f-]{36}", declined)
    assert match is not None
    shown = mussikon("sagas", "show", match.group(0), store=store)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "Compensated" in out
    assert "completed, compensated" in out
    assert "payment_attempt" in out
    for record in ("Started", "StepWaiting", "TimeoutScheduled", "TimeoutFired", "StepFailed",
                   "StepCompensated"):
        assert record in out
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", out)  # when each happened
    by_contract = mussikon("sagas", "show", match.group(0).removeprefix("booking-"), store=store)
    assert by_contract.stdout == out


def test_a_bad_saga_id_or_status_gets_one_line_and_a_non_zero_exit(store: Path) -> None:
    missing = mussikon("sagas", "show", "booking-nope", store=store)
    assert missing.returncode == 1
    assert "no saga 'booking-nope'" in missing.stderr
    bad = mussikon("sagas", "list", "--status", "Sleeping", store=store)
    assert bad.returncode == 1
    assert "no saga status 'Sleeping'" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr
