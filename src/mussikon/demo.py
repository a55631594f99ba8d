"""`mussikon demo`: the specification's exercise, end to end, on whatever the settings name.

Musicians and organizers register, gigs are published, matching tells musicians,
applications come in (one over budget and one duplicate are refused), organizers
accept, contracts are drafted and signed by both parties, payments go through the
gateway, one is declined and handled. Every event and every handler reaction is
printed as a timeline, then the read models; any expected outcome that did not
happen makes the demo fail.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from mussikon.bootstrap import App
from mussikon.domain.errors import DomainError
from mussikon.domain.instant import utc_now
from mussikon.projections.directory import APPLICATIONS, CONTRACTS, PROFILES
from mussikon.store import RecordedEvent


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


_BASE_FIELDS = frozenset({"id", "occurred_at", "version", "correlation_id", "causation_id"})


def _summary(record: RecordedEvent) -> str:
    e = record.event
    parts = [f"{f.name}={getattr(e, f.name)}" for f in dataclasses.fields(e)
             if f.name not in _BASE_FIELDS and not f.name.endswith("_id")]
    return ", ".join(parts)[:100]


async def run_demo(app: App, console: Console) -> Outcomes:
    """Run the scenario; raise DemoFailed if an expected outcome is missing."""
    timeline = Timeline()
    reactions = logging.getLogger("mussikon.reactions")
    level, propagate = reactions.level, reactions.propagate
    reactions.addHandler(timeline)
    reactions.setLevel(logging.INFO)
    reactions.propagate = logging.getLogger().isEnabledFor(logging.INFO)  # the table shows them
    start = await app.store.head_position() + 1
    out = Outcomes()
    m = app.marketplace
    run = uuid.uuid4().hex[:6]
    try:
        await app.start()
        console.rule("[bold]MussikOn demo")
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
                email=f"{key}+{run}@musicos.example", name=name, genres=genres,
                location=location)
        await app.settle()
        soon = utc_now().replace(hour=23, minute=0, second=0, microsecond=0)
        out.gigs["jazz"] = await m.create_gig(
            organizer_id=out.organizers["casa"], title="Noche de Jazz en la Zona Colonial",
            event_date=soon + timedelta(days=30), location="Santo Domingo", genre="Jazz",
            budget=Decimal("1500.00"))
        out.gigs["salsa"] = await m.create_gig(
            organizer_id=out.organizers["hotel"], title="Salsa en la Terraza",
            event_date=soon + timedelta(days=45), location="Santo Domingo", genre="Salsa",
            budget=Decimal("900.00"))
        out.gigs["merengue"] = await m.create_gig(
            organizer_id=out.organizers["casa"], title="Merengue de Verano",
            event_date=soon + timedelta(days=60), location="Santiago", genre="Merengue",
            budget=Decimal("700.00"))
        await app.settle()
        applications = [
            ("ana-jazz", "ana", "jazz", "Trío de jazz con repertorio de standards y bolero.",
             Decimal("1200.50")),
            ("luis-jazz", "luis", "jazz", "Cuarteto de jazz latino.", Decimal("1400.00")),
            ("juan-salsa", "juan", "salsa", "Salsa dura, orquesta de diez.", Decimal("850.00")),
            ("mar-merengue", "mar", "merengue", "Perico ripiao y merengue.", Decimal("650.00")),
        ]
        for key, who, gig, message, fee in applications:
            out.applications[key] = await m.submit_application(
                musician_id=out.musicians[who], gig_id=out.gigs[gig], message=message,
                proposed_fee=fee)
        refusals: list[tuple[str, str, Decimal]] = [
            ("fee over budget", "eva", Decimal("2000")),
            ("second application", "ana", Decimal("1000")),
        ]
        for label, who, fee in refusals:
            try:
                await m.submit_application(musician_id=out.musicians[who],
                                           gig_id=out.gigs["jazz"], message="Please",
                                           proposed_fee=fee)
            except DomainError as exc:
                out.refused.append(f"{label}: {exc.rule}: {exc}")
        await app.settle()
        accepted = [("ana-jazz", "casa"), ("juan-salsa", "hotel"), ("mar-merengue", "casa")]
        for app_key, organizer in accepted:
            await m.accept_application(out.applications[app_key],
                                       organizer_id=out.organizers[organizer])
            contract_id = await m.draft_contract(out.applications[app_key])
            out.contracts[app_key] = contract_id
        await m.reject_application(out.applications["luis-jazz"], "the gig went to another act")
        await app.settle()
        for app_key, organizer in accepted:
            who = app_key.split("-")[0]
            await m.sign_contract(out.contracts[app_key], out.musicians[who])
            await m.sign_contract(out.contracts[app_key], out.organizers[organizer])
        await app.settle()
        records = await _records_since(app, start)
        _print_timeline(console, records, timeline)
        await _print_read_models(app, console, out)
        await _check(app, out)
        console.print("[bold green]All expected outcomes happened.")
        return out
    finally:
        reactions.removeHandler(timeline)
        reactions.setLevel(level)
        reactions.propagate = propagate


async def _records_since(app: App, start: int) -> list[RecordedEvent]:
    records: list[RecordedEvent] = []
    while batch := await app.store.read_all(start, 1000):
        records.extend(batch)
        start = batch[-1].position + 1
    return records


def _print_timeline(console: Console, records: list[RecordedEvent], timeline: Timeline) -> None:
    table = Table(title="Timeline: every event and what the handlers did about it",
                  show_lines=False, expand=True)
    table.add_column("#", justify="right", style="dim")
    table.add_column("time", style="dim", no_wrap=True)
    table.add_column("event", style="bold cyan", no_wrap=True)
    table.add_column("facts / reactions")
    for record in records:
        table.add_row(str(record.position), record.event.occurred_at.strftime("%H:%M:%S.%f")[:-3],
                      record.event.event_type, _summary(record))
        for reaction in timeline.by_event.get(str(record.event.id), []):
            table.add_row("", "", "", f"[green]↳ {reaction}")
    console.print(table)


async def _print_read_models(app: App, console: Console, out: Outcomes) -> None:
    profiles = Table(title="Read model: musician profiles")
    for column in ("name", "genres", "location", "applications", "contracts"):
        profiles.add_column(column)
    for musician_id in out.musicians.values():
        p = await app.documents.get(PROFILES, musician_id)
        if p is not None:
            profiles.add_row(p["name"], ", ".join(p["genres"]), p["location"],
                             str(p["applications"]), str(p["contracts"]))
    console.print(profiles)
    contracts = Table(title="Read model: contracts")
    for column in ("application", "amount", "status", "reason"):
        contracts.add_column(column)
    for key, contract_id in out.contracts.items():
        c = await app.documents.get(CONTRACTS, contract_id)
        if c is not None:
            contracts.add_row(key, str(c["amount"]), c["status"], c.get("reason", ""))
    console.print(contracts)
    summary = await app.analytics.summary()
    analytics = Table(title="Read model: analytics (whole store)")
    analytics.add_column("measure")
    analytics.add_column("value")
    for kind, count in sorted(summary.by_kind.items()):
        analytics.add_row(kind, str(count))
    analytics.add_row("gigs+applications by genre", ", ".join(
        f"{g}: {n}" for g, n in summary.by_genre.most_common()))
    analytics.add_row("contracted", str(summary.contracted))
    analytics.add_row("revenue (completed payments)", str(summary.revenue))
    console.print(analytics)
    sent = await app.notifier.sent(limit=1000)
    console.print(f"[bold]{len(sent)}[/] notifications on record; refused commands:")
    for refusal in out.refused:
        console.print(f"  [yellow]✗ {refusal}")


async def _check(app: App, out: Outcomes) -> None:
    problems: list[str] = []
    expected = {"ana-jazz": "Paid", "mar-merengue": "Paid", "juan-salsa": "PaymentFailed"}
    for key, status in expected.items():
        doc = await app.documents.get(CONTRACTS, out.contracts[key])
        if doc is None or doc["status"] != status:
            problems.append(f"contract {key} should be {status}, is "
                            f"{doc['status'] if doc else 'missing'}")
    luis = await app.documents.get(APPLICATIONS, out.applications["luis-jazz"])
    if luis is None or luis["status"] != "Rejected":
        problems.append("Luis's application should be rejected")
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
             "payment-confirmation", "payment-failed"}
    missing = needs - set(kinds)
    if missing:
        problems.append(f"no notification of kind {', '.join(sorted(missing))}")
    dead = await app.transport.dead_letters()
    if dead:
        problems.append(f"{len(dead)} message(s) dead-lettered: {dead[0].reason}")
    if problems:
        raise DemoFailed("; ".join(problems))
