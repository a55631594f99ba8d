"""The `mussikon` command on RabbitMQ, run as an operator runs it: `mussikon worker` stopped by
SIGTERM while a handler is in flight (a welcome email held at DATA by a slow SMTP server), and
`mussikon dlq list | show | replay | purge` on dead letters made for real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pamqp.commands import Basic

from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.ports.transport import DeadLetter
from tests.command_line import line_with
from tests.integration.rabbitmq_kit import BrokerNamespace, dotnet_publish, eventually
from tests.integration.worker_kit import (
    SlowMailServer,
    slow_mail_server,
    stop_with_a_handler_in_flight,
    terminate,
)

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[2]
RETRY_DELAYS = "0.2,0.4"
"""The broker's delayed retries the commands run with: FAST's, so the namespace's cleanup
deletes the retry queues they declare."""


@pytest.fixture
async def mail_server() -> AsyncIterator[SlowMailServer]:
    async with slow_mail_server() as box:
        yield box


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    # Not started: it only names the topology the commands declare, for the cleanup and for
    # the test to look into.
    namespace.transport(relay=False)
    yield namespace
    await namespace.cleanup()


@dataclass
class Command:
    """How the tests run `mussikon`: one SQLite store, the broker under the test's prefix."""

    store: Path
    broker: BrokerNamespace
    smtp_url: str

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
        return {**inherited, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1",
                "COLUMNS": "250", "MUSSIKON_STORE_URL": f"sqlite:///{self.store}",
                "MUSSIKON_BROKER_URL": self.broker.url,
                "MUSSIKON_RABBITMQ_PREFIX": self.broker.prefix,
                "MUSSIKON_RABBITMQ_RETRY_DELAYS": RETRY_DELAYS,
                "MUSSIKON_BUS_RETRY_DELAYS": "0.01",
                "MUSSIKON_POLL_INTERVAL": "0.02", "MUSSIKON_POLL_MAX_INTERVAL": "0.2",
                "MUSSIKON_SMTP_URL": self.smtp_url}

    async def run(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        """Run one command to its end: exit code, stdout, stderr."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mussikon", *args, cwd=self.store.parent,
            env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    @contextlib.asynccontextmanager
    async def running(self, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
        """A long-running command (the worker), killed on the way out if still running."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mussikon", *args, cwd=self.store.parent,
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def dead_letters(self) -> list[DeadLetter]:
        """The dead letters as the commands see them: the same store and broker (those in
        the dead-letter queue are moved into the store first)."""
        app = await open_app(Settings(store_url=f"sqlite:///{self.store}",
                                      broker_url=self.broker.url,
                                      rabbitmq_prefix=self.broker.prefix,
                                      rabbitmq_retry_delays=RETRY_DELAYS))
        try:
            await app.open_for_operations()
            return await app.transport.dead_letters()
        finally:
            await app.close()

    async def register_musician(self, name: str, email_address: str) -> str:
        """Register a musician in the store, as the API would (the worker publishes it)."""
        app = await open_app(Settings(store_url=f"sqlite:///{self.store}",
                                      broker_url="memory://"))
        try:
            return await app.marketplace.register_musician(
                email=email_address, name=name, genres=["jazz"], location="Santo Domingo")
        finally:
            await app.close()


@pytest.fixture
def mussikon(broker: BrokerNamespace, mail_server: SlowMailServer, tmp_path: Path) -> Command:
    return Command(tmp_path / "mussikon.db", broker, mail_server.url)


async def queued(broker: BrokerNamespace, queue: str) -> int:
    channel = await broker.channel()
    try:
        return (await channel.queue_declare(queue, passive=True)).message_count or 0
    finally:
        await channel.close()


async def test_sigterm_lets_the_worker_finish_the_email_in_flight_then_exit_cleanly(
        mussikon: Command, mail_server: SlowMailServer, broker: BrokerNamespace) -> None:
    await mussikon.register_musician("Ana Díaz", "ana@example.com")
    async with mussikon.running("worker") as worker:
        stopping, out, err = await stop_with_a_handler_in_flight(worker, mail_server)
    assert worker.returncode == 0, err
    assert "stopping: finishing messages in flight" in stopping
    assert "Traceback" not in out + err
    assert [m["To"] for m in mail_server.received] == ["Ana Díaz <ana@example.com>"]
    assert mail_server.attempts == 1

    # Acknowledged: nothing waits in any queue, and the store recorded the email as sent.
    topology = broker.transports[0].topology
    for queue in [*topology.event_queues(), *(s.queue for s in topology.retry_stages),
                  topology.dead_letter_queue]:
        assert await queued(broker, queue) == 0, queue
    db = await SqliteDatabase(str(mussikon.store)).open()
    try:
        sent = await SqliteDocumentStore(db).scan("notifications")
    finally:
        await db.close()
    assert [doc["recipient"] for _, doc in sent] == ["ana@example.com"]

    # A second worker sends the next welcome and not Ana's again.
    await mussikon.register_musician("Luis Pérez", "luis@example.com")
    async with mussikon.running("worker") as second:
        async def two_sent() -> bool:
            return len(mail_server.received) == 2

        await eventually(two_sent, 30)
        await terminate(second)
    assert [m["To"] for m in mail_server.received] == ["Ana Díaz <ana@example.com>",
                                                       "Luis Pérez <luis@example.com>"]
    assert mail_server.attempts == 2


async def test_dlq_commands_list_show_replay_and_purge_real_dead_letters(
        mussikon: Command, mail_server: SlowMailServer, broker: BrokerNamespace) -> None:
    mail_server.refuse = True  # the welcome email fails every time: a dead letter
    mail_server.release.set()
    await mussikon.register_musician("Ana Díaz", "ana@example.com")
    async with mussikon.running("worker") as worker:
        await line_with(worker.stdout, "worker running")
        await asyncio.to_thread(dotnet_publish, broker.url, f"{broker.prefix}mussikon.events",
                                "musician.registered", b"not json", "MusicianRegisteredEvent")

        async def dead_lettered(count: int) -> bool:
            return len(await mussikon.dead_letters()) == count

        await eventually(lambda: dead_lettered(2), 30)
        letters = {d.exception: d for d in await mussikon.dead_letters()}
        welcome, malformed = letters["NotificationError"], letters["WireFormatError"]

        code, out, err = await mussikon.run("dlq", "list")
        assert code == 0, err
        assert "2 dead letter(s)" in out
        assert welcome.id in out and malformed.id in out
        for text in ("musicians.on-registered", "MusicianRegisteredEvent", "NotificationError",
                     "handler-failed: cannot send welcome notification", "554",
                     "WireFormatError", "malformed: body is not valid JSON"):
            assert text in out, text

        code, out, err = await mussikon.run("dlq", "show", welcome.id)
        assert code == 0, err
        assert f"dead letter {welcome.id}" in out
        assert "NotificationError" in out
        assert "554 Transaction failed" in out
        assert '"Email": "ana@example.com"' in out  # the body
        assert mail_server.received == []

        # The mail server is back: the replayed letter is handled, the email goes out once.
        mail_server.refuse = False
        code, out, err = await mussikon.run("dlq", "replay", welcome.id)
        assert code == 0, err
        assert f"{welcome.id}: sent back" in out

        async def delivered() -> bool:
            return len(mail_server.received) == 1

        await eventually(delivered, 30)
        await eventually(lambda: dead_lettered(1), 30)
        assert [d.id for d in await mussikon.dead_letters()] == [malformed.id]

        # A malformed body cannot be fixed by trying again: it comes back under its id.
        code, out, err = await mussikon.run("dlq", "replay", "--all")
        assert code == 0, err
        assert f"{malformed.id}: sent back" in out

        async def back_again() -> bool:
            return [d.id for d in await mussikon.dead_letters()] == [malformed.id]

        await eventually(back_again, 30)

        for args in (["dlq", "show", "no-such-letter"], ["dlq", "replay", "no-such-letter"]):
            code, out, err = await mussikon.run(*args)
            assert code == 1, args
            assert err.strip() == "error: no dead letter 'no-such-letter'", args
            assert "Traceback" not in out + err

        code, out, err = await mussikon.run("dlq", "purge", "--yes")
        assert code == 0, err
        assert "purged 1" in out
        code, out, err = await mussikon.run("dlq", "list")
        assert code == 0, err
        assert "0 dead letter(s)" in out

        await terminate(worker)
    assert [m["To"] for m in mail_server.received] == ["Ana Díaz <ana@example.com>"]


async def test_dlq_commands_take_no_message_from_the_queues_and_publish_none(
        mussikon: Command, mail_server: SlowMailServer, broker: BrokerNamespace) -> None:
    """An operator looking at dead letters runs no worker: no consumer takes the messages
    waiting in the event queues, no relay publishes the store's unpublished events."""
    tools = broker.transports[0]
    topology = tools.topology
    mail_server.release.set()
    await tools.dead_letters()  # declares the topology, so the queues exist
    # Ana's registration is stored and not published (no relay ran): a worker's relay would
    # publish it, and its consumer would take it and send her a welcome email.
    await mussikon.register_musician("Ana Díaz", "ana@example.com")
    # A message already waiting in the event queue: a consumer would take it.
    app = await open_app(Settings(store_url=f"sqlite:///{mussikon.store}",
                                  broker_url="memory://"))
    try:
        [record] = await app.store.read_all(1, 10)
        body = app.codec.encode(record.event)
    finally:
        await app.close()
    queue = topology.queue("MusicianRegisteredEvent")
    await asyncio.to_thread(dotnet_publish, broker.url, topology.events_exchange,
                            topology.routing_key("MusicianRegisteredEvent"), body,
                            "MusicianRegisteredEvent")

    async def waiting() -> bool:
        return await queued(broker, queue) == 1

    await eventually(waiting, 10)

    for args in (["dlq", "list"], ["dlq", "show", "no-such-letter"],
                 ["dlq", "replay", "--all"], ["dlq", "purge", "--yes"], ["dlq", "list"]):
        code, out, err = await mussikon.run(*args)
        assert code == (1 if "no-such-letter" in args else 0), (args, err)
        assert "Traceback" not in out + err, args

    assert await queued(broker, queue) == 1  # still waiting: nothing consumed, none published
    for other in [*(s.queue for s in topology.retry_stages), topology.dead_letter_queue]:
        assert await queued(broker, other) == 0, other
    assert mail_server.attempts == 0
    db = await SqliteDatabase(str(mussikon.store)).open()
    try:
        documents = SqliteDocumentStore(db)
        assert await documents.checkpoint(tools.relay_name) == 0  # the relay never ran
        assert await documents.scan("notifications") == []
    finally:
        await db.close()


async def test_dlq_commands_page_resolve_delete_refuse_and_report_on_rabbitmq(
        mussikon: Command, mail_server: SlowMailServer, broker: BrokerNamespace) -> None:
    """Real dead letters (welcome emails the mail server refused) paged through, named by the
    start of their ids, one deleted, purge refused without --yes, and a letter the broker
    cannot take back (its queue is gone) reported by replay, which then exits 1."""
    tools = broker.transports[0]
    mail_server.refuse = True
    mail_server.release.set()
    for n in range(4):
        await mussikon.register_musician(f"Musician {n}", f"m{n}@example.com")
    async with mussikon.running("worker") as worker:
        await line_with(worker.stdout, "worker running")

        async def dead_lettered() -> bool:
            return len(await mussikon.dead_letters()) == 4

        await eventually(dead_lettered, 30)
        await terminate(worker)
    letters = [d.id for d in await mussikon.dead_letters()]

    seen: list[str] = []
    after: list[str] = []
    while True:
        code, out, err = await mussikon.run("dlq", "list", "--limit", "3", *after, "--json")
        assert code == 0, err
        document = json.loads(out)
        seen += [d["id"] for d in document["dead_letters"]]
        if document["next_after"] is None:
            break
        after = ["--after", document["next_after"]]
    assert seen == letters
    assert [d.id for d in await mussikon.dead_letters()] == letters  # nothing moved

    code, out, err = await mussikon.run("dlq", "list", "--limit", "2")
    assert code == 0, err
    assert letters[0] in out and letters[1] in out and letters[2] not in out
    assert f"--after {letters[1]}" in out

    code, out, err = await mussikon.run("dlq", "show", letters[2][:12])
    assert code == 0, err
    assert f"dead letter {letters[2]}" in out
    code, out, err = await mussikon.run("dlq", "show", "no-such-letter", "--json")
    assert (code, out, err) == (1, "", "error: no dead letter 'no-such-letter'\n")

    code, out, err = await mussikon.run("dlq", "delete", letters[1][:12])  # no --yes
    assert code == 1 and "refused without --yes" in err
    code, out, err = await mussikon.run("dlq", "delete", letters[1][:12], "--yes")
    assert (code, out) == (0, f"deleted {letters[1]}\n"), err
    assert [d.id for d in await mussikon.dead_letters()] == [letters[0], *letters[2:]]

    code, out, err = await mussikon.run("dlq", "purge")
    assert code == 1 and "refused without --yes" in err
    assert len(await mussikon.dead_letters()) == 3

    # A letter whose queue no longer exists (its .NET service was retired).
    stray = uuid.uuid4().hex
    channel = await broker.channel()
    try:
        await channel.basic_publish(b"{}", routing_key=tools.topology.dead_letter_queue,
                                    properties=Basic.Properties(headers={
                                        "x-dead-letter-id": stray,
                                        "x-original-queue": f"{broker.prefix}retired.queue",
                                        "x-failure-reason": "handler-failed"}))
    finally:
        await channel.close()
    code, out, err = await mussikon.run("dlq", "replay", stray[:12])
    assert code == 1
    assert err == (f"error: dead letter {stray} cannot be sent back to queue "
                   f"'{broker.prefix}retired.queue': the broker refused it (NO_ROUTE)\n")

    mail_server.refuse = False
    code, out, err = await mussikon.run("dlq", "replay", "--all")
    assert code == 1
    assert out.splitlines() == [
        *(f"{letter}: sent back to its queue, for a worker to handle (it returns here if it "
          "fails again)" for letter in (letters[0], *letters[2:])),
        f"{stray}: not sent back: dead letter {stray} cannot be sent back to queue "
        f"'{broker.prefix}retired.queue': the broker refused it (NO_ROUTE)"]
    assert err == "error: 1 of 4 dead letters could not be sent back\n"
    assert [d.id for d in await mussikon.dead_letters()] == [stray]
    queue = tools.topology.queue("MusicianRegisteredEvent")
    assert await queued(broker, queue) == 3  # back in their queue, for the next worker
