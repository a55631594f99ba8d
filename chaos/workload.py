"""The commands a chaos scenario sends, from a process of its own: `units` bookings of five
commands each (an organizer and a musician register, the organizer publishes a gig, the
musician applies, the organizer accepts), written to the store as an API would.

    python -m chaos.workload UNITS JOURNAL RATE      (the store from MUSSIKON_*)

RATE: units started a second (0: as fast as the store takes them).

Ids are chosen here, so a command retried after a failure that may have committed (the
database restarted under it) is recognised: the second try finds the first one's work and
refuses (a concurrency or domain error), and the command counts once. Each unit is written to
the journal (a JSON line of its ids) once its five commands are done; the audit counts effects
against it. The unit's location is its own, so its gig matches its musician alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from mussikon.application.marketplace import Marketplace
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.domain.application import application_id_for
from mussikon.domain.contract import contract_id_for
from mussikon.domain.errors import DomainError
from mussikon.domain.instant import utc_now
from mussikon.ports.event_store import ConcurrencyError, StoreError

COMMANDS_PER_UNIT = 5
RETRY_FOR = 180.0
"""Seconds a command is retried while the store is unavailable."""


async def once(command: Callable[[], Awaitable[Any]]) -> int:
    """Run `command` until it is done; the number of failed tries before that. A refusal
    after a failed try is the first try's work found in place: done."""
    failures, deadline = 0, time.monotonic() + RETRY_FOR
    while True:
        try:
            await command()
            return failures
        except (ConcurrencyError, DomainError):
            if failures == 0:
                raise
            return failures
        except (StoreError, OSError) as exc:
            failures += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"the store stayed unavailable for {RETRY_FOR:g} s") from exc
            await asyncio.sleep(min(0.05 * failures, 1.0))


async def send_unit(market: Marketplace, n: int) -> tuple[dict[str, str], int]:
    """The unit's five commands, each until done; its ids, and the failed tries retried."""
    organizer, musician, gig = (str(uuid.uuid4()) for _ in range(3))
    application = application_id_for(gig, musician)
    location = f"City {n} {gig[:8]}"
    steps: list[Callable[[], Awaitable[Any]]] = [
        lambda: market.register_organizer(
            email=f"org-{organizer}@chaos.example", name=f"Organizer {n}",
            payment_source="tok_visa", organizer_id=organizer),
        lambda: market.register_musician(
            email=f"m-{musician}@chaos.example", name=f"Musician {n}", genres=["Jazz"],
            location=location, musician_id=musician),
        lambda: market.create_gig(
            organizer_id=organizer, title=f"Night {n}", location=location,
            event_date=utc_now() + timedelta(days=30), genre="Jazz", budget=Decimal(1500),
            gig_id=gig),
        lambda: market.submit_application(
            musician_id=musician, gig_id=gig, message="Trio", proposed_fee=Decimal("1200.00")),
        lambda: market.accept_application(application, organizer_id=organizer),
    ]
    failed = 0
    for step in steps:
        failed += await once(step)
    return {"organizer": organizer, "musician": musician, "gig": gig,
            "application": application, "contract": contract_id_for(application)}, failed


async def main(units: int, journal: Path, rate: float) -> None:
    app = await open_app(Settings(broker_url="memory://"))
    failed = 0
    started = time.monotonic()
    try:
        with journal.open("a") as out:
            for n in range(units):
                if rate > 0:  # paced: unit n goes at n / rate seconds
                    await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                unit, failures = await send_unit(app.marketplace, n)
                failed += failures
                out.write(json.dumps(unit) + "\n")
                out.flush()
                if (n + 1) % 100 == 0:
                    print(f"sent {(n + 1) * COMMANDS_PER_UNIT} commands in "
                          f"{time.monotonic() - started:.0f} s ({failed} failed tries retried)",
                          flush=True)
    finally:
        await app.close()
    print(f"workload done: {units * COMMANDS_PER_UNIT} commands, {failed} failed tries retried",
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])))
