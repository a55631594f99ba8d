"""The commands that only look, on PostgreSQL: no schema is created or migrated for them, and
their connections cannot write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mussikon.adapters.store.postgres import MIGRATIONS
from mussikon.bootstrap import ConfigurationError, open_app
from mussikon.config import Settings
from tests.command_line import environment, mussikon, one_error_line

pytestmark = pytest.mark.postgres


@pytest.fixture
async def schema(postgres_url: str, unique_name: str) -> AsyncIterator[str]:
    """A schema name nobody uses, dropped afterwards."""
    yield unique_name
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
    finally:
        await conn.close()


async def _exists(url: str, schema: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema))
    finally:
        await conn.close()


async def test_commands_that_only_look_create_no_schema(postgres_url: str, schema: str,
                                                        tmp_path: Path) -> None:
    env = environment(store_url=postgres_url, postgres_schema=schema)
    for args in (("events", "tail"), ("projections", "status"), ("sagas", "list"),
                 ("notifications", "list"), ("dlq", "list")):
        result = await asyncio.to_thread(mussikon, *args, cwd=tmp_path, env=env)
        line = one_error_line(result)
        assert line == (f"error: no store at {postgres_url} in schema {schema!r} "
                        "(MUSSIKON_STORE_URL, MUSSIKON_POSTGRES_SCHEMA)"), args
        assert not await _exists(postgres_url, schema), args

    migrated = await asyncio.to_thread(mussikon, "db", "migrate", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    listed = await asyncio.to_thread(mussikon, "events", "tail", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr


async def test_a_read_only_application_cannot_write_nor_read_an_older_schema(
        postgres_url: str, schema: str) -> None:
    settings = Settings(store_url=postgres_url, postgres_schema=schema)
    app = await open_app(settings)  # creates and migrates the schema
    await app.close()

    reader = await open_app(settings, read_only=True)
    try:
        assert await reader.store.head_position() == 0
        with pytest.raises(Exception, match="read-only transaction"):
            await reader.marketplace.register_musician(
                email="ana@example.com", name="Ana Díaz", genres=["jazz"],
                location="Santo Domingo")
    finally:
        await reader.close()

    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DELETE FROM "{schema}".schema_version WHERE version > 1')
    finally:
        await conn.close()
    with pytest.raises(ConfigurationError, match=f"schema version 1 of {len(MIGRATIONS)}: "
                                                 "migrate it first"):
        await open_app(settings, read_only=True)
