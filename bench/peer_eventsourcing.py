"""The pyeventsourcing peer (the `eventsourcing` package): the same workloads, written its way.

Its aggregates mirror ours field for field (a musician's registration, a gig created then
closed, a contract whose payments keep failing), so both sides store events of the same
size. Runs in this process, synchronously, right before or after ours.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

from bench.store_workloads import (
    BATCH,
    GIG_DATE,
    LONG_STREAM,
    PAGE,
    Timing,
    shares,
    timed_sync,
)

NAME = "pyeventsourcing"


def available(persistence: str = "eventsourcing.sqlite") -> bool:
    """True if the bench extra (`eventsourcing`, with `psycopg` for PostgreSQL) is installed."""
    try:
        import eventsourcing.application
        if persistence == "eventsourcing.postgres":
            import eventsourcing.postgres  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def sqlite_synchronous(level: str) -> Iterator[None]:
    """Make every SQLite connection eventsourcing opens use `PRAGMA synchronous=level`.

    eventsourcing leaves SQLite's default (FULL); the comparison must be at one setting.
    """
    from eventsourcing.sqlite import SQLiteConnectionPool

    original = SQLiteConnectionPool._create_connection

    def create(pool: Any) -> Any:
        connection = original(pool)
        raw: sqlite3.Connection = connection._sqlite_conn
        raw.execute(f"PRAGMA synchronous={level}")
        return connection

    SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        SQLiteConnectionPool._create_connection = original  # type: ignore[method-assign]


@functools.cache
def _aggregates() -> tuple[Any, Any, Any]:
    """The peer's aggregate classes, defined once (eventsourcing registers each class by its
    topic and refuses a second class under the same one)."""
    from eventsourcing.domain import Aggregate, event

    class Musician(Aggregate):
        @event("Registered")
        def __init__(self, email: str, name: str, genres: list[str], location: str) -> None:
            self.email, self.name, self.genres, self.location = email, name, genres, location

    class Gig(Aggregate):
        @event("Created")
        def __init__(self, organizer_id: str, title: str, event_date: datetime,
                     location: str, genre: str, budget: Decimal) -> None:
            self.organizer_id, self.title, self.event_date = organizer_id, title, event_date
            self.location, self.genre, self.budget = location, genre, budget
            self.status = "Open"

        @event("Closed")
        def close(self, reason: str) -> None:
            self.status, self.reason = "Closed", reason

    class Contract(Aggregate):
        @event("Drafted")
        def __init__(self, application_id: str, musician_id: str, organizer_id: str,
                     gig_id: str, amount: Decimal, event_date: datetime) -> None:
            self.application_id, self.musician_id = application_id, musician_id
            self.organizer_id, self.gig_id = organizer_id, gig_id
            self.amount, self.event_date = amount, event_date
            self.status, self.payment_id, self.reason = "Drafted", "", ""

        @event("PaymentFailed")
        def payment_failed(self, payment_id: str, reason: str) -> None:
            self.status, self.payment_id, self.reason = "PaymentFailed", payment_id, reason

    return Musician, Gig, Contract


class EsPeer:
    """One eventsourcing `Application` and the workloads run against it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        from eventsourcing.application import Application

        self.Musician, self.Gig, self.Contract = _aggregates()
        self.app = Application[UUID](env=dict(env))

    def close(self) -> None:
        """Release the database connections."""
        self.app.close()

    def _contract(self, count: int) -> Any:
        contract: Any = self.Contract(application_id="app-1", musician_id="mus-1",
                                      organizer_id="org-1", gig_id="gig-1",
                                      amount=Decimal("1200.50"), event_date=GIG_DATE)
        for version in range(2, count + 1):
            contract.payment_failed(payment_id=f"pay-{version}", reason="card declined")
        return contract

    def _musician(self) -> Any:
        return self.Musician(email="ana@example.com", name="Ana Peña", genres=["jazz", "salsa"],
                             location="Santo Domingo")

    def append_new_streams(self, n: int) -> Timing:
        """n new aggregates (made beforehand), one event each, one save each."""
        made = [self._musician() for _ in range(n)]

        def run() -> int:
            save = self.app.save
            for musician in made:
                save(musician)
            return n
        return timed_sync(run)

    def append_new_streams_threads(self, n: int, threads: int) -> Timing:
        """n new aggregates (made beforehand) saved by `threads` threads at once, one event
        each, one save each (the application's connection pool needs `threads` connections)."""
        failures: list[BaseException] = []
        made = [[self._musician() for _ in range(k)] for k in shares(n, threads)]

        def writer(part: list[Any]) -> None:
            try:
                for musician in part:
                    self.app.save(musician)
            except BaseException as exc:
                failures.append(exc)

        def run() -> int:
            workers = [threading.Thread(target=writer, args=(part,)) for part in made]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if failures:
                raise failures[0]
            return n
        return timed_sync(run)

    def prepare_gigs(self, n: int) -> list[UUID]:
        """n gigs of one event each (not timed)."""
        ids = []
        for _ in range(n):
            gig: Any = self.Gig(organizer_id="org-1", title="Jazz night", event_date=GIG_DATE,
                           location="Santo Domingo", genre="jazz", budget=Decimal("1500.00"))
            self.app.save(gig)
            ids.append(gig.id)
        return ids

    def get_and_append(self, gig_ids: list[UUID]) -> Timing:
        """For each gig: get it from the repository, close it, save it."""
        def run() -> int:
            for gig_id in gig_ids:
                gig: Any = self.app.repository.get(gig_id)
                gig.close(reason="booked")
                self.app.save(gig)
            return len(gig_ids)
        return timed_sync(run)

    def append_batches(self, batches: int) -> Timing:
        """Saves of 100 new aggregates (made beforehand) of one event each, as
        `../shared/anchors/es_more.py` measures pyeventsourcing's batches."""
        made = [[self._musician() for _ in range(BATCH)] for _ in range(batches)]

        def run() -> int:
            save = self.app.save
            for aggregates in made:
                save(*aggregates)
            return batches * BATCH
        return timed_sync(run)

    def prepare_long_stream(self, length: int = LONG_STREAM) -> UUID:
        """One aggregate of `length` events, saved 100 at a time (not timed)."""
        contract: Any = self.Contract(application_id="app-1", musician_id="mus-1",
                                      organizer_id="org-1", gig_id="gig-1",
                                      amount=Decimal("1200.50"), event_date=GIG_DATE)
        for version in range(2, length + 1):
            contract.payment_failed(payment_id=f"pay-{version}", reason="card declined")
            if version % BATCH == 0:
                self.app.save(contract)
        self.app.save(contract)
        contract_id: UUID = contract.id
        return contract_id

    def load_long_stream(self, contract_id: UUID, loads: int,
                         length: int = LONG_STREAM) -> Timing:
        """Reconstruct the `length`-event aggregate from its events, `loads` times."""
        def run() -> int:
            for _ in range(loads):
                contract: Any = self.app.repository.get(contract_id)
                if contract.version != length:
                    raise AssertionError(f"loaded {contract.version} events, not {length}")
            return loads * length
        return timed_sync(run)

    def prepare_global_order(self, streams: int, per_stream: int) -> int:
        """`streams` aggregates of `per_stream` events each, one save each (not timed)."""
        for _ in range(streams):
            self.app.save(self._contract(per_stream))
        return streams * per_stream

    def read_global_order(self, total: int, reads: int, page: int = PAGE) -> Timing:
        """Read the whole notification log (`total` events) `reads` times, `page` at a time,
        turning each notification into its domain event, as a processing application does."""
        select = self.app.recorder.select_notifications
        to_event = self.app.mapper.to_domain_event

        def run() -> int:
            for _ in range(reads):
                start, seen = 1, 0
                while seen < total:
                    batch = select(start, page)
                    if not batch:
                        raise AssertionError(f"the log ended after {seen} of {total}")
                    for notification in batch:
                        to_event(notification)
                    seen += len(batch)
                    start = batch[-1].id + 1
            return reads * total
        return timed_sync(run)


def sqlite_env(path: str) -> dict[str, str]:
    """The environment that points eventsourcing at a SQLite file."""
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}


def postgres_env(url: str, schema: str, pool_size: int = 5) -> dict[str, str]:
    """The environment that points eventsourcing at `url`, its tables in `schema` (which must
    exist), with a pool of exactly `pool_size` connections."""
    parts = urlsplit(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
        "CREATE_TABLE": "y",
    }
