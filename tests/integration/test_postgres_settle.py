"""`App.settle` on PostgreSQL waits for what was committed, even while a transaction that
began earlier elsewhere in the cluster keeps it from being readable."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mussikon.application.projections.directory import PROFILES
from mussikon.bootstrap import open_app
from mussikon.config import Settings

pytestmark = pytest.mark.postgres


async def test_settle_waits_for_a_commit_held_back_by_an_older_transaction(
        postgres_url: str, unique_name: str) -> None:
    app = await open_app(Settings(store_url=postgres_url, postgres_schema=unique_name,
                                  broker_url="memory://", smtp_url=""))
    blocker = await asyncpg.connect(postgres_url)
    try:
        await app.start()
        await blocker.execute("BEGIN")
        await blocker.fetchval("SELECT pg_current_xact_id()")  # older than the next append
        musician = await app.marketplace.register_musician(
            email="ana@example.com", name="Ana", genres=["jazz"], location="Cali")
        settling = asyncio.ensure_future(app.settle(timeout=30))
        with pytest.raises(TimeoutError):  # bounded wait for something that must not happen
            await asyncio.wait_for(asyncio.shield(settling), 0.5)
        assert await app.documents.get(PROFILES, musician) is None
        await blocker.execute("COMMIT")
        await settling
        profile = await app.documents.get(PROFILES, musician)
        assert profile is not None and profile["name"] == "Ana"
    finally:
        await blocker.close()
        await app.close()
        admin = await asyncpg.connect(postgres_url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        await admin.close()
