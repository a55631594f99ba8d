"""Counting what the workers did against what the workload sent: each command's own event in
the store and the effect the handlers, sagas and read models made of it, by id.

- register an organizer: its OrganizerRegisteredEvent; it is in the directory read model;
- register a musician: its MusicianRegisteredEvent; the welcome email about the musician;
- create a gig: its EventCreatedEvent; the new-gig email to the unit's musician;
- submit an application: its MusicianApplicationSubmittedEvent; the organizer's
  application-received email;
- accept the application: its ApplicationAcceptedEvent; the booking saga's
  ContractDraftedEvent.

A command is handled when its event is stored once and its effect happened once; lost when
either is missing; doubled when either happened more than once. The analytics read model must
count each registration, gig and application once: any excess is counted as doubled too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mussikon.application.projections.analytics import (
    APPLICATION_SUBMITTED,
    GIG_CREATED,
    USER_REGISTERED,
)
from mussikon.application.projections.directory import ORGANIZERS
from mussikon.bootstrap import App

EVENT_KEYS = {
    "OrganizerRegisteredEvent": "organizer_id",
    "MusicianRegisteredEvent": "musician_id",
    "EventCreatedEvent": "gig_id",
    "MusicianApplicationSubmittedEvent": "application_id",
    "ApplicationAcceptedEvent": "application_id",
    "ContractDraftedEvent": "contract_id",
}
"""The event types counted, and the field naming the aggregate each is about."""


@dataclass
class Tally:
    """Commands sent and what became of them."""

    sent: int = 0
    handled: int = 0
    lost: int = 0
    doubled: int = 0
    dead_lettered: int = 0
    examples: list[str] = field(default_factory=list)

    def line(self, scenario: str) -> str:
        return (f"{scenario}: {self.sent} sent, {self.handled} handled, {self.lost} lost, "
                f"{self.doubled} doubled, {self.dead_lettered} dead-lettered")

    @property
    def clean(self) -> bool:
        return self.sent > 0 and self.handled == self.sent and not (
            self.lost or self.doubled or self.dead_lettered)


def units(journal: Path) -> list[dict[str, str]]:
    """The units the workload finished, in order."""
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


async def stored_events(app: App) -> Counter[tuple[str, str]]:
    """(event type, aggregate id) → how many such events the store holds."""
    counts: Counter[tuple[str, str]] = Counter()
    position = 1
    while batch := await app.store.read_all(position, 2000):
        for recorded in batch:
            key = EVENT_KEYS.get(recorded.event.event_type)
            if key is not None:
                counts[(recorded.event.event_type, str(getattr(recorded.event, key)))] += 1
        position = batch[-1].position + 1
    return counts


async def emails(app: App, limit: int) -> Counter[tuple[str, str]]:
    """(kind, what it is about) → emails sent."""
    return Counter((s.notification.kind, s.notification.about)
                   for s in await app.notifier.sent(limit))


async def audit(app: App, journal: Path, dead_lettered: int) -> Tally:
    """The tally of the workload's journal against the store `app` opens."""
    done = units(journal)
    events = await stored_events(app)
    sent = await emails(app, 20 * len(done) + 100)
    organizers = {key for key, _ in await app.documents.scan(ORGANIZERS)}
    tally = Tally(sent=5 * len(done), dead_lettered=dead_lettered)

    def judge(what: str, counts: Iterable[int]) -> None:
        seen = list(counts)
        if all(count == 1 for count in seen):
            tally.handled += 1
            return
        if any(count > 1 for count in seen):
            tally.doubled += 1
        if any(count == 0 for count in seen):
            tally.lost += 1
        if len(tally.examples) < 10:
            tally.examples.append(f"{what}: {seen}")

    for unit in done:
        o, m, g, a, c = (unit[k] for k in ("organizer", "musician", "gig", "application",
                                           "contract"))
        judge(f"organizer {o}", [events["OrganizerRegisteredEvent", o], int(o in organizers)])
        judge(f"musician {m}", [events["MusicianRegisteredEvent", m], sent["welcome", m]])
        judge(f"gig {g}", [events["EventCreatedEvent", g], sent["new-gig", g]])
        judge(f"application {a}", [events["MusicianApplicationSubmittedEvent", a],
                                   sent["application-received", a]])
        judge(f"acceptance {a}", [events["ApplicationAcceptedEvent", a],
                                  events["ContractDraftedEvent", c]])
    counted = (await app.analytics.summary()).by_kind
    expected: dict[str, Any] = {USER_REGISTERED: 2 * len(done), GIG_CREATED: len(done),
                                APPLICATION_SUBMITTED: len(done)}
    for kind, count in expected.items():
        if counted[kind] > count:
            tally.doubled += counted[kind] - count
            tally.examples.append(f"analytics {kind}: {counted[kind]} counted, {count} sent")
    return tally
