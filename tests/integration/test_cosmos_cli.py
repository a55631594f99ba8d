"""The command line on Cosmos DB (the local server, `make cosmos-server`): what needs a global
order says where a reader stands per feed range, or refuses in one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from mussikon.bootstrap import open_app
from mussikon.config import Settings
from tests.command_line import environment, line_with, mussikon, one_error_line
from tests.conftest import COSMOS_KEY

pytestmark = pytest.mark.cosmos


@pytest.fixture
async def settings(cosmos_endpoint: str, unique_name: str) -> AsyncIterator[Settings]:
    yield Settings(store_url=f"AccountEndpoint={cosmos_endpoint};AccountKey={COSMOS_KEY};",
                   cosmos_database=unique_name, cosmos_verify_tls=False,
                   broker_url="memory://", smtp_url="")
    async with CosmosClient(cosmos_endpoint, credential=COSMOS_KEY,
                            connection_verify=False) as client:
        with contextlib.suppress(CosmosResourceNotFoundError):  # the demo writes elsewhere
            await client.delete_database(unique_name)


def env(settings: Settings) -> dict[str, str]:
    return environment(store_url=settings.store_url, cosmos_database=settings.cosmos_database,
                       cosmos_verify_tls="false", broker_url="memory://", smtp_url="")


async def test_projections_status_tells_each_range_behind_then_caught_up(
        settings: Settings, tmp_path: Path) -> None:
    app = await open_app(settings)
    try:
        await app.marketplace.register_musician(email="ana@example.com", name="Ana",
                                                genres=["jazz"], location="Cali")
    finally:
        await app.close()
    result = mussikon("projections", "status", "--json", cwd=tmp_path, env=env(settings))
    assert result.returncode == 0, result.stderr
    before = json.loads(result.stdout)
    assert {s["name"] for s in before} >= {"directory"}
    assert all(s["checkpoint"].startswith(f"projection:{s['name']}@") for s in before)
    assert not all(s["caught_up"] for s in before)  # the registration is in some range
    app = await open_app(settings)
    try:
        for name in app.projections.projections:
            await app.projections.catch_up(name)
    finally:
        await app.close()
    result = mussikon("projections", "status", cwd=tmp_path, env=env(settings))
    assert result.returncode == 0, result.stderr
    assert "caught up" in result.stdout and "behind" not in result.stdout
    after = json.loads(mussikon("projections", "status", "--json", cwd=tmp_path,
                                env=env(settings)).stdout)
    assert all(s["caught_up"] for s in after)


async def test_events_tail_without_follow_refuses_in_one_line(
        settings: Settings, tmp_path: Path) -> None:
    app = await open_app(settings)
    await app.close()
    for args in ((), ("--after", "3", "--follow")):
        line = one_error_line(mussikon("events", "tail", *args, cwd=tmp_path,
                                       env=env(settings)))
        assert "Cosmos DB does not keep a global order" in line and "--follow" in line


async def test_events_tail_follow_prints_what_is_written_after_it_started(
        settings: Settings, tmp_path: Path) -> None:
    """The store is empty when it starts: the local server answers a range's first read,
    not those with a token (tests/unit/test_cosmos_feed.py reads on from a token)."""
    app = await open_app(settings)
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mussikon", "events", "tail", "--follow", "--json", cwd=tmp_path,
        env=env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert "from now (Ctrl-C ends)" in await line_with(tail.stderr, "following")
        musician = await app.marketplace.register_musician(
            email="ana@example.com", name="Ana", genres=["jazz"], location="Cali")
        line = await line_with(tail.stdout, "MusicianRegisteredEvent")
        event = json.loads(line)
        assert event["stream_id"] == f"musician-{musician}" and event["version"] == 1
        tail.send_signal(signal.SIGINT)
        await asyncio.wait_for(tail.wait(), 30)
        assert tail.returncode == 0
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
        await app.close()


async def test_the_demo_runs_on_cosmos_db_in_a_database_of_its_own(
        settings: Settings, cosmos_endpoint: str, tmp_path: Path) -> None:
    demo_env = {**env(settings), "MUSSIKON_POLL_INTERVAL": "0.01"}
    try:
        result = mussikon("demo", cwd=tmp_path, env=demo_env, timeout=180)
    finally:
        async with CosmosClient(cosmos_endpoint, credential=COSMOS_KEY,
                                connection_verify=False) as client:
            databases = [d["id"] async for d in client.list_databases()]
            for name in databases:
                if name == f"{settings.cosmos_database}-demo":
                    await client.delete_database(name)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert f"database {settings.cosmos_database}-demo" in " ".join(result.stdout.split())
    assert "All expected outcomes happened." in result.stdout
    assert f"{settings.cosmos_database}-demo" in databases and settings.cosmos_database \
        not in databases  # the configured database is left alone
    # the timeline: every event the change feed gave since the demo began, by stream and version
    told = re.search(r"these are the (\d+) events its change\s+feed gave", result.stdout)
    assert told is not None
    rows = re.findall(r"^\S+-[0-9a-f-]{36} v\d+  \d\d:\d\d:\d\d\.\d{3}  \w+Event$",
                      result.stdout, re.MULTILINE)
    assert len(rows) == int(told.group(1)) >= 50
