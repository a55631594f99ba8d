"""What `mussikon events | notifications | projections` print, as an operator or a script
reads them: the newest events, pages, one JSON document with `--json`, names from outside
printed as typed, whole ids when piped, lag in events, a rebuild that asks first and says
what it did; and `mussikon --version`."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent
from mussikon.followers.undecodable import skip_undecodable
from mussikon.followers.unpublishable import TOO_LARGE, skip_unpublishable
from mussikon.ports.event_store import NO_STREAM, RecordedEvent, UndecodableEventError

EVIL_NAME = "[link=http://evil.example]click[/link]"
BROKEN_MARKUP_NAME = "DJ [/x] Loud"


def environment(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
    env.pop("COLUMNS", None)  # piped, as a script runs it: no terminal width to go by
    return {**env, "MUSSIKON_STORE_URL": f"sqlite:///{store}", "MUSSIKON_BROKER_URL": "memory://"}


def mussikon(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """The real command, its stdin not a terminal."""
    return subprocess.run([sys.executable, "-m", "mussikon", *args], env=environment(store),
                          text=True, capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=120, check=False)


def succeeded(*args: str, store: Path) -> str:
    done = mussikon(*args, store=store)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def json_of(*args: str, store: Path) -> Any:
    """The one JSON document the command prints with --json (json.loads refuses anything
    else on stdout)."""
    return json.loads(succeeded(*args, "--json", store=store))


def one_line_error(*args: str, store: Path) -> str:
    done = mussikon(*args, store=store)
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


@asynccontextmanager
async def opened(store: Path) -> AsyncIterator[App]:
    app = await open_app(Settings(store_url=f"sqlite:///{store}", broker_url="memory://",
                                  poll_interval=0.01))
    try:
        yield app
    finally:
        await app.close()


def registrations(n: int, tag: str = "m") -> list[DomainEvent]:
    return [MusicianRegisteredEvent(musician_id=f"{tag}-{k}", email=f"{tag}{k}@example.com",
                                    name=f"Musician {k}", genres=("jazz",), location="Cali")
            for k in range(n)]


async def append_each(app: App, events: list[DomainEvent]) -> None:
    """Each event in its own stream, a hundred streams per append."""
    for start in range(0, len(events), 100):
        await app.store.append_streams([(e.stream_id, [e], NO_STREAM)
                                        for e in events[start:start + 100]])


async def everything(app: App) -> list[RecordedEvent]:
    return await app.store.read_all(1, 100_000)


@pytest.fixture(scope="module")
def fifteen_hundred(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store of 1,500 events, and their ids in the global order."""
    store = tmp_path_factory.mktemp("tail") / "events.db"

    async def fill() -> list[str]:
        async with opened(store) as app:
            await append_each(app, registrations(1500))
            return [str(r.event.id) for r in await everything(app)]

    return store, asyncio.run(fill())


# --- events tail ---------------------------------------------------------------------------


def test_tail_shows_the_newest_events_of_the_global_order(
        fifteen_hundred: tuple[Path, list[str]]) -> None:
    store, ids = fifteen_hundred
    tail = json_of("events", "tail", "--limit", "1200", store=store)
    assert [e["position"] for e in tail] == list(range(301, 1501))
    assert [e["event_id"] for e in tail] == ids[300:]
    assert tail[-1]["data"]["EventType"] == "MusicianRegisteredEvent"
    assert tail[-1]["data"]["MusicianId"] == "m-1499"
    assert [e["event_id"] for e in json_of("events", "tail", store=store)] == ids[-20:]


def test_tail_pages_on_after_a_position(fifteen_hundred: tuple[Path, list[str]]) -> None:
    store, ids = fifteen_hundred
    page = json_of("events", "tail", "--after", "1300", "--limit", "150", store=store)
    assert [e["position"] for e in page] == list(range(1301, 1451))
    human = succeeded("events", "tail", "--after", "1300", "--limit", "150", store=store)
    assert "more may follow: --after 1450" in human
    last = json_of("events", "tail", "--after", "1450", "--limit", "150", store=store)
    assert [e["event_id"] for e in last] == ids[1450:]
    assert json_of("events", "tail", "--after", "1500", store=store) == []


