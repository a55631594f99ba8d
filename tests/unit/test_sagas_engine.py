"""The saga engine with a toy saga: steps in order, compensation in reverse with the reason,
messages handled once, a crash between two steps resumed exactly once, optimistic
concurrency between handlers, durable timeouts driven by a fake clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from mussikon.adapters.clock import FakeClock
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application.sagas.engine import SagaEngine
from mussikon.application.sagas.journal import SagaJournal
from mussikon.application.sagas.state import SagaState, SagaStatus
from mussikon.application.sagas.steps import (
    Done,
    Failed,
    Outcome,
    SagaDefinition,
    Step,
    StepContext,
    TimeoutRequest,
    Wait,
)
from mussikon.application.sagas.timeouts import TimeoutScheduler
from mussikon.application.sagas.versioned import VersionedDocuments
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent, OrganizerRegisteredEvent
from mussikon.ports.transport import Envelope


class Crash(Exception):
    """The process died here."""


class Effects(Counter[str]):
    """How many times each step's work and each compensation ran."""


class Work(Step):
    """Does its work (counted); fails or crashes when told to."""

    def __init__(self, name: str, effects: Effects, *, fail: str = "", crash_once: bool = False,
                 compensable: bool = True) -> None:
        self.name = name  # type: ignore[misc]
        self.compensable = compensable  # type: ignore[misc]
        self.effects, self.fail, self.crash_once = effects, fail, crash_once

    async def run(self, ctx: StepContext) -> Outcome:
        self.effects[self.name] += 1
        if self.crash_once:
            self.crash_once = False
            raise Crash(f"killed during {self.name}")
        await asyncio.sleep(0)  # let concurrent handlers interleave
        return Failed(self.fail) if self.fail else Done({self.name: "done"})

    async def compensate(self, ctx: StepContext) -> str:
        self.effects[f"undo {self.name}"] += 1
        return f"undid {self.name} because {ctx.reason}"


class AwaitPing(Step):
    """Waits for an OrganizerRegisteredEvent with the instance's id, or a deadline."""

    name = "await-ping"

    async def run(self, ctx: StepContext) -> Outcome:
        return Wait(timeout=TimeoutRequest("deadline", timedelta(hours=1)))

    async def on_event(self, ctx: StepContext, event: DomainEvent) -> Outcome | None:
        return Done(note="pinged") if isinstance(event, OrganizerRegisteredEvent) else None

    async def on_timeout(self, ctx: StepContext, name: str) -> Outcome:
        return Failed(f"no ping before the {name}")


class ToySaga(SagaDefinition):
    """Started by a musician's registration; an organizer with the same id pings it."""

    kind = "toy"
    event_types = frozenset({"MusicianRegisteredEvent", "OrganizerRegisteredEvent"})

    def __init__(self, steps: list[Step]) -> None:
        self._steps = steps

    @property
    def steps(self) -> Sequence[Step]:
        return self._steps

    def correlate(self, event: DomainEvent) -> str | None:
        if isinstance(event, MusicianRegisteredEvent):
            return event.musician_id
        if isinstance(event, OrganizerRegisteredEvent):
            return event.organizer_id
        return None

    def starts(self, event: DomainEvent) -> bool:
        return isinstance(event, MusicianRegisteredEvent)

    def initial_data(self, event: DomainEvent) -> dict[str, Any]:
        return {"started_by": str(event.id)}


def started(instance: str = "m1") -> Envelope:
    event = MusicianRegisteredEvent(musician_id=instance, email="a@x.example", name="A",
                                    genres=("Jazz",), location="SD")
    return Envelope(str(event.id), event)


def ping(instance: str = "m1") -> Envelope:
    event = OrganizerRegisteredEvent(organizer_id=instance, email="o@x.example", name="O",
                                     payment_source="")
    return Envelope(str(event.id), event)


class Rig:
    """An engine for the toy saga over memory documents and a fake clock."""

    def __init__(self, steps: list[Step]) -> None:
        self.documents = InMemoryDocumentStore()
        self.clock = FakeClock()
        self.journal = SagaJournal(self.documents)
        self.engine = SagaEngine(ToySaga(steps), self.journal, self.clock)
        self.scheduler = TimeoutScheduler(self.documents, self.clock, self.engine.fire)

    async def state(self, instance: str = "m1") -> SagaState:
        found = await self.journal.find(f"toy-{instance}")
        assert found is not None
        return found

    async def records(self, instance: str = "m1") -> list[tuple[str, str]]:
        return [(h.kind, h.step) for h in await self.journal.history(f"toy-{instance}")]

    async def message_ids(self, instance: str = "m1") -> set[str]:
        """The messages whose handling recorded something, by the instance's history."""
        return {h.message_id for h in await self.journal.history(f"toy-{instance}")}


