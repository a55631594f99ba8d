"""The demo flow on the production backends: PostgreSQL for the store, RabbitMQ for the
transport, and both together."""

from __future__ import annotations

from pathlib import Path

import aiormq
import asyncpg
from rich.console import Console

from mussikon.adapters.clock import OffsetClock
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.entrypoints.demo import run_demo


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