def test_piped_tables_show_whole_ids(fifteen_hundred: tuple[Path, list[str]]) -> None:
    store, ids = fifteen_hundred
    out = succeeded("events", "tail", "--limit", "5", store=store)
    for event_id in ids[-5:]:
        assert len(event_id) == 36 and event_id in out
    for k in range(1495, 1500):
        assert f"musician-m-{k}" in out
    assert ids[-6] not in out
    assert "…" not in out


def on_a_terminal(*args: str, store: Path, columns: int) -> str:
    """What the command shows on a terminal `columns` wide (a pseudo-terminal), escape
    sequences removed."""
    leader, follower = pty.openpty()
    env = {**environment(store), "COLUMNS": str(columns), "TERM": "xterm"}
    try:
        done = subprocess.run([sys.executable, "-m", "mussikon", *args], env=env,
                              stdin=subprocess.DEVNULL, stdout=follower,
                              stderr=subprocess.PIPE, timeout=120, check=False)
        os.close(follower)
        assert done.returncode == 0, done.stderr
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.decode().replace("\r\n", "\n"))


def test_a_narrow_terminal_shows_whole_ids_too(fifteen_hundred: tuple[Path, list[str]]
                                                ) -> None:
    store, ids = fifteen_hundred
    shown = {}
    for columns in (80, 200):
        out = on_a_terminal("events", "tail", "--limit", "2", store=store, columns=columns)
        assert all(len(line) <= columns for line in out.splitlines()), out
        for k, event_id in zip((1498, 1499), ids[-2:], strict=True):
            assert event_id in out and f"musician-m-{k}" in out, out
        shown[columns] = out
    # two 36-character ids and more do not fit beside each other in 80 columns: one field
    # a line; in 200 they do: a table
    assert f"id: {ids[-1]}\n" in shown[80] and "stream: musician-m-1499\n" in shown[80]
    assert "│ musician-m-1499 │" in shown[200]


def test_tail_follow_prints_new_events_until_ctrl_c(tmp_path: Path) -> None:
    store = tmp_path / "follow.db"
    first, later = registrations(3, "early"), registrations(4, "late")

    async def scenario() -> tuple[list[dict[str, Any]], int | None, str]:
        async with opened(store) as app:
            await append_each(app, first)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mussikon", "events", "tail", "--follow", "--json",
            "--limit", "2", env=environment(store), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        lines: list[dict[str, Any]] = []

        async def read_until(count: int) -> None:
            while len(lines) < count:
                line = await process.stdout.readline()  # type: ignore[union-attr]
                assert line, "the command ended"
                lines.append(json.loads(line))

        try:
            await asyncio.wait_for(read_until(2), 30)
            async with opened(store) as app:
                for event in later:  # one append each, while it follows
                    await app.store.append(event.stream_id, [event], NO_STREAM)
            await asyncio.wait_for(read_until(6), 30)
        finally:
            process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(process.wait(), 30)
        return lines, code, (await process.stderr.read()).decode()

    lines, code, stderr = asyncio.run(scenario())
    assert [e["event_id"] for e in lines] == [str(e.id) for e in first[1:] + later]
    assert code == 0, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr


# --- events by-type and stream -------------------------------------------------------------


