"""`mussikon sagas list` and `mussikon sagas show` after the demo, as an operator types them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def mussikon(*args: str, store: Path, columns: int = 250) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSSIKON_STORE_URL": f"sqlite:///{store}",
           "MUSSIKON_BROKER_URL": "memory://", "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "mussikon", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


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


def saga_ids(store: Path, *args: str) -> tuple[list[str], str | None]:
    listed = mussikon("sagas", "list", *args, "--json", store=store)
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)  # stdout holds the JSON document and nothing else
    return [s["id"] for s in document["sagas"]], document["next_after"]


def test_sagas_list_pages_visit_every_saga_once(store: Path) -> None:
    everything, more = saga_ids(store)
    assert len(everything) == 11 and more is None
    for filters, expected in (((), everything),
                              (("--status", "Compensated"), saga_ids(store, "--status",
                                                                     "Compensated")[0])):
        seen: list[str] = []
        after: tuple[str, ...] = ()
        while True:
            page, more = saga_ids(store, *filters, "--limit", "4", *after)
            seen += page
            if more is None:
                break
            after = ("--after", more)
        assert seen == expected
    assert len(expected) == 3

    table = mussikon("sagas", "list", "--limit", "4", store=store, columns=40)
    assert table.returncode == 0, table.stderr
    assert all(saga_id in table.stdout for saga_id in everything[:4])  # whole, even piped
    assert f"more: mussikon sagas list --limit 4 --after {everything[3]}" in table.stdout
    bad = mussikon("sagas", "list", "--after", "booking-nope", store=store)
    assert (bad.returncode, bad.stdout, bad.stderr) == (1, "", "error: no saga 'booking-nope'\n")


def test_sagas_show_takes_every_listed_id_and_a_unique_start_of_one(store: Path) -> None:
    everything, _ = saga_ids(store)
    booking = next(s for s in everything if s.startswith("booking-"))
    shown = mussikon("sagas", "show", booking, "--json", store=store)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["id"] == booking
    assert document["steps"][0] == "accepted"
    assert document["history"][0]["kind"] == "Started"
    text = mussikon("sagas", "show", booking, store=store).stdout
    assert text.startswith(f"{booking}  {document['status']}\n")
    contract = booking.removeprefix("booking-")
    for given in (booking[:16], contract[:8]):  # the start of a saga id, of a contract id
        assert mussikon("sagas", "show", given, store=store).stdout == text, given

    ambiguous = mussikon("sagas", "show", "booking-", store=store)
    assert ambiguous.returncode == 1
    assert ambiguous.stderr.startswith("error: 'booking-' names 5 sagas (booking-")
    assert ambiguous.stderr.endswith("): give more of the id\n")
    assert ambiguous.stderr.count("\n") == 1


def test_resuming_a_finished_or_unknown_saga_says_so(store: Path) -> None:
    completed, _ = saga_ids(store, "--status", "Completed", "--kind", "booking")
    resumed = mussikon("sagas", "resume", completed[0], store=store)
    assert (resumed.returncode, resumed.stdout) == (1, "")
    assert resumed.stderr == f"error: saga {completed[0]} is Completed: nothing to resume\n"
    unknown = mussikon("sagas", "resume", "booking-nope", store=store)
    assert (unknown.returncode, unknown.stderr) == (1, "error: no saga 'booking-nope'\n")