async def test_the_steps_run_in_order_and_the_instance_completes() -> None:
    effects = Effects()
    rig = Rig([Work("a", effects), Work("b", effects), Work("c", effects)])
    await rig.engine.handle_event(started())
    state = await rig.state()
    assert state.status is SagaStatus.COMPLETED
    assert state.completed == ["a", "b", "c"]
    assert state.data["c"] == "done"
    assert effects == Effects({"a": 1, "b": 1, "c": 1})
    assert await rig.records() == [("Started", ""), ("StepCompleted", "a"),
                                   ("StepCompleted", "b"), ("StepCompleted", "c"),
                                   ("Completed", "")]


async def test_a_failing_step_compensates_the_completed_ones_last_first_and_keeps_the_reason(
        ) -> None:
    effects = Effects()
    rig = Rig([Work("a", effects), Work("b", effects, compensable=False), Work("c", effects),
               Work("d", effects, fail="the card was declined"), Work("e", effects)])
    await rig.engine.handle_event(started())
    state = await rig.state()
    assert state.status is SagaStatus.COMPENSATED
    assert (state.failed_step, state.reason) == ("d", "the card was declined")
    assert state.compensated == ["c", "a"]  # b undoes nothing; e never ran
    assert effects == Effects({"a": 1, "b": 1, "c": 1, "d": 1, "undo c": 1, "undo a": 1})
    history = await rig.journal.history("toy-m1")
    assert [(h.kind, h.step) for h in history[-4:]] == [
        ("StepFailed", "d"), ("StepCompensated", "c"), ("StepCompensated", "a"),
        ("Compensated", "")]
    assert history[-2].detail == "undid a because the card was declined"


async def test_a_failing_first_step_leaves_nothing_to_undo() -> None:
    effects = Effects()
    rig = Rig([Work("a", effects, fail="nope"), Work("b", effects)])
    await rig.engine.handle_event(started())
    state = await rig.state()
    assert state.status is SagaStatus.COMPENSATED
    assert state.compensated == []
    assert effects == Effects({"a": 1})


async def test_the_same_message_twice_is_handled_once() -> None:
    effects = Effects()
    rig = Rig([Work("a", effects), AwaitPing(), Work("b", effects)])
    start, pinged = started(), ping()
    for envelope in (start, start, pinged, pinged, start):
        await rig.engine.handle_event(envelope)
    assert effects == Effects({"a": 1, "b": 1})
    state = await rig.state()
    assert state.status is SagaStatus.COMPLETED
    assert await rig.message_ids() == {start.message_id, pinged.message_id}
    assert state.handled == []  # finished: it keeps no message ids


async def test_a_waiting_instance_keeps_the_ids_of_its_wait_and_of_the_one_that_led_to_it(
        ) -> None:
    effects = Effects()

    class SecondPing(AwaitPing):
        name = "second-ping"

    rig = Rig([Work("a", effects), AwaitPing(), SecondPing(), Work("b", effects)])
    start, first, second = started(), ping(), ping()
    await rig.engine.handle_event(start)
    assert (await rig.state()).handled == [start.message_id]
    await rig.engine.handle_event(first)
    waiting = await rig.state()
    assert (waiting.current_step, waiting.handled) == ("second-ping", [first.message_id])
    await rig.engine.handle_event(first)  # again: the second wait does not take it
    assert (await rig.state()).current_step == "second-ping"
    await rig.engine.handle_event(second)
    state = await rig.state()
    assert (state.status, state.handled) == (SagaStatus.COMPLETED, [])
    records = await rig.records()
    for envelope in (start, first, second):  # a finished instance decides nothing again
        await rig.engine.handle_event(envelope)
    assert await rig.records() == records
    assert effects == Effects({"a": 1, "b": 1})


async def test_an_event_for_no_instance_and_not_a_start_is_ignored() -> None:
    rig = Rig([AwaitPing()])
    await rig.engine.handle_event(ping("nobody"))
    assert await rig.journal.find("toy-nobody") is None


async def test_killed_between_two_steps_the_redelivered_message_resumes_and_finishes_once(
        ) -> None:
    effects = Effects()
    rig = Rig([Work("a", effects), Work("b", effects, crash_once=True), Work("c", effects)])
    message = started()
    with pytest.raises(Crash):
        await rig.engine.handle_event(message)
    halfway = await rig.state()
    assert (halfway.status, halfway.completed) == (SagaStatus.RUNNING, ["a"])
    # A new process (a new engine over the same documents) gets the message again.
    restarted = SagaEngine(rig.engine.definition, SagaJournal(rig.documents), rig.clock)
    await restarted.handle_event(message)
    await restarted.handle_event(message)
    state = await rig.state()
    assert state.status is SagaStatus.COMPLETED
    # b's work ran twice (the crash cut it off before its outcome was committed); its outcome
    # and every other step's work were recorded once.
    assert effects == Effects({"a": 1, "b": 2, "c": 1})
    assert [r for r in await rig.records() if r[0] == "StepCompleted"] == [
        ("StepCompleted", "a"), ("StepCompleted", "b"), ("StepCompleted", "c")]


