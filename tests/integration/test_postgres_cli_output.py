"""`mussikon events tail` and `mussikon projections status` on PostgreSQL, whose positions are
far apart (transaction id × 2^20 + index): the tail still shows the newest events, and the lag
is still a count of events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.event_store import NO_STREAM
from tests.contract.store_adapters import StoresUnderTest, postgres_stores

pytestmark = pytest.mark.postgres


@pytest.fixture
async def stores(postgres_url: str, unique_name: str) -> AsyncIterator[StoresUnderTest]:
    async with postgres_stores(postgres_url, unique_name) as opened:
        yield opened


def settings(url: str, schema: str) -> Settings:
    return Settings(store_url=url, postgres_schema=schema, broker_url="memory://")


def json_of(url: str, schema: str, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
    env |= {"MUSSIKON_STORE_URL": url, "MUSSIKON_POSTGRES_SCHEMA": schema,
            "MUSSIKON_BROKER_URL": "memory://"}
    done = subprocess.run([sys.executable, "-m", "mussikon", *args, "--json"], env=env,
                          text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def append_one_by_one(stores: StoresUnderTest, n: int, tag: str) -> list[str]:
    """n registrations, each in its own append (its own transaction); their ids."""
    ids = []
    for k in range(n):
        event = MusicianRegisteredEvent(musician_id=f"{tag}-{k}", email=f"{tag}{k}@example.com",
                                        name=f"Musician {k}", genres=("salsa",), location="Cali")
        await stores.events.append(event.stream_id, [event], NO_STREAM)
        ids.append(str(event.id))
    await stores.settle()
    return ids


async def test_tail_shows_all_57_newest_events(postgres_url: str, unique_name: str,
                                               stores: StoresUnderTest) -> None:
    ids = await append_one_by_one(stores, 57, "m")
    tail = json_of(postgres_url, unique_name, "events", "tail", "--limit", "57")
    assert [e["event_id"] for e in tail] == ids
    positions = [e["position"] for e in tail]
    assert positions == sorted(positions) and positions[-1] - positions[0] > 2**20
    newest = json_of(postgres_url, unique_name, "events", "tail")
    assert [e["event_id"] for e in newest] == ids[-20:]
    page = json_of(postgres_url, unique_name, "events", "tail", "--after", str(positions[9]),
                   "--limit", "5")
    assert [e["event_id"] for e in page] == ids[10:15]


async def test_status_lag_is_the_number_of_events_not_applied(
        postgres_url: str, unique_name: str, stores: StoresUnderTest) -> None:
    await append_one_by_one(stores, 4, "applied")
    app = await open_app(settings(postgres_url, unique_name))
    try:
        for name in app.projections.projections:
            await app.projections.catch_up(name)
        await app.projections.stop()  # and let go of the leases
    finally:
        await app.close()
    await append_one_by_one(stores, 3, "waiting")
    status = json_of(postgres_url, unique_name, "projections", "status")
    assert {s["name"] for s in status} == {"directory", "availability", "analytics",
                                                   "correlations"}
    for s in status:
        assert (s["lag"], s["lag_capped"]) == (3, False), s
        assert s["head"] - s["position"] > 3 * 2**20  # what the lag showed before
