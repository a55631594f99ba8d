"""The demo flow end to end, and the command line a user types: the demo keeps to a store of
its own, wipes only that store and only when told, sends no email unless told, and prints
what fits 80 columns with ids that work in the next command."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from tests.conftest import MailBox

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


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def environment(**variables: str) -> dict[str, str]:
    """The environment of a `mussikon` run: no MUSSIKON_* variable but those given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
    return {**env, "MUSSIKON_BROKER_URL": "memory://", "COLUMNS": "250", **variables}


def mussikon(*args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run `mussikon ARGS` in `cwd` (where no .env is) without a terminal."""
    return subprocess.run([sys.executable, "-m", "mussikon", *args], cwd=cwd,
                          env=environment(**variables), stdin=subprocess.DEVNULL, text=True,
                          capture_output=True, timeout=120, check=False)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


async def write_foreign_store(path: Path) -> None:
    """A store holding an event the demo did not write."""
    app = await open_app(Settings(store_url=sqlite_url(path), broker_url="memory://"))
    try:
        await app.marketplace.register_musician(email="real@person.example", name="Real",
                                                genres=["Son"], location="Baní")
    finally:
        await app.close()


def files_of(path: Path) -> dict[str, bytes]:
    """The bytes of a SQLite store: its file, and its WAL and shared memory if any."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


def events_in(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        count: int = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    connection.close()
    return count


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr


def test_the_demo_leaves_the_configured_store_alone_and_writes_a_store_of_its_own(
        tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    asyncio.run(write_foreign_store(real))
    before = files_of(real)
    first = mussikon("demo", "--quiet", cwd=tmp_path, MUSSIKON_STORE_URL=sqlite_url(real))
    assert first.returncode == 0, first.stderr
    demo_store = tmp_path / "real-demo.db"
    assert f"all expected outcomes happened in the demo store {sqlite_url(demo_store)}" \
        in first.stdout
    assert files_of(real) == before
    assert events_in(real) == 1
    after_one_run = events_in(demo_store)
    assert after_one_run > 20
    again = mussikon("demo", "--quiet", cwd=tmp_path, MUSSIKON_STORE_URL=sqlite_url(real))
    assert again.returncode == 0, again.stderr
    assert events_in(demo_store) > after_one_run
    assert files_of(real) == before

    def inspect(*args: str) -> subprocess.CompletedProcess[str]:
        return mussikon(*args, cwd=tmp_path, MUSSIKON_STORE_URL=sqlite_url(demo_store))

    by_type = inspect("events", "by-type", "PaymentProcessedEvent", "--since", "2020-01-01")
    assert by_type.returncode == 0, by_type.stderr
    assert by_type.stdout.count("PaymentProcessedEvent") >= 6
    listed = inspect("notifications", "list", "--limit", "500")
    assert listed.returncode == 0
    assert "payment-failed" in listed.stdout
    assert "welcome" in listed.stdout
    assert "directory" in inspect("projections", "status").stdout
    # The same store named by a .env file, and --fresh: still only the demo's store is wiped.
    (tmp_path / ".env").write_text(f"MUSSIKON_STORE_URL={sqlite_url(real)}\n")
    fresh = mussikon("demo", "--fresh", "--yes", "--quiet", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert files_of(real) == before
    assert 0 < events_in(demo_store) <= after_one_run * 3 // 2


def test_the_demo_neither_writes_into_nor_wipes_a_store_holding_events_it_did_not_write(
        tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    asyncio.run(write_foreign_store(real))
    before = files_of(real)
    for args in (["--fresh", "--yes"], []):
        refused = mussikon("demo", *args, cwd=tmp_path, MUSSIKON_DEMO_STORE_URL=sqlite_url(real))
        one_line_error(refused, "holds events the demo did not write", str(real))
    assert files_of(real) == before
    same = mussikon("demo", cwd=tmp_path, MUSSIKON_STORE_URL=sqlite_url(real),
                    MUSSIKON_DEMO_STORE_URL=sqlite_url(real))
    one_line_error(same, "MUSSIKON_DEMO_STORE_URL", "a store of its own")
    assert files_of(real) == before


def test_fresh_wipes_the_demos_store_only_when_told(tmp_path: Path) -> None:
    demo_store = tmp_path / "mussikon-demo.db"

    def demo(*args: str) -> subprocess.CompletedProcess[str]:
        return mussikon("demo", "--quiet", *args, cwd=tmp_path,
                        MUSSIKON_STORE_URL=sqlite_url(tmp_path / "mussikon.db"))

    assert demo().returncode == 0
    assert demo().returncode == 0
    after_two_runs = events_in(demo_store)
    before = files_of(demo_store)
    one_line_error(demo("--fresh"), "refused without --yes (no terminal to ask)")
    assert files_of(demo_store) == before
    answered_no = _on_a_terminal(["demo", "--fresh"], "n\n", cwd=tmp_path,
                                 MUSSIKON_STORE_URL=sqlite_url(tmp_path / "mussikon.db"))
    assert answered_no.returncode == 1
    assert "Delete the demo store" in answered_no.stdout  # the question
    assert "cancelled" in answered_no.stderr
    assert files_of(demo_store) == before
    fresh = demo("--fresh", "--yes")
    assert fresh.returncode == 0, fresh.stderr
    assert 0 < events_in(demo_store) < after_two_runs * 3 // 4  # one run's worth


def _on_a_terminal(args: list[str], answer: str, cwd: Path,
                   **variables: str) -> subprocess.CompletedProcess[str]:
    """Run `mussikon ARGS` with a terminal as its input, typing `answer`."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "mussikon", *args], cwd=cwd,
                                   env=environment(**variables), stdin=terminal,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(controller, answer.encode())
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


async def test_the_demo_sends_no_email_unless_told_even_with_an_smtp_server_configured(
        smtp_server: tuple[MailBox, str], tmp_path: Path) -> None:
    box, url = smtp_server

    async def demo(*args: str) -> tuple[int, str]:
        # A process of its own while this loop serves SMTP.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mussikon", "demo", *args, cwd=tmp_path,
            env=environment(MUSSIKON_STORE_URL="memory://", MUSSIKON_SMTP_URL=url),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        return process.returncode, stdout.decode()

    _, output = await demo()
    assert "sending no email" in output.split("\n\n")[0]
    assert box.recipients == []
    await demo("--quiet", "--send-email")
    assert any(r.endswith("@musicos.example") for r in box.recipients)  # the server works


def test_the_demo_output_fits_80_columns_and_every_saga_id_it_prints_can_be_shown(
        tmp_path: Path) -> None:
    ran = mussikon("demo", cwd=tmp_path, MUSSIKON_STORE_URL="sqlite:///./mussikon.db",
                   COLUMNS="80")
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert [line for line in lines if cell_len(line) > 80] == []
    assert lines[0].startswith("This demo simulates the marketplace")
    sentence = " ".join(lines[:lines.index("")])
    assert sentence.endswith(".") and sentence.count(". ") == 0
    assert "writing to the demo store sqlite:///./mussikon-demo.db" in sentence
    assert "sending no email" in sentence
    assert not (tmp_path / "mussikon.db").exists()
    # Values whole and literal: no ellipsis, no id broken across lines, brackets kept.
    assert "…" not in ran.stdout
    for match in re.finditer(r"\b[0-9a-f]{8}-[0-9a-f-]*", ran.stdout):
        assert UUID.fullmatch(match.group(0).rstrip("-")), match.group(0)
    assert "genres=[Jazz, Bolero]" in ran.stdout
    assert "not signed by both parties within 48 h" in " ".join(
        line.strip() for line in lines)
    saga_ids = re.findall(r"^((?:booking|musician-application)-\S+)  ", ran.stdout, re.M)
    assert len(saga_ids) == 11  # six applications, five bookings
    command = shlex.split(next(line for line in lines if "mussikon sagas show" in line))
    assert command[-4:] == ["mussikon", "sagas", "show", "SAGA_ID"]
    told = dict(word.split("=", 1) for word in command[:-4])
    assert told == {"MUSSIKON_STORE_URL": "sqlite:///./mussikon-demo.db"}
    for saga_id in saga_ids:
        shown = mussikon("sagas", "show", saga_id, cwd=tmp_path, **told)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(saga_id)


def test_the_command_the_demo_prints_calls_mussikon_as_the_user_did(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "mussikon"
    if not script.exists():
        pytest.skip(f"no mussikon console script beside {sys.executable}")
    env = environment(MUSSIKON_STORE_URL="sqlite:///./mussikon.db",
                      PATH=os.defpath)  # where `mussikon` is not found
    ran = subprocess.run([str(script), "demo"], cwd=tmp_path, env=env, text=True,
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip().endswith(
        f"MUSSIKON_STORE_URL=sqlite:///./mussikon-demo.db {shlex.quote(str(script))} "
        "sagas show SAGA_ID")


def test_bad_input_gets_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    store = sqlite_url(tmp_path / "x.db")
    migrated = mussikon("db", "migrate", cwd=tmp_path, MUSSIKON_STORE_URL=store)
    assert migrated.returncode == 0, migrated.stderr  # reading makes no store
    unknown = mussikon("events", "by-type", "NoSuchEvent", cwd=tmp_path, MUSSIKON_STORE_URL=store)
    one_line_error(unknown, "unknown event type 'NoSuchEvent'")
    missing = mussikon("events", "stream", "musician-nobody", cwd=tmp_path,
                       MUSSIKON_STORE_URL=store)
    one_line_error(missing, "no stream 'musician-nobody'")
    bad = mussikon("events", "tail", cwd=tmp_path,
                   MUSSIKON_STORE_URL="mysql://root:hunter2@localhost/x")
    one_line_error(bad, "MUSSIKON_STORE_URL")
    assert "hunter2" not in bad.stderr
