"""The demo flow on the production backends: PostgreSQL for the store."""

from __future__ import annotations

import asyncpg
from rich.console import Console

from mussikon.bootstrap import open_app
from mussikon.clock import OffsetClock
from mussikon.config import Settings
from mussikon.demo import run_demo


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
