"""Shared fixtures: service URLs that skip (or fail, under MUSSIKON_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from mussikon.adapters.store.cosmos.account import CosmosAccount
    from tests.servicebus_peer import ServiceBusPeer

POSTGRES_URL = os.environ.get("MUSSIKON_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("MUSSIKON_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


HARD_TIMEOUT_FACTOR = 2.5
"""A test still running this many times pytest-timeout's limit (the `timeout` in
pyproject.toml) ends the session, every thread's stack printed. pytest-timeout's signal
interrupts Python code once: a test stuck after it (in a teardown awaiting a broker that no
longer answers, or in C code that holds the interpreter) would otherwise hang the session
until CI kills it, with nothing printed."""

_real_stderr: int | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _real_stderr  # noqa: PLW0603 (one descriptor for the whole session)
    _real_stderr = os.dup(2)  # output capture is not on yet: this is the terminal's stderr


def pytest_unconfigure(config: pytest.Config) -> None:
    if _real_stderr is not None:
        os.close(_real_stderr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    limit = float(item.config.getini("timeout") or 0)
    if limit <= 0 or _real_stderr is None:
        return (yield)
    faulthandler.dump_traceback_later(limit * HARD_TIMEOUT_FACTOR, exit=True,
                                      file=_real_stderr)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> str:
    """The URL of a service a test needs: skip visibly if it is down, fail if CI requires it."""
    if _reachable(url):
        return url
    message = f"{name} is not reachable at {urlsplit(url).netloc.split('@')[-1]}"
    if os.environ.get("MUSSIKON_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (MUSSIKON_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> str:
    """A reachable PostgreSQL server."""
    return require_service("PostgreSQL", POSTGRES_URL)


@pytest.fixture
def rabbitmq_url() -> str:
    """A reachable RabbitMQ broker."""
    return require_service("RabbitMQ", RABBITMQ_URL)


@pytest.fixture
def unique_name() -> str:
    """A short unique name, for schemas, exchanges and queues that tests must not share."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def servicebus_peer() -> Iterator[ServiceBusPeer]:
    """A local Service Bus peer on a free port, with no entities yet (create them on it) and
    short locks (2 s); stopped after the test, failing it if the peer itself failed."""
    from tests.servicebus_peer import EntityOptions, ServiceBusPeer

    with ServiceBusPeer(defaults=EntityOptions(lock_duration=2.0)) as peer:
        yield peer


SERVICEBUS_CONNECTION = "MUSSIKON_TEST_SERVICEBUS_CONNECTION"


@pytest.fixture(params=[pytest.param("peer", marks=pytest.mark.servicebus),
                        pytest.param("live", marks=pytest.mark.servicebus_live)])
def servicebus_connection(request: pytest.FixtureRequest) -> Iterator[str]:
    """The connection string of a namespace the Service Bus tests provision and use: the local
    peer's (`servicebus_peer`; no settle of the test may fall back to `$management`), or the
    real namespace's that MUSSIKON_TEST_SERVICEBUS_CONNECTION holds, its key with the Manage
    right: skipped without it, whatever MUSSIKON_REQUIRE_SERVICES says (a cloud account is not
    a local service)."""
    if request.param == "peer":
        peer: ServiceBusPeer = request.getfixturevalue("servicebus_peer")
        yield peer.connection_string
        assert peer.management_settlements == 0, "a settle fell back to $management"
        return
    connection = os.environ.get(SERVICEBUS_CONNECTION)
    if not connection:
        pytest.skip(f"{SERVICEBUS_CONNECTION} is not set: no real Service Bus namespace to "
                    "test against")
    yield connection


@pytest.fixture
async def servicebus_topic(servicebus_connection: str) -> AsyncIterator[str]:
    """A topic name of this test's own on the namespace (`mussikon-test-<random>`); the topic,
    if the test created it, is deleted afterwards with its subscriptions."""
    from azure.core.exceptions import ResourceNotFoundError

    from tests.integration.servicebus_kit import administration

    name = f"mussikon-test-{uuid.uuid4().hex[:12]}"
    yield name
    async with administration(servicebus_connection) as admin:
        with contextlib.suppress(ResourceNotFoundError):
            await admin.delete_topic(name)


COSMOS_SERVER_DIR = Path(__file__).parent / "cosmos_server"
COSMOS_KEY = ("C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw"
              "/Jw==")
"""Any base64 key opens the local server: the Cosmos DB emulator's well-known one."""


@pytest.fixture(scope="session")
def cosmos_endpoint() -> Iterator[str]:
    """The local Cosmos DB server (tests/cosmos_server, installed by `make cosmos-server`) on
    a free port, for the whole session: `https://127.0.0.1:PORT/`, its certificate
    self-signed. Skips (fails under MUSSIKON_REQUIRE_SERVICES=1) when it is not installed."""
    script = COSMOS_SERVER_DIR / "server.js"
    node = shutil.which("node")
    if node is None or not (COSMOS_SERVER_DIR / "node_modules" / "@vercel").is_dir():
        message = "the local Cosmos DB server is not installed (make cosmos-server; needs npm)"
        if os.environ.get("MUSSIKON_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} (MUSSIKON_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([node, str(script), str(port)], cwd=COSMOS_SERVER_DIR,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _reachable(f"tcp://127.0.0.1:{port}"):
            if process.poll() is not None or time.monotonic() > deadline:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(f"the local Cosmos DB server did not start: {error[-500:]}")
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def cosmos_account(cosmos_endpoint: str) -> AsyncIterator[CosmosAccount]:
    """An account on the local server with a database of its own, deleted afterwards."""
    from mussikon.adapters.store.cosmos.account import open_account

    database = f"t{uuid.uuid4().hex[:12]}"
    opened = await open_account(cosmos_endpoint, COSMOS_KEY, database=database,
                                events_container="Events", documents_container="Documents",
                                verify_tls=False)
    try:
        yield opened
    finally:
        await opened.client.delete_database(database)
        await opened.close()


class MailBox:
    """What an SMTP server on loopback accepted: each email's recipients and Message-ID."""

    def __init__(self) -> None:
        self.recipients: list[str] = []
        self.message_ids: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients.extend(envelope.rcpt_tos)
        for line in envelope.content.decode("utf-8", "replace").splitlines():
            if line.lower().startswith("message-id:"):
                self.message_ids.append(line.split(":", 1)[1].strip())
        return "250 Message accepted for delivery"


@pytest.fixture
async def smtp_server() -> AsyncIterator[tuple[MailBox, str]]:
    """An SMTP server on loopback (aiosmtpd) and its `smtp://` URL."""
    from aiosmtpd.smtp import SMTP

    box = MailBox()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(box, hostname="localhost"), "127.0.0.1", 0)
    try:
        yield box, f"smtp://127.0.0.1:{server.sockets[0].getsockname()[1]}?timeout=5"
    finally:
        server.close()
        await server.wait_closed()
