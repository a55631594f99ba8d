"""`mussikon demo`: the specification's exercise, end to end, on whatever the settings name.

Musicians and organizers register, gigs are published, matching tells musicians,
applications come in (one over budget and one duplicate are refused) and the
MusicianApplicationSaga processes each. Organizers accept; the booking saga reserves
each musician's day and drafts the contract. A musician accepted for two gigs on one
night gets one contract; the other booking is compensated. Contracts are signed and the
saga takes the payments: one card is declined, retried after the configured delay, then
the contract is cancelled and the day released; one organizer never signs, and at the
signature deadline that contract is cancelled. The demo moves the app's clock forward
(an `AdjustableClock`) instead of waiting hours. Every event and every reaction is
printed as a timeline, then the read models and the sagas; any expected outcome that
did not happen makes the demo fail.

The output fits the console's width (80 columns when piped, or `COLUMNS`): facts and
reasons are printed under their row and wrapped between words, and every id stays whole.
Values that came from the scenario's people (names, messages, reasons) are printed as
literal text (`rich.text.Text`), never as markup. The command (`entrypoints/cli/demo.py`)
chooses the store: one of the demo's own, never the one `MUSSIKON_STORE_URL` names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shlex
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mussikon.application.projections.directory import APPLICATIONS, CONTRACTS, PROFILES
from mussikon.application.sagas.booking import payment_id_for
from mussikon.application.sagas.reservations import MusicianDays
from mussikon.application.sagas.state import SagaState, SagaStatus
from mussikon.bootstrap import App
from mussikon.config import (
    Settings,
    is_cosmos_connection_string,
    is_servicebus_connection_string,
    mask_url,
    split_brokers,
)
from mussikon.domain.contract import Contract
from mussikon.domain.errors import DomainError
from mussikon.domain.payment import Payment, PaymentStatus
from mussikon.ports.clock import AdjustableClock
from mussikon.ports.event_store import RecordedEvent
from mussikon.ports.feed import Checkpoint, Feed


class DemoFailed(Exception):
    """An outcome the demo expects did not happen."""


@dataclass
class Timeline(logging.Handler):
    """Collects the handlers' reactions, by the id of the event they reacted to."""

    by_event: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        event_id = getattr(record, "event_id", None)
        if event_id is not None:
            self.by_event[event_id].append(f"{record.__dict__['handler']}: "
                                           f"{record.__dict__['reaction']}")

    __hash__ = logging.Handler.__hash__


@dataclass
class Outcomes:
    """What this run created, to check at the end."""

    musicians: dict[str, str] = field(default_factory=dict)
    organizers: dict[str, str] = field(default_factory=dict)
    gigs: dict[str, str] = field(default_factory=dict)
    applications: dict[str, str] = field(default_factory=dict)
    contracts: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    double_booking: dict[str, str] = field(default_factory=dict)
    """The two applications accepted for one night: which "won" the day, which "lost"."""


_BASE_FIELDS = frozenset({"id", "occurred_at", "schema_version", "correlation_id",
                          "causation_id"})


