"""The SQLite store runs statements on the event loop's thread; a task that runs many of them in
a row must still let the other tasks run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.event_store import NO_STREAM


async def test_back_to_back_operations_let_other_tasks_run(tmp_path: Path) -> None:
    db = await SqliteDatabase(str(tmp_path / "e.db"), "OFF").open()
    store = SqliteEventStore(db)
    ticks: list[float] = []
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        start, cpu_start = loop.time(), time.thread_time()
        for n in range(300):
            event = MusicianRegisteredEvent(musician_id=f"m-{n}", email="a@example.com",
                                            name="Ana", genres=("jazz",), location="Santo Domingo")
            await store.append(f"musician-m-{n}", [event], NO_STREAM)
        # Time this thread ran: a machine busy elsewhere stretches the wall-clock time, not this.
        elapsed = time.thread_time() - cpu_start
    finally:
        ticking.cancel()
        await db.close()

    during = [t for t in ticks if t >= start]
    # at least one turn of the ticker for every YIELD_EVERY of back-to-back appends
    assert len(during) >= int(elapsed / SqliteDatabase.YIELD_EVERY) // 2
    assert len(during) >= 2
