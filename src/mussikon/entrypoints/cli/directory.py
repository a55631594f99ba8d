"""`mussikon directory …`: the directory read model (musicians, gigs, applications, contracts)
as the projections last left it, a page at a time, ordered by id."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Annotated

import typer

from mussikon.application.projections.directory import (
    APPLICATIONS,
    CONTRACTS,
    GIGS,
    MATCHING_INDEX,
    ORGANIZERS,
    PROFILES,
    filtered_page,
    matching_prefix,
)
from mussikon.domain.contract import ContractStatus
from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import (
    CommandFailed,
    JsonOption,
    console_for_output,
    limit_option,
    plain,
    print_json,
    print_table,
    resolve_id,
)
from mussikon.ports.documents import Document, DocumentStore

directory_app = typer.Typer(
    help="The directory read model: musicians, gigs, applications and contracts.",
    no_args_is_help=True)

IdArgument = Annotated[str | None, typer.Argument(
    help="Show this one alone, whatever the filters: an id, or the start of one that names "
         "only one.", metavar="ID", show_default=False)]
LimitOption = Annotated[int, limit_option(50)]
AfterOption = Annotated[str, typer.Option(
    "--after", help="The page after this id (the last one of the page before).")]
MusicianOption = Annotated[str | None, typer.Option(
    "--musician", help="Only this musician's (an id, or the start of one that names only one).")]
OrganizerOption = Annotated[str | None, typer.Option(
    "--organizer",
    help="Only this organizer's (an id, or the start of one that names only one).")]

MONEY_FIELDS = ("budget", "proposed_fee", "agreed_fee", "amount")
"""Amounts, which `--json` prints as exact decimal strings."""

CONTRACT_STATUSES = tuple(s.value for s in ContractStatus if s is not ContractStatus.NEW)

async def _resolved(documents: DocumentStore, collection: str, given: str | None,
                    what: str) -> str | None:
    """The whole id `given` names among a collection's keys (a unique start is enough)."""
    if given is None:
        return None
    known = [key for key, _ in await documents.scan(collection, given)] if given else []
    return resolve_id(given, known, what)


def _folded(text: object) -> str:
    return str(text).strip().casefold()


def _exact(doc: Document) -> Document:
    """The document for `--json`: amounts as exact decimal strings, whatever their scale."""
    return {k: str(Decimal(v)) if k in MONEY_FIELDS and isinstance(v, int | Decimal) else v
            for k, v in doc.items()}


def _again(name: str, limit: int, *options: tuple[str, str | bool | None]) -> list[str]:
    """The command line of this listing with its options (a flag: its value True), for the
    next page."""
    words = ["mussikon", "directory", name]
    for option, value in options:
        if value is True:
            words.append(option)
        elif isinstance(value, str):
            words.extend((option, value))
    return [*words, "--limit", str(limit)]


def _print(name: str, items: Sequence[Document], next_after: str | None, json_: bool,
           columns: Sequence[str], row: Callable[[Document], Sequence[object]],
           ids: Sequence[str], again: list[str]) -> None:
    if json_:
        print_json({name: [_exact(doc) for doc in items], "next_after": next_after})
        return
    out = console_for_output()
    print_table(out, f"{len(items)} {name}", columns, (row(doc) for doc in items), ids=ids)
    if next_after is not None:
        out.print(plain(f"more: {shlex.join([*again, '--after', next_after])}"))


def _cell(value: object) -> object:
    return "" if value is None else value


async def _show(documents: DocumentStore, collection: str, given: str, what: str,
                json_: bool) -> None:
    """One document, the one `given` names: its fields, or with `--json` the document."""
    key = await _resolved(documents, collection, given, what)
    doc = None if key is None else await documents.get(collection, key)
    if doc is None:
        raise CommandFailed(f"no {what} {given!r}")
    if json_:
        print_json(_exact(doc))
        return
    print_table(console_for_output(), f"{what} {key}", ("field", "value"),
                ((name, ", ".join(map(str, value)) if isinstance(value, list) else _cell(value))
                 for name, value in doc.items()), ids=("value",))


