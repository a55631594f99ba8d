"""What every chaos scenario does: a store and a broker namespace of its own, worker and relay
processes, the workload from a process of its own, faults while it runs, then waiting until
the work is done and counting it (`audit`). The scenario gives the faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq
import asyncpg
from tests.command_line import ROOT, Workers, environment

from chaos.audit import Tally, audit
from mussikon.adapters.messaging.rabbitmq import Topology
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings, split_urls
from mussikon.wire import EventCodec

POSTGRES_URL = "postgresql://root@127.0.0.1:5432/test"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
RETRY_DELAYS = "1,10,60"
"""The workers' delayed retries (seconds): the default ones, which outlast a database restart."""


@dataclass
class Run:
    """One scenario's run: its folder, settings, processes and workload."""

    name: str
    root: Path
    settings: dict[str, str]
    broker_urls: str
    """The comma-separated URLs the test process itself uses to look at the broker."""
    workers: list[Workers] = field(default_factory=list)
    workload: asyncio.subprocess.Process | None = None
    started: float = field(default_factory=time.monotonic)
    clean: bool = False
    """True once the run was counted clean: its folder is then removed (else kept, to look
    into the processes' outputs)."""

    @property
    def journal(self) -> Path:
        return self.root / "journal.jsonl"

    def log(self, message: str) -> None:
        print(f"[{self.name} {time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def topology(self) -> Topology:
        return Topology(EventCodec().event_types, prefix=self.settings["rabbitmq_prefix"],
                        delayed_retry_delays=[float(d) for d in RETRY_DELAYS.split(",")])

    def env(self, **overrides: str) -> dict[str, str]:
        return environment(**{**self.settings, **overrides})

    async def app(self) -> App:
        """The application on the run's store, to look into it (nothing started)."""
        return await open_app(Settings.model_validate(
            {**self.settings, "broker_url": "memory://", "postgres_pool_size": 2}),
            read_only=True)

    def process(self, name: str, *, relay: bool = False, **overrides: str) -> Workers:
        """A worker (or relay alone) process, not started."""
        if relay:
            return Workers(self.root, self.env(**overrides), name=name,
                           args=("-m", "chaos.relay"), ready="relay running")
        return Workers(self.root, self.env(**overrides), name=name)

    def output(self) -> str:
        return "".join(w.output() for w in self.workers)


async def broker_channel(urls: str) -> tuple[aiormq.abc.AbstractConnection,
                                             aiormq.abc.AbstractChannel]:
    """A connection to the first node of `urls` that answers, and a channel on it."""
    last: Exception | None = None
    for url in split_urls(urls):
        try:
            connection = await asyncio.wait_for(aiormq.connect(url), 10)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            last = exc
            continue
        return connection, await connection.channel()
    raise ConnectionError(f"no node of the broker answers: {last}")


async def queued(run: Run) -> tuple[int, int]:
    """Messages ready in the run's event and retry queues, and in its dead letters."""
    topology = run.topology()
    connection, channel = await broker_channel(run.broker_urls)
    try:
        waiting = 0
        for queue in [*topology.event_queues(), *(s.queue for s in topology.retry_stages)]:
            declared = await channel.queue_declare(queue, passive=True)
            waiting += declared.message_count or 0
        dead = await channel.queue_declare(topology.dead_letter_queue, passive=True)
        return waiting, dead.message_count or 0
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def prepared(name: str, store: str, broker_urls: str,
                   worker_urls: str | None = None, **settings: str) -> AsyncIterator[Run]:
    """A run on a new SQLite file or PostgreSQL schema and a broker prefix of its own, all
    removed at the end (the processes stopped, the queues deleted, the schema dropped)."""
    tag = f"chaos{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix=f"mussikon-chaos-{name}-"))
    store_settings = ({"store_url": f"sqlite:///{root / 'mussikon.db'}"} if store == "sqlite"
                      else {"store_url": POSTGRES_URL, "postgres_schema": tag})
    run = Run(name, root, {
        **store_settings, "broker_url": worker_urls or broker_urls,
        "rabbitmq_prefix": f"{tag}.", "rabbitmq_retry_delays": RETRY_DELAYS,
        "sqlite_synchronous": "NORMAL", "poll_interval": "0.02", "poll_max_interval": "0.2",
        "lease_seconds": "2", "bus_concurrency": "16", "broker_timeout": "10",
        "broker_connect_timeout": "5", "stop_grace": "10", "log_level": "WARNING",
        **settings}, broker_urls)
    try:
        app = await open_app(Settings.model_validate({**run.settings, "broker_url": "memory://"}))
        await app.close()  # the store created and migrated before anything runs on it
        try:
            yield run
        finally:
            for worker in run.workers:
                await worker.close()
            if run.workload is not None and run.workload.returncode is None:
                run.workload.kill()
                await run.workload.wait()
            with contextlib.suppress(Exception):
                connection, channel = await broker_channel(broker_urls)
                await asyncio.wait_for(run.topology().delete(channel), 120)
                await connection.close()
            if store != "sqlite":
                admin = await asyncpg.connect(POSTGRES_URL)
                try:
                    await admin.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')
                finally:
                    await admin.close()
    finally:
        if run.clean:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for database in ("mussikon.db", "mussikon.db-wal", "mussikon.db-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(root / database)
            print(f"  {name}: the processes' outputs are kept in {root}", flush=True)


async def start_workload(run: Run, units: int, rate: float) -> None:
    """The workload's process, its output in `workload.out`."""
    with (run.root / "workload.out").open("wb") as sink:
        run.workload = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chaos.workload", str(units), str(run.journal), str(rate),
            cwd=ROOT, env=run.env(), stdin=asyncio.subprocess.DEVNULL, stdout=sink,
            stderr=asyncio.subprocess.STDOUT)


Faults = Callable[[Run], Coroutine[Any, Any, None]]
"""What a scenario does to the run while the workload is sent (until cancelled)."""


async def drive(run: Run, units: int, rate: float, faults: Faults, *,
                settle_timeout: float = 600) -> Tally:
    """Start the processes, send the workload (`rate` units a second) while `faults` runs,
    until every effect is there and the queues are empty; then stop the faults, wait for
    quiet again, stop the processes (SIGTERM) and count."""
    for worker in run.workers:
        await worker.start(60)
    run.log(f"{len(run.workers)} processes running; sending {5 * units} commands")
    await start_workload(run, units, rate)
    assert run.workload is not None
    chaos = asyncio.create_task(faults(run))
    try:
        code = await run.workload.wait()
        if code != 0:
            raise RuntimeError(f"the workload failed ({code}): "
                               f"{(run.root / 'workload.out').read_text()[-3000:]}")
        run.log("workload sent")
        await settled(run, settle_timeout, chaos)
    finally:
        chaos.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chaos
    run.log("faults stopped")
    for worker in run.workers:  # one may have been cut down between its kill and its start
        if worker.process is None or worker.process.returncode is not None:
            await worker.start(60)
    await settled(run, 120)
    for worker in run.workers:
        await worker.terminate()
    dead = await dead_letters(run)
    app = await run.app()
    try:
        tally = await audit(app, run.journal, dead)
    finally:
        await app.close()
    if "Traceback" in run.output():
        tally.examples.append("a process wrote a traceback")
    run.clean = tally.clean
    return tally


async def dead_letters(run: Run) -> int:
    """How many dead letters the run made (the workers move them from the dead-letter queue
    into the store; `mussikon dlq list` moves the rest), their reasons kept in the run's
    folder. Counted from the queue if the command fails."""
    listed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "mussikon", "dlq", "list", "--json", "--limit",
                         "1000"], cwd=run.root, env=run.env(), capture_output=True, text=True,
        timeout=120, check=False)
    (run.root / "dead-letters.json").write_text(listed.stdout + listed.stderr)
    if listed.returncode != 0:
        return (await queued(run))[1]
    return len(json.loads(listed.stdout)["dead_letters"])


