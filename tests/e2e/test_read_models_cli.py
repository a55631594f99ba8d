"""`mussikon directory …` and `mussikon analytics` on a SQLite store filled through the
marketplace: filters, pages that visit each item once, one JSON document with `--json`,
names from outside printed as typed, whole ids, and one error line when something is wrong."""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.command_line import environment, mussikon, one_error_line

from mussikon.bootstrap import open_app
from mussikon.config import Settings

EVIL_NAME = "[link=http://evil.example]x[/link]"

MUSICIANS = [  # name, genres, location
    (EVIL_NAME, ["Jazz"], "Cali"),
    ("Ana", ["Jazz", "Bolero"], "Cali"),
    ("Luis", ["jazz"], "CALI"),
    ("Marta", ["Salsa"], "Cali"),
    ("Juan", ["Jazz"], "Bogotá"),
    ("Eva", ["Salsa", "Jazz"], "Bogotá"),
    ("Sol", ["Bolero"], "Medellín"),
]
TWINS = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002")
"""The ids of Eva and Sol, which start alike."""


@dataclass
class Filled:
    """The store and the ids the marketplace gave."""

    store: Path
    musicians: dict[str, str] = field(default_factory=dict)
    organizers: dict[str, str] = field(default_factory=dict)
    gigs: dict[str, str] = field(default_factory=dict)
    applications: dict[str, str] = field(default_factory=dict)
    contracts: dict[str, str] = field(default_factory=dict)


async def fill(filled: Filled) -> None:
    app = await open_app(Settings(store_url=f"sqlite:///{filled.store}",
                                  broker_url="memory://", poll_interval=0.01))
    try:
        await app.start()
        m = app.marketplace
        for n, (name, genres, location) in enumerate(MUSICIANS):
            filled.musicians[name] = await m.register_musician(
                email=f"m{n}@example.com", name=name, genres=genres, location=location,
                musician_id=dict(zip(("Eva", "Sol"), TWINS, strict=True)).get(name))
        filled.organizers["casa"] = await m.register_organizer(
            email="casa@example.com", name="Casa", payment_source="tok_visa")
        filled.organizers["hotel"] = await m.register_organizer(
            email="hotel@example.com", name="Hotel", payment_source="tok_visa")
        night = datetime.now(UTC).replace(hour=23, minute=0, second=0, microsecond=0)
        for n, (key, organizer, genre, location) in enumerate([
                ("jazz", "casa", "Jazz", "Cali"), ("salsa", "casa", "Salsa", "Cali"),
                ("bolero", "casa", "Bolero", "Medellín"), ("fiesta", "hotel", "Jazz", "Bogotá")]):
            filled.gigs[key] = await m.create_gig(
                organizer_id=filled.organizers[organizer], title=f"Noche {key}",
                event_date=night + timedelta(days=30 + n), location=location, genre=genre,
                budget=Decimal("1500.00"))
        await m.close_gig(filled.gigs["bolero"], "cancelled by the venue")
        for who, gig, fee in [("Ana", "jazz", "1200.50"), ("Luis", "jazz", "900"),
                              ("Marta", "salsa", "800.25"), ("Juan", "fiesta", "700.10")]:
            filled.applications[f"{who}-{gig}"] = await m.submit_application(
                musician_id=filled.musicians[who], gig_id=filled.gigs[gig], message="Hola",
                proposed_fee=Decimal(fee))
        await app.settle()
        for key, organizer in (("Ana-jazz", "casa"), ("Juan-fiesta", "hotel")):
            filled.contracts[key] = await m.accept_application(
                filled.applications[key], organizer_id=filled.organizers[organizer])
        await m.reject_application(filled.applications["Luis-jazz"], "another act")
        await app.settle()
        await m.sign_contract(filled.contracts["Ana-jazz"], filled.musicians["Ana"])
        await m.sign_contract(filled.contracts["Ana-jazz"], filled.organizers["casa"])
        await app.settle()
    finally:
        await app.close()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    result = Filled(tmp_path_factory.mktemp("read-models") / "mussikon.db")
    asyncio.run(fill(result))
    return result