def _fact(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _summary(record: RecordedEvent) -> str:
    e = record.event
    parts = [f"{f.name}={_fact(getattr(e, f.name))}" for f in dataclasses.fields(e)
             if f.name not in _BASE_FIELDS and not f.name.endswith("_id")]
    return ", ".join(parts)


def _print_wrapped(console: Console, text: Text, indent: int = 0) -> None:
    """Print wrapped between words within the console's width, each line indented (a word
    longer than a line is folded, never cut off)."""
    for line in text.wrap(console, max(console.width - indent, 20), overflow="fold"):
        line.rstrip()
        console.print(Text(" " * indent) + line, soft_wrap=True)


def _print_under(console: Console, text: Text) -> None:
    """Print under the row it belongs to: indented, wrapped."""
    _print_wrapped(console, text, indent=4)


def _heading(console: Console, title: str) -> None:
    console.print()
    console.print(Text(title, style="bold"))


def where_it_writes(settings: Settings) -> str:
    """The store the settings name, as the demo tells its user (password masked)."""
    if urlsplit(settings.store_url).scheme == "memory":
        return "memory only (nothing is kept)"
    where = f"the demo store {mask_url(settings.store_url)}"
    if urlsplit(settings.store_url).scheme in ("postgres", "postgresql"):
        where += f", schema {settings.postgres_schema}"
    if is_cosmos_connection_string(settings.store_url):
        where += f", database {settings.cosmos_database}"
    return where


def sagas_show_command(settings: Settings, program: str = "mussikon") -> str | None:
    """The command that shows one of the demo's sagas (with `SAGA_ID` to replace), naming the
    store through the environment; None when the store is memory, gone with the demo.
    `program` is how the `mussikon` command is called."""
    scheme = urlsplit(settings.store_url).scheme
    if scheme == "memory":
        return None
    env = f"MUSSIKON_STORE_URL={shlex.quote(mask_url(settings.store_url))}"
    if scheme in ("postgres", "postgresql"):
        env += f" MUSSIKON_POSTGRES_SCHEMA={shlex.quote(settings.postgres_schema)}"
    if is_cosmos_connection_string(settings.store_url):
        env += f" MUSSIKON_COSMOS_DATABASE={shlex.quote(settings.cosmos_database)}"
    return f"{env} {shlex.quote(program)} sagas show SAGA_ID"


def describe(settings: Settings) -> str:
    """The one sentence that opens the demo: what it simulates, where it writes, and whether
    it sends email."""
    email = (f"sending real email through {mask_url(settings.smtp_url)}" if settings.smtp_url
             else "sending no email (notifications are only recorded)")
    return ("This demo simulates the marketplace with made-up people (sign-ups, gigs, "
            "applications, bookings, signatures, payments, a declined card and a missed "
            f"signature deadline), writing to {where_it_writes(settings)}, "
            f"{how_it_delivers(settings)} and {email}.")


def how_it_delivers(settings: Settings) -> str:
    """The brokers the events go through, as the demo tells its user."""
    names = []
    for broker in split_brokers(settings.broker_url):
        if is_servicebus_connection_string(broker):
            names.append(f"Azure Service Bus (topic {settings.servicebus_topic})")
        elif urlsplit(broker).scheme in ("amqp", "amqps"):
            names.append("RabbitMQ")
    if not names:
        return "delivering events in this process"
    return f"delivering events through {' and '.join(names)}"


async def run_demo(app: App, console: Console, program: str = "mussikon") -> Outcomes:
    """Run the scenario; raise DemoFailed if an expected outcome is missing. `program` is how
    the `mussikon` command is called, for the command printed at the end."""
    if not isinstance(app.clock, AdjustableClock):
        raise DemoFailed("the demo moves time forward: open the app with an AdjustableClock")
    timeline = Timeline()
    reactions = logging.getLogger("mussikon.reactions")
    level, propagate = reactions.level, reactions.propagate
    reactions.addHandler(timeline)
    reactions.setLevel(logging.DEBUG)  # what handlers did, made of the events' bodies
    reactions.propagate = logging.getLogger().isEnabledFor(logging.DEBUG)  # the table shows them
    start = await _mark(app)
    out = Outcomes()
    try:
        _print_wrapped(console, Text(describe(app.settings)))
        console.print()
        await app.start()
        await _marketplace_opens(app, out)
        await _applications_come_in(app, out)
        await _organizers_decide(app, out, console)
        await _contracts_are_signed(app, out)
        await _time_passes(app, console)
        records = await _records_since(app, start)
        _print_timeline(console, records, timeline, ordered=isinstance(start, int))
        await _print_read_models(app, console, out)
        await _print_sagas(app, console, out)
        await _check(app, out)
        console.print()
        console.print(Text("All expected outcomes happened.", style="bold green"))
        _print_how_to_look(app.settings, console, program)
        return out
    finally:
        reactions.removeHandler(timeline)
        reactions.setLevel(level)
        reactions.propagate = propagate


async def _marketplace_opens(app: App, out: Outcomes) -> None:
    m = app.marketplace
    run = uuid.uuid4().hex[:6]
    out.organizers["casa"] = await m.register_organizer(
        email=f"booking+{run}@casadeteatro.example", name="Casa de Teatro",
        payment_source="tok_visa")
    out.organizers["hotel"] = await m.register_organizer(
        email=f"eventos+{run}@hotelcolonial.example", name="Hotel Colonial",
        payment_source="tok_chargeDeclined")
    people = [
        ("ana", "Ana Pérez", ["Jazz", "Bolero"], "Santo Domingo"),
        ("luis", "Luis Díaz", ["Jazz", "Salsa"], "Santo Domingo"),
        ("mar", "Marta Gómez", ["Merengue"], "Santiago"),
        ("juan", "Juan Ruiz", ["Salsa"], "Santo Domingo"),
        ("eva", "Eva Núñez", ["Jazz"], "Punta Cana"),
    ]
    for key, name, genres, location in people:
        out.musicians[key] = await m.register_musician(
            email=f"{key}+{run}@musicos.example", name=name, genres=genres, location=location)
    await app.settle()
    night = app.clock.now().replace(hour=23, minute=0, second=0, microsecond=0)
    gigs = [
        ("jazz", "casa", "Noche de Jazz en la Zona Colonial", 30, "Santo Domingo", "Jazz",
         "1500.00"),
        ("bolero", "casa", "Boleros de Medianoche", 30, "Santo Domingo", "Bolero", "1000.00"),
        ("salsa", "hotel", "Salsa en la Terraza", 45, "Santo Domingo", "Salsa", "900.00"),
        ("merengue", "casa", "Merengue de Verano", 60, "Santiago", "Merengue", "700.00"),
        ("fiesta", "casa", "Fiesta de Fin de Año", 75, "Santo Domingo", "Salsa", "1200.00"),
    ]
    for key, organizer, title, days, location, genre, budget in gigs:
        out.gigs[key] = await m.create_gig(
            organizer_id=out.organizers[organizer], title=title,
            event_date=night + timedelta(days=days), location=location, genre=genre,
            budget=Decimal(budget))
    await app.settle()


async def _applications_come_in(app: App, out: Outcomes) -> None:
    m = app.marketplace
    applications = [
        ("ana-jazz", "ana", "jazz", "Trío de jazz con repertorio de standards y bolero.",
         "1200.50"),
        ("ana-bolero", "ana", "bolero", "Boleros a dos guitarras.", "950.00"),
        ("luis-jazz", "luis", "jazz", "Cuarteto de jazz latino.", "1400.00"),
        ("luis-fiesta", "luis", "fiesta", "Salsa y son para despedir el año.", "1100.00"),
        ("juan-salsa", "juan", "salsa", "Salsa dura, orquesta de diez.", "850.00"),
        ("mar-merengue", "mar", "merengue", "Perico ripiao y merengue.", "650.00"),
    ]
    for key, who, gig, message, fee in applications:
        out.applications[key] = await m.submit_application(
            musician_id=out.musicians[who], gig_id=out.gigs[gig], message=message,
            proposed_fee=Decimal(fee))
    refusals: list[tuple[str, str, Decimal]] = [
        ("fee over budget", "eva", Decimal("2000")),
        ("second application", "ana", Decimal("1000")),
    ]
    for label, who, offer in refusals:
        try:
            await m.submit_application(musician_id=out.musicians[who], gig_id=out.gigs["jazz"],
                                       message="Please", proposed_fee=offer)
        except DomainError as exc:
            out.refused.append(f"{label}: {exc.rule}: {exc}")
    await app.settle()


ACCEPTED = {"ana-jazz": "casa", "ana-bolero": "casa", "juan-salsa": "hotel",
            "mar-merengue": "casa", "luis-fiesta": "casa"}
"""The applications organizers accept, and by whom."""


async def _organizers_decide(app: App, out: Outcomes, console: Console) -> None:
    m = app.marketplace

    async def accept(key: str) -> None:
        out.contracts[key] = await m.accept_application(
            out.applications[key], organizer_id=out.organizers[ACCEPTED[key]])

    # Ana is accepted for two gigs on the same night at once: the two bookings race for it.
    await asyncio.gather(*(accept(key) for key in ACCEPTED))
    await m.reject_application(out.applications["luis-jazz"], "the gig went to another act")
    await app.settle()
    for key in ("ana-jazz", "ana-bolero"):
        contract = await app.repository.load(Contract, out.contracts[key])
        out.double_booking["won" if contract.exists else "lost"] = key
    console.print(Text(f"Double booking: {out.double_booking.get('won')} got Ana's night, "
                       f"{out.double_booking.get('lost')} was compensated"))


async def _contracts_are_signed(app: App, out: Outcomes) -> None:
    for key, organizer in ACCEPTED.items():
        contract_id = out.contracts[key]
        if not (await app.repository.load(Contract, contract_id)).exists:
            continue
        await app.marketplace.sign_contract(contract_id, out.musicians[key.split("-")[0]])
        if key != "luis-fiesta":  # this organizer forgets to sign
            await app.marketplace.sign_contract(contract_id, out.organizers[organizer])
    await app.settle()


async def _time_passes(app: App, console: Console) -> None:
    clock, settings = app.clock, app.settings
    assert isinstance(clock, AdjustableClock)
    for retry in range(1, settings.saga_payment_retries + 1):
        console.print(Text.assemble((f"⏩ {settings.saga_payment_retry_delay} later:", "bold"),
                                    f" payment retry {retry} of "
                                    f"{settings.saga_payment_retries}"))
        clock.advance(settings.saga_payment_retry_delay)
        await app.settle()
    console.print(Text.assemble((f"⏩ {settings.saga_signature_timeout} later:", "bold"),
                                " the signature deadline passes"))
    clock.advance(settings.saga_signature_timeout)
    await app.settle()


Mark = int | list[tuple[Feed, Checkpoint]]
"""Where the demo's events begin: a position of the global order, or (Cosmos DB, no global
order) a checkpoint in each part of the change feed."""


async def _mark(app: App) -> Mark:
    """Where the events written from now on begin."""
    if app.feed is None or app.feed.global_order:
        return await app.store.head_position() + 1
    return [(part, await part.now()) for part in await app.feed.parts()]


async def _records_since(app: App, start: Mark) -> list[RecordedEvent]:
    """Every event written since `start`: in the global order; without one, as each part of
    the change feed gives them, then by the time they occurred (each stream's in version
    order)."""
    records: list[RecordedEvent] = []
    if isinstance(start, int):
        while batch := await app.store.read_all(start, 1000):
            records.extend(batch)
            start = batch[-1].position + 1
        return records
    for part, mark in start:
        at = mark
        while (page := await part.read(at, 1000)).checkpoint != at:
            records.extend(page.events)
            at = page.checkpoint
    records.sort(key=lambda r: (r.event.occurred_at, r.stream_id, r.version))
    return records


def _print_timeline(console: Console, records: list[RecordedEvent], timeline: Timeline,
                    ordered: bool = True) -> None:
    _heading(console, "Timeline: every event, its facts, and what the handlers did about it")
    if not ordered:
        _print_wrapped(console, Text(
            f"The store keeps no order across streams: these are the {len(records)} events "
            "its change feed gave since the demo began, by the time they occurred (each "
            "stream's in version order), named by stream and version.", style="dim"))
    for record in records:
        time = record.event.occurred_at.strftime("%H:%M:%S.%f")[:-3]
        where = f"#{record.position}" if ordered else f"{record.stream_id} v{record.version}"
        # soft_wrap: the row is never broken, so the event's name stays whole.
        console.print(Text.assemble((where, "dim"), "  ", (time, "dim"), "  ",
                                    (record.event.event_type, "bold cyan")), soft_wrap=True)
        facts = _summary(record)
        if facts:
            _print_under(console, Text(facts))
        for reaction in timeline.by_event.get(str(record.event.id), []):
            _print_under(console, Text(f"↳ {reaction}", style="green"))


def _print_table(console: Console, title: str, columns: list[str], rows: list[list[str]]
                 ) -> None:
    """A table of literal text that wraps between words, under its title."""
    _heading(console, title)
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


async def _print_read_models(app: App, console: Console, out: Outcomes) -> None:
    rows = []
    for musician_id in out.musicians.values():
        p = await app.documents.get(PROFILES, musician_id)
        if p is not None:
            rows.append([p["name"], ", ".join(p["genres"]), p["location"],
                         str(p["applications"]), str(p["contracts"])])
    _print_table(console, "Read model: musician profiles",
                 ["name", "genres", "location", "applications", "contracts"], rows)
    _heading(console, "Read model: contracts (application, status, amount; why, under it)")
    for key, contract_id in out.contracts.items():
        c = await app.documents.get(CONTRACTS, contract_id)
        if c is not None:
            status, reason = f"{c['status']}  {c['amount']}", c.get("reason", "")
        else:
            a = await app.documents.get(APPLICATIONS, out.applications[key]) or {}
            status = "no contract"
            reason = f"application {a.get('status', '?').lower()}: {a.get('reason', '')}"
        console.print(Text.assemble((key, "bold"), "  ", status), soft_wrap=True)
        if reason:
            _print_under(console, Text(reason))
    summary = await app.analytics.summary()
    rows = [[kind, str(count)] for kind, count in sorted(summary.by_kind.items())]
    rows += [["by genre (musicians, gigs, applications)",
              ", ".join(f"{g}: {n}" for g, n in summary.by_genre.most_common())],
             ["contracted", str(summary.contracted)],
             ["revenue (completed payments)", str(summary.revenue)]]
    _print_table(console, "Read model: analytics (whole store)", ["measure", "value"], rows)
    sent = await app.notifier.sent(limit=1000)
    _heading(console, f"{len(sent)} notifications on record; refused commands:")
    for refusal in out.refused:
        _print_under(console, Text(f"✗ {refusal}", style="yellow"))


def _saga_ids(out: Outcomes) -> list[str]:
    return ([f"musician-application-{a}" for a in out.applications.values()]
            + [f"booking-{c}" for c in out.contracts.values()])


async def _print_sagas(app: App, console: Console, out: Outcomes) -> None:
    assert app.sagas is not None
    _heading(console, "Sagas of this run (saga id, status; steps and reason under it)")
    for saga_id in _saga_ids(out):
        saga = await app.sagas.journal.find(saga_id)
        if saga is None:
            continue
        # soft_wrap: the id is printed whole, to be copied into `mussikon sagas show`.
        console.print(Text.assemble((saga.saga_id, "bold"), "  ", saga.status.value),
                      soft_wrap=True)
        _print_under(console, Text(f"done: {', '.join(saga.completed) or '-'}"))
        if saga.compensated:
            _print_under(console, Text(f"undone: {', '.join(saga.compensated)}"))
        if saga.reason:
            _print_under(console, Text(f"reason: {saga.reason}"))


def _print_how_to_look(settings: Settings, console: Console, program: str) -> None:
    command = sagas_show_command(settings, program)
    if command is None:
        console.print(Text("The demo store was in memory: its sagas are gone with it."))
        return
    relative = settings.store_url.startswith("sqlite:") and \
        not settings.store_url.startswith("sqlite:////")
    console.print(Text("The steps and history of a saga of this run"
                       + (", from this directory:" if relative else ":")))
    # soft_wrap: the command is never broken, so it can be copied whole.
    console.print(Text(f"  {command}"), soft_wrap=True)


async def _check_bookings(app: App, out: Outcomes, problems: list[str]) -> None:
    won, lost = out.double_booking.get("won"), out.double_booking.get("lost")
    if won is None or lost is None:
        problems.append("Ana's two bookings for one night should give one contract and one "
                        f"compensation, got {out.double_booking}")
        return
    expected = {won: ("Paid", ""), "mar-merengue": ("Paid", ""),
                "juan-salsa": ("Cancelled", "declined"),
                "luis-fiesta": ("Cancelled", "not signed by both parties")}
    for key, (status, reason) in expected.items():
        doc = await app.documents.get(CONTRACTS, out.contracts[key])
        if doc is None or doc["status"] != status or reason not in doc["reason"]:
            problems.append(f"contract {key} should be {status} ({reason or 'no reason'}), is "
                            f"{(doc['status'], doc['reason']) if doc else 'missing'}")
    for key, reason in ((lost, "already booked"), ("luis-jazz", "another act")):
        application = await app.documents.get(APPLICATIONS, out.applications[key])
        if application is None or application["status"] != "Rejected" \
                or reason not in application["reason"]:
            problems.append(f"application {key} should be rejected ({reason}), is "
                            f"{application}")
    declined = [await app.repository.load(Payment, payment_id_for(out.contracts["juan-salsa"], n))
                for n in range(1, app.settings.saga_payment_retries + 2)]
    if any(p.status is not PaymentStatus.DECLINED for p in declined):
        problems.append("Juan's payment should have been declined "
                        f"{len(declined)} times: {[p.status.value for p in declined]}")
    juan = await app.repository.load(Contract, out.contracts["juan-salsa"])
    if juan.event_date and await MusicianDays(app.documents, app.clock).holder(
            out.musicians["juan"], juan.event_date):
        problems.append("Juan's day should be free again")
    assert app.sagas is not None
    completed = {won, "mar-merengue"}
    for key, contract_id in out.contracts.items():
        saga = await app.sagas.journal.find(f"booking-{contract_id}")
        status = SagaStatus.COMPLETED if key in completed else SagaStatus.COMPENSATED
        if saga is None or saga.status is not status:
            problems.append(f"booking saga of {key} should be {status.value}, is "
                            f"{saga.status.value if saga else 'missing'}")
    for key, application_id in out.applications.items():
        processed: SagaState | None = await app.sagas.journal.find(
            f"musician-application-{application_id}")
        if processed is None or processed.status is not SagaStatus.COMPLETED:
            problems.append(f"application saga of {key} should be completed")


async def _check(app: App, out: Outcomes) -> None:
    problems: list[str] = []
    await _check_bookings(app, out, problems)
    if len(out.refused) != 2:
        problems.append(f"two commands should have been refused, got {len(out.refused)}")
    sent = await app.notifier.sent(limit=100_000)
    emails = {s.notification.recipient for s in sent}
    kinds: dict[str, int] = defaultdict(int)
    for s in sent:
        kinds[s.notification.kind] += 1
    for key in out.musicians:
        if not any(r.startswith(f"{key}+") for r in emails):
            problems.append(f"musician {key} got no notification")
    needs = {"welcome", "new-gig", "application-received", "contract-confirmation",
             "payment-confirmation", "payment-failed", "contract-cancelled",
             "application-rejected"}
    missing = needs - set(kinds)
    if missing:
        problems.append(f"no notification of kind {', '.join(sorted(missing))}")
    dead = await app.transport.dead_letters()
    if dead:
        problems.append(f"{len(dead)} message(s) dead-lettered: {dead[0].reason}")
    if problems:
        raise DemoFailed("; ".join(problems))