async def settled(run: Run, timeout: float, faults: asyncio.Task[None] | None = None) -> None:
    """Wait until every effect is there and no message waits (or nothing has moved for two
    minutes, or `timeout` seconds have passed)."""
    deadline = time.monotonic() + timeout
    moved = time.monotonic()
    app = await run.app()
    try:
        last: tuple[int, int, int] | None = None
        while time.monotonic() < deadline:
            if faults is not None and faults.done():
                faults.result()  # a fault that could not be made fails the run
            tally = await audit(app, run.journal, 0)
            waiting, dead = await queued(run)
            state = (tally.handled, waiting, dead)
            if tally.handled + tally.doubled >= tally.sent and waiting == 0:
                run.log(f"settled: {tally.handled} of {tally.sent} handled")
                return
            if state != last:
                run.log(f"{tally.handled} of {tally.sent} handled, {waiting} queued, "
                        f"{dead} dead-lettered")
                moved = time.monotonic()
            elif time.monotonic() - moved > 120:
                break
            last = state
            await asyncio.sleep(3)
        run.log("gave up waiting for the work to settle")
    finally:
        await app.close()


async def kill_in_turn(run: Run, processes: Sequence[Workers], every: float) -> None:
    """SIGKILL the processes one after another, `every` seconds, each started again at once."""
    n = 0
    while True:
        await asyncio.sleep(every)
        victim = processes[n % len(processes)]
        await victim.kill()
        await victim.start(60)
        n += 1
        if n % 5 == 0:
            run.log(f"{n} kills so far")


def report(name: str, tally: Tally) -> bool:
    """Print the scenario's line (and a few examples of what went wrong); True if clean."""
    for example in tally.examples:
        print(f"  {name}: {example}", flush=True)
    print(tally.line(name), flush=True)
    return tally.clean
