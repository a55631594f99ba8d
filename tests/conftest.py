"""Shared fixtures: service URLs that skip (or fail, under MUSSIKON_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from tests.servicebus_peer import ServiceBusPeer

POSTGRES_URL = os.environ.get("MUSSIKON_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("MUSSIKON_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


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