async def test_a_message_that_resumes_unfinished_work_still_reaches_the_step_awaiting_it(
        ) -> None:
    effects = Effects()
    rig = Rig([Work("a", effects, crash_once=True), AwaitPing(), Work("c", effects)])
    start, pinged = started(), ping()
    with pytest.raises(Crash):
        await rig.engine.handle_event(start)
    await rig.engine.handle_event(pinged)  # comes before the start is redelivered
    state = await rig.state()
    assert state.status is SagaStatus.COMPLETED
    assert effects == Effects({"a": 2, "c": 1})
    assert await rig.message_ids() == {start.message_id, pinged.message_id}


async def test_a_crash_while_compensating_resumes_the_remaining_compensations_once() -> None:
    effects = Effects()

    class CrashingUndo(Work):
        crashed = False

        async def compensate(self, ctx: StepContext) -> str:
            if not CrashingUndo.crashed:
                CrashingUndo.crashed = True
                raise Crash("killed while undoing")
            return await super().compensate(ctx)

    rig = Rig([Work("a", effects), CrashingUndo("b", effects), Work("c", effects, fail="no")])
    message = started()
    with pytest.raises(Crash):
        await rig.engine.handle_event(message)
    assert (await rig.state()).status is SagaStatus.COMPENSATING
    await rig.engine.handle_event(message)
    state = await rig.state()
    assert state.status is SagaStatus.COMPENSATED
    assert state.compensated == ["b", "a"]
    assert effects["undo b"] == 1
    assert effects["undo a"] == 1


async def test_handlers_racing_on_one_instance_commit_one_decision_each() -> None:
    effects = Effects()
    rig = Rig([Work("a", effects), Work("b", effects), AwaitPing(), Work("c", effects)])
    commit, lost = rig.journal.commit, []

    async def counting_commit(*args: Any) -> bool:
        written = await commit(*args)
        lost.extend([] if written else [args[-2]])
        return written

    rig.journal.commit = counting_commit  # type: ignore[method-assign,assignment]
    start, pinged = started(), ping()
    await asyncio.gather(*(rig.engine.handle_event(e) for e in (start, pinged, start, pinged)))
    await rig.engine.handle_event(pinged)  # the ping may have come before the wait began
    state = await rig.state()
    assert state.status is SagaStatus.COMPLETED
    kinds = [r for r in await rig.records() if r[0] == "StepCompleted"]
    assert kinds == [("StepCompleted", s) for s in ("a", "b", "await-ping", "c")]
    assert await rig.message_ids() == {start.message_id, pinged.message_id}
    assert lost  # they did race: the losers reloaded and carried on


async def test_many_instances_run_side_by_side() -> None:
    effects = Effects()
    rig = Rig([Work("a", effects), Work("b", effects)])
    await asyncio.gather(*(rig.engine.handle_event(started(f"m{n}")) for n in range(20)))
    states = await rig.journal.instances(SagaStatus.COMPLETED)
    assert len(states) == 20
    assert effects == Effects({"a": 20, "b": 20})


async def test_a_timeout_fires_when_the_clock_says_so_and_only_once() -> None:
    effects = Effects()
    rig = Rig([Work("a", effects), AwaitPing(), Work("b", effects)])
    await rig.engine.handle_event(started())
    [pending] = await rig.scheduler.pending()
    assert pending.due_at == rig.clock.now() + timedelta(hours=1)
    rig.clock.advance(timedelta(minutes=59))
    assert await rig.scheduler.fire_due() == 0
    assert (await rig.state()).status is SagaStatus.WAITING
    rig.clock.advance(timedelta(minutes=1))
    assert await rig.scheduler.fire_due() == 1
    state = await rig.state()
    assert state.status is SagaStatus.COMPENSATED
    assert state.reason == "no ping before the deadline"
    assert await rig.scheduler.pending() == []  # deleted with the state that handled it
    await rig.engine.fire(pending)  # fired again by a second scheduler: no effect
    assert effects == Effects({"a": 1, "undo a": 1})
    assert await rig.records() == [
        ("Started", ""), ("StepCompleted", "a"), ("StepWaiting", "await-ping"),
        ("TimeoutScheduled", "await-ping"), ("TimeoutFired", "await-ping"),
        ("StepFailed", "await-ping"), ("StepCompensated", "a"), ("Compensated", "")]


