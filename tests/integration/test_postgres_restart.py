"""PostgreSQL restarted under load: appends in flight fail with a retryable error, none is half
written, and the store reconnects by itself once the server is back."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest

from mussikon.adapters.store.postgres import open_postgres
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.event_store import NO_STREAM, RecordedEvent, StoreUnavailable
from tests.polling import eventually


def restart_command() -> list[str]:
    """How to restart the local cluster, or skip (visibly) where this machine cannot."""
    clusters = sorted(p.name for p in Path("/etc/postgresql").glob("*")) \
        if Path("/etc/postgresql").is_dir() else []
    if shutil.which("pg_ctlcluster") is None or not clusters or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster on this machine")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main", "restart",
            "-m", "fast"]


def registered(tag: str) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=tag, email=f"{tag}@example.com", name=tag,
                                   genres=("Jazz",), location="Santiago")


async def wait_for_server(url: str, timeout: float = 60.0) -> None:
    async def accepts_connections() -> bool:
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    await eventually(accepts_connections, timeout, interval=0.2)


async def test_a_restart_fails_appends_cleanly_and_the_store_reconnects(
        postgres_url: str, unique_name: str) -> None:
    command = restart_command()
    events, _ = await open_postgres(postgres_url, unique_name, pool_size=4)
    batches: dict[str, list[MusicianRegisteredEvent]] = {}
    appended: list[str] = []
    failed: list[str] = []
    server_back = asyncio.Event()
    try:
        async def writer(w: int) -> None:
            n = 0
            while not server_back.is_set():
                stream = f"w{w}-{n}"
                n += 1
                batches[stream] = [registered(f"{stream}-{k}") for k in range(3)]
                try:
                    await events.append(stream, batches[stream], NO_STREAM)
                except StoreUnavailable:
                    failed.append(stream)
                    await asyncio.sleep(0.05)  # the server is down: do not spin
                else:
                    appended.append(stream)

        writers = [asyncio.create_task(writer(w)) for w in range(4)]
        await eventually(lambda: len(appended) >= 20, 30, what="appends before the restart")
        restarted = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                            text=True, timeout=120, check=False)
        assert restarted.returncode == 0, restarted.stderr
        await wait_for_server(postgres_url)
        after_restart = await events.append("after", [registered("after")], NO_STREAM)
        server_back.set()
        await asyncio.gather(*writers)

        assert after_restart == 1  # the pool reconnected by itself
        assert failed, "the restart should have cut some appends short"
        for stream in batches:  # whole or absent, never half
            assert await events.stream_version(stream) in (0, 3)
        for stream in failed:  # retrying the same events is safe
            assert await events.append(stream, batches[stream], NO_STREAM) == 3
        everything: list[RecordedEvent] = []

        async def every_event_in_the_global_order() -> bool:
            everything.clear()
            position = 1
            while batch := await events.read_all(position, 1000):
                everything.extend(batch)
                position = batch[-1].position + 1
            return len(everything) >= 3 * len(batches) + 1

        # A transaction open elsewhere in the cluster holds the global order back a while.
        await eventually(every_event_in_the_global_order)
        assert len(everything) == 3 * len(batches) + 1
    finally:
        await events.close()
        await wait_for_server(postgres_url)
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        finally:
            await conn.close()