@directory_app.command("musicians")
def directory_musicians(
        one: IdArgument = None,
        genre: Annotated[str | None, typer.Option(
            "--genre", help="Only musicians who play this genre (any case).")] = None,
        location: Annotated[str | None, typer.Option(
            "--location", help="Only musicians in this location (any case).")] = None,
        limit: LimitOption = 50, after: AfterOption = "", json_: JsonOption = False) -> None:
    """Musicians' profiles, by id: what they play, where, and how many applications and
    contracts they have. With an ID: that musician alone."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            if one is not None:
                await _show(application.documents, PROFILES, one, "musician", json_)
                return
            documents = application.documents
            if genre is not None and location is not None:
                # The matching index holds exactly these musicians, keyed by prefix + id.
                prefix = matching_prefix(genre, location)
                entries, more = await filtered_page(
                    documents, MATCHING_INDEX, None, limit=limit,
                    after=prefix + after if after else "", prefix=prefix)
                found = [await documents.get(PROFILES, key[len(prefix):])
                         for key, _ in entries]
                musicians = [doc for doc in found if doc is not None]
                last = entries[-1][0][len(prefix):] if entries else ""
            else:
                def keep(doc: Document) -> bool:
                    return ((genre is None or _folded(genre) in map(_folded, doc["genres"]))
                            and (location is None
                                 or _folded(location) == _folded(doc["location"])))

                page, more = await filtered_page(documents, PROFILES, keep, limit=limit,
                                                 after=after)
                musicians = [doc for _, doc in page]
                last = page[-1][0] if page else ""
        _print("musicians", musicians, last if more else None, json_,
               ("id", "name", "genres", "location", "applications", "contracts",
                "registered at"),
               lambda d: (d["musician_id"], d["name"], ", ".join(d["genres"]), d["location"],
                          d.get("applications", 0), d.get("contracts", 0),
                          d.get("registered_at", "")),
               ids=("id",),
               again=_again("musicians", limit, ("--genre", genre), ("--location", location)))

    run(go)


@directory_app.command("gigs")
def directory_gigs(
        one: IdArgument = None,
        open_only: Annotated[bool, typer.Option(
            "--open/--all", help="Only the gigs open to applications, or every gig.")] = True,
        organizer: OrganizerOption = None, limit: LimitOption = 50, after: AfterOption = "",
        json_: JsonOption = False) -> None:
    """Gigs, by id: the open ones unless `--all`. With an ID: that gig alone."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            if one is not None:
                await _show(application.documents, GIGS, one, "gig", json_)
                return
            documents = application.documents
            organizer_id = await _resolved(documents, ORGANIZERS, organizer, "organizer")

            def keep(doc: Document) -> bool:
                return ((not open_only or doc["status"] == "Open")
                        and (organizer_id is None or doc["organizer_id"] == organizer_id))

            page, more = await filtered_page(documents, GIGS, keep, limit=limit, after=after)
        _print("gigs", [doc for _, doc in page], page[-1][0] if more else None, json_,
               ("id", "title", "organizer", "date", "location", "genre", "budget", "status"),
               lambda d: (d["gig_id"], d["title"], d["organizer_id"], d["event_date"],
                          d["location"], d["genre"], d["budget"], d["status"]),
               ids=("id", "organizer"),
               again=_again("gigs", limit, ("--all", not open_only), ("--organizer", organizer)))

    run(go)


@directory_app.command("applications")
def directory_applications(
        one: IdArgument = None,
        gig: Annotated[str | None, typer.Option(
            "--gig", help="Only applications to this gig (an id, or the start of one that "
                          "names only one).")] = None,
        musician: MusicianOption = None, limit: LimitOption = 50, after: AfterOption = "",
        json_: JsonOption = False) -> None:
    """Applications to gigs, by id, with their fees and where they stand. With an ID: that
    application alone."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            if one is not None:
                await _show(application.documents, APPLICATIONS, one, "application", json_)
                return
            documents = application.documents
            gig_id = await _resolved(documents, GIGS, gig, "gig")
            musician_id = await _resolved(documents, PROFILES, musician, "musician")

            def keep(doc: Document) -> bool:
                return ((gig_id is None or doc["gig_id"] == gig_id)
                        and (musician_id is None or doc["musician_id"] == musician_id))

            page, more = await filtered_page(documents, APPLICATIONS, keep, limit=limit,
                                             after=after)
        _print("applications", [doc for _, doc in page], page[-1][0] if more else None, json_,
               ("id", "gig", "musician", "proposed fee", "agreed fee", "status", "reason"),
               lambda d: (d["application_id"], d["gig_id"], d["musician_id"],
                          d["proposed_fee"], _cell(d.get("agreed_fee")), d["status"],
                          d.get("reason", "")),
               ids=("id", "gig", "musician"),
               again=_again("applications", limit, ("--gig", gig), ("--musician", musician)))

    run(go)


@directory_app.command("contracts")
def directory_contracts(
        one: IdArgument = None,
        status: Annotated[str | None, typer.Option(
            "--status", help=f"Only contracts in this status: {', '.join(CONTRACT_STATUSES)} "
                             "(any case).")] = None,
        musician: MusicianOption = None, organizer: OrganizerOption = None,
        limit: LimitOption = 50, after: AfterOption = "", json_: JsonOption = False) -> None:
    """Contracts, by id: who, for which gig, how much, and where they stand. With an ID: that
    contract alone."""
    async def go() -> None:
        wanted = None if status is None else next(
            (s for s in CONTRACT_STATUSES if _folded(s) == _folded(status)), "")
        if wanted == "":
            raise CommandFailed(f"--status {status!r}: give one of "
                                f"{', '.join(CONTRACT_STATUSES)}")
        async with opened(read_only=True) as application:
            if one is not None:
                await _show(application.documents, CONTRACTS, one, "contract", json_)
                return
            documents = application.documents
            musician_id = await _resolved(documents, PROFILES, musician, "musician")
            organizer_id = await _resolved(documents, ORGANIZERS, organizer, "organizer")

            def keep(doc: Document) -> bool:
                return ((wanted is None or doc["status"] == wanted)
                        and (musician_id is None or doc["musician_id"] == musician_id)
                        and (organizer_id is None or doc["organizer_id"] == organizer_id))

            page, more = await filtered_page(documents, CONTRACTS, keep, limit=limit, after=after)
        _print("contracts", [doc for _, doc in page], page[-1][0] if more else None, json_,
               ("id", "gig", "musician", "organizer", "amount", "event date", "status",
                "reason"),
               lambda d: (d["contract_id"], d["gig_id"], d["musician_id"], d["organizer_id"],
                          d["amount"], d["event_date"], d["status"], d.get("reason", "")),
               ids=("id", "gig", "musician", "organizer"),
               again=_again("contracts", limit, ("--status", status), ("--musician", musician),
                            ("--organizer", organizer)))

    run(go)