async def test_a_step_that_ends_before_its_timeout_cancels_it() -> None:
    effects = Effects()
    rig = Rig([AwaitPing(), Work("b", effects)])
    await rig.engine.handle_event(started())
    [pending] = await rig.scheduler.pending()
    await rig.engine.handle_event(ping())
    assert await rig.scheduler.pending() == []
    rig.clock.advance(timedelta(hours=2))
    await rig.engine.fire(pending)  # a copy that was in flight: nobody waits for it
    assert (await rig.state()).status is SagaStatus.COMPLETED
    assert effects == Effects({"b": 1})


class AwaitPingOrGoOn(AwaitPing):
    """Goes on without the ping once the deadline passes."""

    async def on_timeout(self, ctx: StepContext, name: str) -> Outcome:
        return Done(note=f"went on at the {name}")


async def test_killed_after_a_timeout_fired_the_timeout_fires_again_and_the_work_resumes(
        ) -> None:
    effects = Effects()
    rig = Rig([AwaitPingOrGoOn(), Work("b", effects, crash_once=True), Work("c", effects)])
    await rig.engine.handle_event(started())
    rig.clock.advance(timedelta(hours=1))
    assert await rig.scheduler.fire_due() == 0  # the handler died after the firing committed
    halfway = await rig.state()
    assert (halfway.status, halfway.completed) == (SagaStatus.RUNNING, ["await-ping"])
    assert len(await rig.scheduler.pending()) == 1  # kept until what it led to is done
    rig.clock.advance(timedelta(minutes=1))
    assert await rig.scheduler.fire_due() == 1
    state = await rig.state()
    assert state.status is SagaStatus.COMPLETED
    assert await rig.scheduler.pending() == []
    assert effects == Effects({"b": 2, "c": 1})
    assert [r for r in await rig.records() if r[0] == "TimeoutFired"] == [
        ("TimeoutFired", "await-ping")]


async def test_a_timeout_scheduled_before_a_restart_fires_after_it() -> None:
    rig = Rig([AwaitPing()])
    await rig.engine.handle_event(started())
    # Another process, started later, with only the documents in common.
    engine = SagaEngine(rig.engine.definition, SagaJournal(rig.documents), rig.clock)
    scheduler = TimeoutScheduler(rig.documents, rig.clock, engine.fire)
    rig.clock.advance(timedelta(hours=3))
    assert await scheduler.fire_due() == 1
    assert (await rig.state()).status is SagaStatus.COMPENSATED


async def test_a_failing_timeout_stays_scheduled_and_is_retried_after_a_backoff() -> None:
    rig = Rig([AwaitPing()])
    await rig.engine.handle_event(started())
    calls: list[str] = []

    async def flaky(timeout: Any) -> None:
        calls.append(timeout.name)
        if len(calls) == 1:
            raise ConnectionError("store unreachable")
        await rig.engine.fire(timeout)

    scheduler = TimeoutScheduler(rig.documents, rig.clock, flaky, poll_interval=1.0)
    rig.clock.advance(timedelta(hours=1))
    assert await scheduler.fire_due() == 0
    assert await scheduler.fire_due() == 0  # waiting out the backoff
    rig.clock.advance(timedelta(seconds=3))
    assert await scheduler.fire_due() == 1
    assert calls == ["deadline", "deadline"]
    assert (await rig.state()).status is SagaStatus.COMPENSATED


async def test_the_scheduler_loop_fires_due_timeouts_in_the_background() -> None:
    rig = Rig([AwaitPing()])
    await rig.engine.handle_event(started())
    scheduler = TimeoutScheduler(rig.documents, rig.clock, rig.engine.fire,
                                 poll_interval=0.01, poll_max_interval=0.02)
    await scheduler.start()
    try:
        rig.clock.advance(timedelta(hours=1))
        scheduler.wake()
        await scheduler.wait_idle(5)
    finally:
        await scheduler.stop()
    assert (await rig.state()).status is SagaStatus.COMPENSATED


async def test_a_versioned_document_is_written_once_per_version() -> None:
    docs = VersionedDocuments(InMemoryDocumentStore(), "things")
    assert await docs.read("k") == (None, 0)
    results = await asyncio.gather(*(docs.write("k", {"by": n}, 0) for n in range(5)))
    assert results.count(True) == 1
    winner = {"by": results.index(True), "version": 1}
    assert await docs.read("k") == (winner, 1)
    assert not await docs.write("k", {"by": "late"}, 0)
    assert await docs.read("k") == (winner, 1)
    assert await docs.write("k", {"by": "next"}, 1)
    assert await docs.read("k") == ({"by": "next", "version": 2}, 2)
