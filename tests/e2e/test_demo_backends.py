"""The demo flow on the production backends: PostgreSQL for the store, RabbitMQ for the
transport, and both together; and the `mussikon demo` command there, on a schema and
exchanges of its own."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import aiormq
import asyncpg
import pytest
from rich.console import Console

from mussikon.adapters.clock import OffsetClock
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.entrypoints.demo import run_demo
from mussikon.wire import EventCodec


async def test_the_demo_flow_on_postgresql(postgres_url: str, unique_name: str) -> None:
    app = await open_app(Settings(store_url=postgres_url, postgres_schema=unique_name,
                                  poll_interval=0.01), OffsetClock())
    try:
        out = await run_demo(app, Console(quiet=True))
        assert len(out.contracts) >= 3
    finally:
        await app.close()
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        finally:
            await conn.close()


async def _run_demo_on_rabbitmq(settings: Settings) -> None:
    app = await open_app(settings, OffsetClock())
    try:
        out = await run_demo(app, Console(quiet=True))
        assert len(out.contracts) >= 3
    finally:
        await app.close()
        transport = app.transport
        assert isinstance(transport, RabbitMqTransport)
        connection = await aiormq.connect(settings.broker_url)
        try:
            await transport.topology.delete(await connection.channel())
        finally:
            await connection.close()


async def test_the_demo_flow_on_rabbitmq_and_sqlite(rabbitmq_url: str, unique_name: str,
                                                    tmp_path: Path) -> None:
    await _run_demo_on_rabbitmq(Settings(
        store_url=f"sqlite:///{tmp_path / 'demo.db'}", broker_url=rabbitmq_url,
        rabbitmq_prefix=f"{unique_name}.", poll_interval=0.01))


async def test_the_demo_flow_on_rabbitmq_and_postgresql(rabbitmq_url: str, postgres_url: str,
                                                        unique_name: str) -> None:
    try:
        await _run_demo_on_rabbitmq(Settings(
            store_url=postgres_url, postgres_schema=unique_name, broker_url=rabbitmq_url,
            rabbitmq_prefix=f"{unique_name}.", poll_interval=0.01))
    finally:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        finally:
            await conn.close()


def _mussikon(*args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
    env.update({"MUSSIKON_BROKER_URL": "memory://", "COLUMNS": "250", **variables})
    return subprocess.run([sys.executable, "-m", "mussikon", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, text=True, capture_output=True,
                          timeout=120, check=False)


async def _events_in(postgres_url: str, schema: str) -> int | None:
    """How many events the schema holds; None if it does not exist."""
    conn = await asyncpg.connect(postgres_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            return None
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".events'))
    finally:
        await conn.close()


async def _drop_schemas(postgres_url: str, *schemas: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_the_demo_command_on_postgresql_keeps_to_a_schema_of_its_own(
        postgres_url: str, unique_name: str, tmp_path: Path) -> None:
    own, foreign = f"{unique_name}_demo", f"{unique_name}f_demo"
    variables = {"MUSSIKON_STORE_URL": postgres_url, "MUSSIKON_POSTGRES_SCHEMA": unique_name}
    try:
        ran = await asyncio.to_thread(_mussikon, "demo", cwd=tmp_path, **variables)
        assert ran.returncode == 0, ran.stderr
        assert f"schema {own}" in " ".join(ran.stdout.split("\n\n")[0].split())
        assert await _events_in(postgres_url, unique_name) is None  # never even opened
        after_one_run = await _events_in(postgres_url, own)
        assert after_one_run
        command = shlex.split(next(line for line in ran.stdout.splitlines()
                                   if "mussikon sagas show" in line))
        told = dict(word.split("=", 1) for word in command[:-4])
        assert told == {**variables, "MUSSIKON_POSTGRES_SCHEMA": own}
        saga_id = re.findall(r"^(booking-\S+)  ", ran.stdout, re.M)[0]
        shown = await asyncio.to_thread(_mussikon, "sagas", "show", saga_id, cwd=tmp_path,
                                        **told)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(saga_id)
        fresh = await asyncio.to_thread(_mussikon, "demo", "--fresh", "--yes", "--quiet",
                                        cwd=tmp_path, **variables)
        assert fresh.returncode == 0, fresh.stderr
        after_fresh = await _events_in(postgres_url, own)
        assert after_fresh and after_fresh < after_one_run * 3 // 2  # wiped, then one run
        # A schema named like the demo's that holds events the demo did not write.
        app = await open_app(Settings(store_url=postgres_url, postgres_schema=foreign))
        try:
            await app.marketplace.register_organizer(email="real@venue.example", name="Real")
        finally:
            await app.close()
        refused = await asyncio.to_thread(
            _mussikon, "demo", "--fresh", "--yes", cwd=tmp_path,
            MUSSIKON_STORE_URL=postgres_url, MUSSIKON_POSTGRES_SCHEMA=f"{unique_name}f")
        assert refused.returncode == 1
        assert "holds events the demo did not write" in refused.stderr
        assert await _events_in(postgres_url, foreign) == 1
    finally:
        await _drop_schemas(postgres_url, own, foreign)


@pytest.mark.rabbitmq
async def test_the_demo_command_on_rabbitmq_uses_exchanges_and_queues_of_its_own(
        rabbitmq_url: str, unique_name: str, tmp_path: Path) -> None:
    prefix, shared = f"{unique_name}.", f"{unique_name}.shared.events"
    ran = await asyncio.to_thread(
        _mussikon, "demo", "--quiet", cwd=tmp_path, MUSSIKON_STORE_URL="memory://",
        MUSSIKON_BROKER_URL=rabbitmq_url, MUSSIKON_RABBITMQ_PREFIX=prefix,
        MUSSIKON_RABBITMQ_EVENTS_EXCHANGE=shared)
    assert ran.returncode == 0, ran.stderr
    own = Topology(EventCodec().event_types, prefix=f"{prefix}demo.",
                   delayed_retry_delays=Settings().delayed_retry_delays)
    connection = await aiormq.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(own.events_exchange, passive=True)
        # Neither this prefix's exchange nor the one shared with other services.
        for exchange in (f"{prefix}mussikon.events", shared):
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await (await connection.channel()).exchange_declare(exchange, passive=True)
    finally:
        await own.delete(await connection.channel())
        await connection.close()