def test_by_type_and_stream_page_and_keep_their_one_line_errors(tmp_path: Path) -> None:
    store = tmp_path / "types.db"
    musicians = registrations(5)

    async def fill() -> list[RecordedEvent]:
        async with opened(store) as app:
            await append_each(app, musicians[:3])
            await app.marketplace.register_organizer(email="org@example.com", name="Org",
                                                     payment_source="tok_visa")
            await append_each(app, musicians[3:])
            await app.store.append("long-stream", registrations(5, "s"), NO_STREAM)
            return await everything(app)

    stored = asyncio.run(fill())
    by_type = ("events", "by-type", "MusicianRegisteredEvent")
    first = json_of(*by_type, "--limit", "2", store=store)
    assert [e["event_id"] for e in first] == [str(e.id) for e in musicians[:2]]
    after = str(first[-1]["position"])
    second = json_of(*by_type, "--limit", "2", "--after", after, store=store)
    assert [e["event_id"] for e in second] == [str(e.id) for e in musicians[2:4]]
    assert second[-1]["position"] == stored[4].position  # past the organizer's event
    rest = json_of(*by_type, "--after", str(second[-1]["position"]), store=store)
    assert [e["event_id"] for e in rest] == [str(musicians[4].id)] + [
        str(r.event.id) for r in stored[-5:]]
    assert "more may follow: --after" in succeeded(*by_type, "--limit", "2", store=store)

    page = json_of("events", "stream", "long-stream", "--after", "2", "--limit", "2",
                   store=store)
    assert [(e["version"], e["data"]["MusicianId"]) for e in page] == [(3, "s-2"), (4, "s-3")]
    shown = succeeded("events", "stream", "long-stream", "--limit", "1", store=store)
    assert '"MusicianId": "s-0"' in shown and "s-1" not in shown
    assert "more may follow: --after 1" in shown
    assert json_of("events", "stream", "long-stream", "--after", "5", store=store) == []

    assert "unknown event type 'NoSuchEvent'" in one_line_error(
        "events", "by-type", "NoSuchEvent", "--json", store=store)
    assert "--since 'yesterday' is not a date" in one_line_error(
        *by_type, "--since", "yesterday", store=store)
    assert one_line_error("events", "stream", "gig-nowhere", "--json", store=store) \
        == "error: no stream 'gig-nowhere'\n"


def test_events_commands_show_where_each_event_came_from(tmp_path: Path) -> None:
    store = tmp_path / "origins.db"
    ours, foreign = registrations(1, "ours")[0], registrations(1, "foreign")[0]

    async def fill() -> None:
        async with opened(store) as app:
            await app.store.append(ours.stream_id, [ours], NO_STREAM)
            await app.store.record_foreign(foreign, "rabbitmq")

    asyncio.run(fill())
    expected = {str(ours.id): "", str(foreign.id): "rabbitmq"}
    for command in (("events", "tail"), ("events", "by-type", "MusicianRegisteredEvent")):
        assert {e["event_id"]: e["origin"] for e in json_of(*command, store=store)} == expected
        assert "origin" in succeeded(*command, store=store)
    [shown] = json_of("events", "stream", foreign.stream_id, store=store)
    assert shown["origin"] == "rabbitmq"
    table = succeeded("events", "stream", foreign.stream_id, store=store)
    assert "origin" in table and "rabbitmq" in table
    assert "rabbitmq" not in succeeded("events", "stream", ours.stream_id, store=store)


def test_events_skipped_lists_what_readers_passed_by(tmp_path: Path) -> None:
    store = tmp_path / "skipped.db"
    [event] = registrations(1)

    async def fill() -> None:
        async with opened(store) as app:
            await app.store.append(event.stream_id, [event], NO_STREAM)
            [record] = await everything(app)
            await skip_unpublishable(app.documents, "relay", record, TOO_LARGE,
                                     "its message body is 300000 bytes")
            await skip_undecodable(app.documents, "analytics", UndecodableEventError(
                7, "gig-1", 2, "unknown event type 'GigMovedEvent'"))

    asyncio.run(fill())
    listed = json_of("events", "skipped", store=store)
    assert [(r["reader"], r["position"], r["kind"], r["event_id"], r["reason"])
            for r in listed] == [
        ("analytics", 7, "undecodable", None, "unknown event type 'GigMovedEvent'"),
        ("relay", 1, "unpublishable", str(event.id), "too-large")]
    table = succeeded("events", "skipped", store=store)
    assert str(event.id) in table and "too-large" in table and "GigMovedEvent" in table


# --- notifications -------------------------------------------------------------------------