def run(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = environment(store_url=f"sqlite:///{store}", broker_url="memory://")
    env.pop("COLUMNS")  # piped, as a script runs it
    return mussikon(*args, cwd=store.parent, env=env)


def output(*args: str, store: Path) -> str:
    done = run(*args, store=store)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def document(*args: str, store: Path) -> Any:
    """The one JSON document on stdout (json.loads refuses anything else there)."""
    return json.loads(output(*args, "--json", store=store))


def every_page(command: list[str], name: str, key: str, limit: int, store: Path
               ) -> list[list[str]]:
    """The ids of each page, following `next_after` to the end."""
    pages: list[list[str]] = []
    after: list[str] = []
    while True:
        page = document(*command, "--limit", str(limit), *after, store=store)
        pages.append([item[key] for item in page[name]])
        if page["next_after"] is None:
            return pages
        assert page["next_after"] == pages[-1][-1]
        after = ["--after", page["next_after"]]


def test_musicians_filter_by_genre_and_location_in_any_case(filled: Filled) -> None:
    ids = filled.musicians
    everyone = document("directory", "musicians", store=filled.store)
    assert [m["musician_id"] for m in everyone["musicians"]] == sorted(ids.values())
    assert everyone["next_after"] is None

    def listed(*filters: str) -> set[str]:
        found = document("directory", "musicians", *filters, store=filled.store)
        return {m["name"] for m in found["musicians"]}

    jazz_in_cali = {EVIL_NAME, "Ana", "Luis"}
    assert listed("--genre", "JAZZ", "--location", "cali") == jazz_in_cali  # the index
    assert listed("--genre", "jazz") == jazz_in_cali | {"Juan", "Eva"}
    assert listed("--location", "bogotá") == {"Juan", "Eva"}
    assert listed("--genre", "Tango") == set()


@pytest.mark.parametrize("filters", [(), ("--genre", "jazz", "--location", "Cali"),
                                     ("--genre", "jazz")])
def test_musicians_pages_visit_each_one_once_in_id_order(filled: Filled,
                                                         filters: tuple[str, ...]) -> None:
    whole = document("directory", "musicians", *filters, store=filled.store)
    expected = [m["musician_id"] for m in whole["musicians"]]
    pages = every_page(["directory", "musicians", *filters], "musicians", "musician_id", 2,
                       filled.store)
    assert all(len(page) <= 2 for page in pages)
    assert [i for page in pages for i in page] == expected


def test_a_table_prints_names_as_typed_and_whole_ids(filled: Filled) -> None:
    assert EVIL_NAME in output("directory", "musicians", store=filled.store)
    out = output("directory", "musicians", "--limit", "3", store=filled.store)
    first_three = sorted(filled.musicians.values())[:3]
    for musician_id in first_three:
        assert musician_id in out
    assert f"more: mussikon directory musicians --limit 3 --after {first_three[-1]}" in out
    gigs = output("directory", "gigs", "--all", "--organizer", filled.organizers["casa"],
                  "--limit", "1", store=filled.store)
    first_gig = min(filled.gigs[k] for k in ("jazz", "salsa", "bolero"))
    assert (f"more: mussikon directory gigs --all --organizer {filled.organizers['casa']}"
            f" --limit 1 --after {first_gig}") in gigs
    jazz = output("directory", "musicians", "--genre", "Jazz Fusion", "--location", "Cali",
                  "--limit", "1", store=filled.store)
    assert "0 musicians" in jazz and "more:" not in jazz


def test_gigs_are_the_open_ones_unless_all_and_filter_by_organizer_prefix(
        filled: Filled) -> None:
    gigs = filled.gigs

    def listed(*filters: str) -> set[str]:
        found = document("directory", "gigs", *filters, store=filled.store)
        return {g["gig_id"] for g in found["gigs"]}

    assert listed() == {gigs["jazz"], gigs["salsa"], gigs["fiesta"]}
    assert listed("--all") == set(gigs.values())
    casa = filled.organizers["casa"]
    assert listed("--all", "--organizer", casa[:8]) == {gigs["jazz"], gigs["salsa"],
                                                        gigs["bolero"]}
    closed = document("directory", "gigs", "--all", "--organizer", casa, store=filled.store)
    assert {g["status"] for g in closed["gigs"]} == {"Open", "Closed"}
    assert {g["budget"] for g in closed["gigs"]} == {"1500.00"}  # exact, as a string
    table = output("directory", "gigs", "--all", store=filled.store)
    assert "Noche bolero" in table and "Closed" in table and casa in table


def test_applications_filter_by_gig_and_musician(filled: Filled) -> None:
    gig, ana = filled.gigs["jazz"], filled.musicians["Ana"]
    to_jazz = document("directory", "applications", "--gig", gig[:10], store=filled.store)
    assert {a["application_id"] for a in to_jazz["applications"]} == {
        filled.applications["Ana-jazz"], filled.applications["Luis-jazz"]}
    by_status = {a["status"]: a for a in to_jazz["applications"]}
    assert by_status["Rejected"]["reason"] == "another act"
    assert by_status["Accepted"]["proposed_fee"] == "1200.50"
    anas = document("directory", "applications", "--musician", ana, "--gig", gig,
                    store=filled.store)
    assert [a["application_id"] for a in anas["applications"]] == [
        filled.applications["Ana-jazz"]]
    pages = every_page(["directory", "applications"], "applications", "application_id", 3,
                       filled.store)
    assert [i for page in pages for i in page] == sorted(filled.applications.values())


def test_contracts_filter_by_status_musician_and_organizer(filled: Filled) -> None:
    def listed(*filters: str) -> dict[str, dict[str, Any]]:
        found = document("directory", "contracts", *filters, store=filled.store)
        return {c["contract_id"]: c for c in found["contracts"]}

    paid, drafted = filled.contracts["Ana-jazz"], filled.contracts["Juan-fiesta"]
    assert set(listed()) == {paid, drafted}
    assert set(listed("--status", "paid")) == {paid}
    assert listed("--status", "paid")[paid]["amount"] == "1200.50"
    assert set(listed("--status", "Drafted")) == {drafted}
    assert set(listed("--musician", filled.musicians["Juan"])) == {drafted}
    assert set(listed("--organizer", filled.organizers["casa"], "--status", "Paid")) == {paid}
    assert listed("--organizer", filled.organizers["casa"], "--status", "Cancelled") == {}


def test_analytics_counts_and_exact_amounts(filled: Filled) -> None:
    summary = document("analytics", store=filled.store)
    assert summary["by_kind"]["user-registered"] == len(MUSICIANS) + 2
    assert summary["by_kind"]["gig-created"] == 4
    assert summary["by_kind"]["application-submitted"] == 4
    assert summary["by_location"]["Cali"] >= 3
    assert summary["contracted"] == "1200.50"
    assert summary["paid"] == "1200.50"
    table = output("analytics", store=filled.store)
    for text in ("user-registered", "Bolero", "Medellín", "contracted", "1200.50"):
        assert text in table


def test_an_id_or_its_start_shows_that_one_alone(filled: Filled) -> None:
    gig = filled.gigs["bolero"]
    shown = document("directory", "gigs", gig[:9], store=filled.store)
    assert shown["gig_id"] == gig and shown["status"] == "Closed"
    assert shown["budget"] == "1500.00"
    evil = filled.musicians[EVIL_NAME]
    table = output("directory", "musicians", evil, "--genre", "Tango", store=filled.store)
    assert f"musician {evil}" in table
    assert EVIL_NAME in table and "Jazz" in table and "Cali" in table
    contract = filled.contracts["Ana-jazz"]
    assert document("directory", "contracts", contract, store=filled.store)["status"] == "Paid"
    application = filled.applications["Luis-jazz"]
    assert document("directory", "applications", application[:12],
                    store=filled.store)["reason"] == "another act"


@pytest.mark.parametrize("args, names", [
    (("directory", "gigs", "not-a-gig"), "no gig 'not-a-gig'"),
    (("directory", "musicians", "0000", "--json"), "'0000' names 2 musicians"),
    (("directory", "contracts", "--status", "lost"), "--status 'lost'"),
    (("directory", "applications", "--musician", "no-such-id"), "no musician 'no-such-id'"),
    (("directory", "gigs", "--organizer", ""), "no organizer ''"),
])
def test_bad_filters_say_so_in_one_line(filled: Filled, args: tuple[str, ...],
                                        names: str) -> None:
    assert names in one_error_line(run(*args, store=filled.store))


def test_an_ambiguous_prefix_names_the_candidates(filled: Filled) -> None:
    line = one_error_line(run("directory", "contracts", "--musician", "0000000",
                              store=filled.store))
    assert "'0000000' names 2 musicians" in line
    assert TWINS[0] in line and TWINS[1] in line


@pytest.mark.parametrize("args", [("directory", "musicians"), ("directory", "gigs", "--json"),
                                  ("analytics",), ("analytics", "--json")])
def test_a_missing_store_is_one_error_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run(*args, store=tmp_path / "missing.db")
    one_error_line(done)
    assert done.stdout == ""
    assert not (tmp_path / "missing.db").exists()
