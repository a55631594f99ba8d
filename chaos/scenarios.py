"""The chaos scenarios. Each sends marketplace commands from a process of its own while faults
hit the processes, the network, the database or the broker, then counts what the workers made
of them and prints one line:

    NAME: N sent, N handled, 0 lost, 0 doubled, 0 dead-lettered

- `kills-sqlite`, `kills-postgres`: two `mussikon worker` processes SIGKILLed in turn, each
  started again at once, every few seconds, on SQLite and on PostgreSQL, with RabbitMQ.
- `network-postgres`: every broker connection cut every few seconds (a TCP proxy between the
  workers and RabbitMQ), and PostgreSQL restarted once under load.
- `cluster`: a three-node RabbitMQ cluster (quorum queues replicated on all three); the node
  holding the queues' leader is killed mid-run and started again; the workers, given the
  three URLs, reconnect to the others.
- `relays-postgres`: two workers and two relays alone on one PostgreSQL store, a longer run,
  one process killed in turn every few seconds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Coroutine
from typing import Any

from tests.integration.test_postgres_restart import restart_command, wait_for_server
from tests.tcp_proxy import TcpProxy

from chaos.audit import Tally
from chaos.cluster import Cluster
from chaos.harness import RABBITMQ_URL, Run, drive, kill_in_turn, prepared

KILL_EVERY = 3.0
"""Seconds between two kills."""
RATE = 20.0
"""Units (of five commands) sent a second: the faults land all through the workload."""


def units(default: int) -> int:
    """Units of five commands: `default`, or MUSSIKON_CHAOS_UNITS (a shorter run)."""
    return int(os.environ.get("MUSSIKON_CHAOS_UNITS", default))


async def kills(store: str) -> Tally:
    async with prepared(f"kills-{store}", store, RABBITMQ_URL) as run:
        run.workers = [run.process("worker-a"), run.process("worker-b")]

        async def faults(run: Run) -> None:
            await kill_in_turn(run, run.workers, KILL_EVERY)

        return await drive(run, units(1000), RATE, faults)


async def network_postgres() -> Tally:
    proxy = TcpProxy(RABBITMQ_URL)
    through = await proxy.start()
    try:
        async with prepared("network-postgres", "postgres", RABBITMQ_URL,
                            worker_urls=through) as run:
            run.workers = [run.process("worker-a"), run.process("worker-b")]

            async def faults(run: Run) -> None:
                restart = restart_command()
                cuts = 0
                while True:
                    await asyncio.sleep(KILL_EVERY)
                    proxy.cut()
                    cuts += 1
                    if cuts == 5:
                        run.log("restarting PostgreSQL")
                        done = await asyncio.to_thread(subprocess.run, restart,
                                                       capture_output=True, text=True,
                                                       timeout=120, check=False)
                        if done.returncode != 0:
                            raise RuntimeError(f"restarting PostgreSQL failed: {done.stderr}")
                        await wait_for_server(run.settings["store_url"])
                        run.log("PostgreSQL is back")
                    if cuts % 10 == 0:
                        run.log(f"{cuts} cuts so far")

            return await drive(run, units(600), RATE, faults)
    finally:
        await proxy.close()


async def cluster() -> Tally:
    nodes = await asyncio.to_thread(Cluster.create)
    try:
        await asyncio.to_thread(nodes.start)
        urls = ",".join(nodes.urls)
        async with prepared("cluster", "postgres", urls) as run:
            run.workers = [run.process("worker-a"), run.process("worker-b")]
            queue = run.topology().queue("MusicianRegisteredEvent")

            async def faults(run: Run) -> None:
                await asyncio.sleep(10)
                members = await asyncio.to_thread(nodes.members, queue)
                leader = await asyncio.to_thread(nodes.leader, queue)
                run.log(f"{queue} on {len(members)} nodes; killing its leader {leader.name}")
                await asyncio.to_thread(nodes.kill, leader)
                await asyncio.sleep(10)
                run.log(f"new leader {(await asyncio.to_thread(nodes.leader, queue)).name}; "
                        f"starting {leader.name} again")
                await asyncio.to_thread(nodes.launch, leader)
                run.log(f"{leader.name} is back")
                await asyncio.Event().wait()

            return await drive(run, units(1000), RATE, faults)
    finally:
        await asyncio.to_thread(nodes.stop)


async def relays_postgres() -> Tally:
    async with prepared("relays-postgres", "postgres", RABBITMQ_URL) as run:
        run.workers = [run.process("worker-a"), run.process("worker-b"),
                       run.process("relay-a", relay=True), run.process("relay-b", relay=True)]

        async def faults(run: Run) -> None:
            await kill_in_turn(run, run.workers, 2 * KILL_EVERY)

        return await drive(run, units(1600), RATE, faults)


SCENARIOS: dict[str, Callable[[], Coroutine[Any, Any, Tally]]] = {
    "kills-sqlite": lambda: kills("sqlite"),
    "kills-postgres": lambda: kills("postgres"),
    "network-postgres": network_postgres,
    "cluster": cluster,
    "relays-postgres": relays_postgres,
}