def test_notifications_list_names_as_typed_and_pages(tmp_path: Path) -> None:
    store = tmp_path / "notifications.db"
    names = [EVIL_NAME, BROKEN_MARKUP_NAME, "Ana Díaz"]

    async def register() -> None:
        async with opened(store) as app:
            await app.start()
            for n, name in enumerate(names):
                await app.marketplace.register_musician(
                    email=f"musician{n}@example.com", name=name, genres=["jazz"],
                    location="Santo Domingo")
                await app.settle()  # one at a time: the list's order is the order of sending

    asyncio.run(register())
    human = succeeded("notifications", "list", store=store)
    assert f"{EVIL_NAME} <musician0@example.com>" in human
    assert f"{BROKEN_MARKUP_NAME} <musician1@example.com>" in human
    assert "\x1b" not in human  # no escape sequence at all, so no live link
    listed = json_of("notifications", "list", store=store)
    assert [n["recipient_name"] for n in listed] == names
    assert [n["number"] for n in listed] == [1, 2, 3]
    assert all(n["kind"] == "welcome" for n in listed)
    assert [n["recipient_name"] for n in json_of("notifications", "list", "--limit", "1",
                                                 store=store)] == names[2:]
    page = json_of("notifications", "list", "--after", "1", "--limit", "1", store=store)
    assert [(n["number"], n["recipient_name"]) for n in page] == [(2, BROKEN_MARKUP_NAME)]
    assert "more: --after 2" in succeeded("notifications", "list", "--after", "1", "--limit",
                                          "1", store=store)


# --- projections ---------------------------------------------------------------------------


def test_projections_status_counts_the_events_not_applied(tmp_path: Path) -> None:
    store = tmp_path / "lag.db"

    async def fill(events: list[DomainEvent], catch_up: bool) -> None:
        async with opened(store) as app:
            await append_each(app, events)
            if catch_up:
                for name in app.projections.projections:
                    await app.projections.catch_up(name)
                await app.projections.stop()  # and let go of the leases

    asyncio.run(fill(registrations(4), catch_up=True))
    asyncio.run(fill(registrations(3, "late"), catch_up=False))
    status = json_of("projections", "status", store=store)
    assert {s["name"] for s in status} == {"directory", "availability", "analytics",
                                                   "correlations"}
    assert all((s["position"], s["head"], s["lag"], s["lag_capped"]) == (4, 7, 3, False)
               for s in status), status
    assert "lag (events)" in succeeded("projections", "status", store=store)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `condition` (each call runs a command, so no pause between calls is needed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"


@contextmanager
def running_worker(store: Path) -> Iterator[subprocess.Popen[str]]:
    worker = subprocess.Popen([sys.executable, "-m", "mussikon", "worker"],
                              env=environment(store), text=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)


def test_rebuild_asks_first_refuses_beside_a_worker_and_says_what_it_did(
        tmp_path: Path) -> None:
    store = tmp_path / "rebuild.db"

    async def register() -> None:
        async with opened(store) as app:
            for n in range(3):
                await app.marketplace.register_musician(
                    email=f"m{n}@example.com", name=f"M {n}", genres=["jazz"], location="Cali")

    asyncio.run(register())
    refused = one_line_error("projections", "rebuild", "directory", store=store)
    assert "refused without --yes" in refused
    assert json_of("projections", "status", store=store)[0]["position"] == 0  # nothing done
    assert "no projection 'nope'" in one_line_error("projections", "rebuild", "nope", "--yes",
                                                    store=store)

    rebuilt = succeeded("projections", "rebuild", "directory", "--yes", store=store)
    assert rebuilt == "directory rebuilt from position 0 up to position 3 (3 events read)\n"

    with running_worker(store) as worker:
        def caught_up() -> bool:
            assert worker.poll() is None, worker.communicate()
            return all(s["lag"] == 0 for s in json_of("projections", "status", store=store))

        wait_until(caught_up)  # the worker applies the read models: it holds their leases
        busy = one_line_error("projections", "rebuild", "analytics", "--yes", store=store)
        assert "projection 'analytics' is being applied by another process" in busy
        assert "stop the workers" in busy
    rebuilt = succeeded("projections", "rebuild", "analytics", "--yes", store=store)
    assert rebuilt.startswith("analytics rebuilt from position 0 up to position ")


# --- the program ---------------------------------------------------------------------------


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    assert succeeded("--version", store=tmp_path / "unused.db") \
        == f"mussikon {version('mussikon')}\n"
    assert not (tmp_path / "unused.db").exists()
