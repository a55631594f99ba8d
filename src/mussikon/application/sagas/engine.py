"""The saga engine: runs the instances of one saga definition as a process manager.

For each message (an event from the transport, or a timeout from the scheduler) it loads
the instance the message correlates with, lets the current step decide, and commits the
decision as saga records together with the message's id, in one optimistic write. Then
it keeps going while there is work that needs no message: the next step, or the next
compensation. Between two commits a crash loses only work whose effects are idempotent:
the message is delivered again (the transport and the scheduler deliver at least once),
the instance is reloaded where it was, and the unfinished step runs again. A message
already handled changes nothing but still lets unfinished work resume. Two handlers
racing on one instance both decide; one commits, the other reloads and decides again.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from mussikon import tracing
from mussikon.application.repository import Cause
from mussikon.application.sagas.journal import SagaJournal
from mussikon.application.sagas.state import (
    PendingTimeout,
    RecordKind,
    SagaRecord,
    SagaState,
    SagaStatus,
    describe,
    outline,
)
from mussikon.application.sagas.steps import (
    Done,
    Failed,
    Outcome,
    SagaDefinition,
    Step,
    StepContext,
    Wait,
)
from mussikon.application.sagas.timeouts import ScheduledTimeout
from mussikon.domain.events import DomainEvent
from mussikon.ports.clock import Clock
from mussikon.ports.transport import Envelope, Subscription

log = logging.getLogger("mussikon.sagas")
reactions = logging.getLogger("mussikon.reactions")

_IDS = uuid.UUID("2f6b9d1c-5e3a-4c8b-a7d0-9e1f3b5c7a24")
CORRELATION = "correlation_id"
"""The data field holding the correlation id of the event that started the instance."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """A message for an instance: an event, one of its timeouts that fired, or neither (an
    operator's resume, which only does the work that needs no message)."""

    message_id: str
    event: DomainEvent | None = None
    timeout: ScheduledTimeout | None = None


class SagaConflict(Exception):
    """The instance kept changing under this handler; the message will be delivered again."""


class _Lost(Exception):
    """Another handler committed this instance's next version first."""


class SagaEngine:
    """Handles the messages of one saga definition's instances."""

    def __init__(self, definition: SagaDefinition, journal: SagaJournal, clock: Clock, *,
                 conflict_attempts: int = 20) -> None:
        self.definition = definition
        self.journal = journal
        self.clock = clock
        self.conflict_attempts = conflict_attempts
        self.steps: list[Step] = list(definition.steps)

    @property
    def kind(self) -> str:
        """The saga kind this engine runs."""
        return self.definition.kind

    def subscription(self) -> Subscription:
        """The subscription that brings this saga its events, on whatever transport runs."""
        return Subscription(f"sagas.{self.kind}", self.definition.event_types,
                            self.handle_event)

    async def handle_event(self, envelope: Envelope) -> None:
        """Deliver an event to the instance its ids correlate with (if any)."""
        instance = self.definition.correlate(envelope.event)
        if instance is not None:
            await self.handle(instance, Trigger(envelope.message_id, event=envelope.event))

    async def fire(self, timeout: ScheduledTimeout) -> None:
        """Deliver a timeout that fell due to its instance, then drop it: only once everything
        it led to is committed, so that a crash before then fires it again."""
        await self.handle(timeout.instance, Trigger(timeout.id, timeout=timeout))
        await self.journal.drop_timeout(timeout)

    async def resume(self, instance: str, events: Sequence[DomainEvent] = ()) -> SagaState:
        """Move an instance on from its durable state, as the deliveries it lost would have:
        first the work that needs no message (the current step run again, the next
        compensations), then each of `events` delivered again, in order. Everything goes
        through `handle`, so nothing is decided twice: a message the instance has handled
        decides nothing again, and each step's work is idempotent."""
        state = await self.handle(instance, Trigger(f"resume-{uuid.uuid4()}"))
        for event in events:
            if state.finished:
                break
            state = await self.handle(instance, Trigger(str(event.id), event=event))
        return state

    async def handle(self, instance: str, trigger: Trigger) -> SagaState:
        """Handle one message for one instance; return the instance as it was left."""
        for _ in range(self.conflict_attempts):
            state = await self.journal.load(self.kind, instance, [s.name for s in self.steps])
            try:
                return await self._advance(state, trigger)
            except _Lost:
                log.debug("saga %s-%s moved on while handling %s; reloading", self.kind,
                          instance, trigger.message_id)
        raise SagaConflict(f"saga {self.kind}-{instance} kept changing while handling message "
                           f"{trigger.message_id}")

    async def _advance(self, state: SagaState, trigger: Trigger) -> SagaState:
        if not state.exists:
            event = trigger.event
            if event is None or not self.definition.starts(event):
                return state
            data = {CORRELATION: str(event.correlation_id or event.id),
                    **self.definition.initial_data(event)}
            state = await self._commit(state, trigger, [
                SagaRecord(RecordKind.STARTED, detail=f"by {event.event_type}", data=data)],
                decided=True)
        state = await self._work(state, trigger)
        if state.has_handled(trigger.message_id) or state.status is not SagaStatus.WAITING:
            return state
        if trigger.event is None and trigger.timeout is None:
            return state  # a resume: a waiting step waits for its event or timeout
        step = self.steps[state.step]
        context = self._context(state, step)
        fired: PendingTimeout | None = None
        if trigger.timeout is not None:
            fired = state.timeouts.get(trigger.message_id)
            if fired is None:
                return state  # the step it was for has ended: nobody waits for it
            with self._span(state, step, "timeout"):
                outcome = await step.on_timeout(context, fired.name)
        else:
            assert trigger.event is not None
            with self._span(state, step, "event"):
                answer = await step.on_event(context, trigger.event)
            if answer is None:
                return state
            outcome = answer
        state = await self._record(state, trigger, step, outcome, fired, decided=True)
        return await self._work(state, trigger)

    async def _work(self, state: SagaState, trigger: Trigger) -> SagaState:
        """Run steps and compensations until the instance waits or is finished."""
        while True:
            if state.status is SagaStatus.RUNNING:
                step = self.steps[state.step]
                with self._span(state, step, "run"):
                    outcome = await step.run(self._context(state, step))
                state = await self._record(state, trigger, step, outcome)
            elif state.status is SagaStatus.COMPENSATING:
                undo = self._next_to_undo(state)
                if undo is None:
                    state = await self._commit(state, trigger, [
                        SagaRecord(RecordKind.COMPENSATED, detail=state.reason)])
                    continue
                with self._span(state, undo, "compensate"):
                    detail = await undo.compensate(self._context(state, undo))
                state = await self._commit(state, trigger, [
                    SagaRecord(RecordKind.STEP_COMPENSATED, step=undo.name, detail=detail)])
            else:
                return state

    async def _record(self, state: SagaState, trigger: Trigger, step: Step, outcome: Outcome,
                      fired: PendingTimeout | None = None, *, decided: bool = False
                      ) -> SagaState:
        records: list[SagaRecord] = []
        if fired is not None:
            records.append(SagaRecord(RecordKind.TIMEOUT_FIRED, step=step.name,
                                      detail=fired.name, timeout=fired))
        match outcome:
            case Done(data=data, note=note):
                records.append(SagaRecord(RecordKind.STEP_COMPLETED, step=step.name,
                                          detail=note, data=data))
                if step is self.steps[-1]:
                    records.append(SagaRecord(RecordKind.COMPLETED))
            case Failed(reason=reason):
                records.append(SagaRecord(RecordKind.STEP_FAILED, step=step.name, detail=reason))
            case Wait(data=data, timeout=request, note=note):
                records.append(SagaRecord(RecordKind.STEP_WAITING, step=step.name, detail=note,
                                          data=data))
                if request is not None:
                    timeout = PendingTimeout(
                        str(uuid.uuid5(_IDS, f"{state.saga_id}/{state.version + 1}/"
                                             f"{request.name}")),
                        request.name, step.name, self.clock.now() + request.after)
                    records.append(SagaRecord(
                        RecordKind.TIMEOUT_SCHEDULED, step=step.name,
                        detail=f"{request.name} at {timeout.due_at.isoformat()}",
                        timeout=timeout))
        return await self._commit(state, trigger, records, decided=decided)

    async def _commit(self, state: SagaState, trigger: Trigger, records: list[SagaRecord], *,
                      decided: bool = False) -> SagaState:
        """Commit records written while handling `trigger`; `decided` when they are what the
        trigger decided (it counts as handled then). Work merely resumed while handling it
        does not consume it: a waiting step the work leads to still gets the message."""
        at = self.clock.now()
        after = state.copy()
        for record in records:
            after.apply(record, trigger.message_id if decided else "", at)
        if not await self.journal.commit(state, after, records, trigger.message_id, at):
            raise _Lost
        what = describe(records)
        # The details (names, amounts, addresses) come from the events' bodies: debug only.
        log.info("saga %s: %s", after.saga_id, outline(records))
        log.debug("saga %s: %s", after.saga_id, what)
        event_type = trigger.event.event_type if trigger.event else \
            "timeout" if trigger.timeout else "resume"
        reactions.debug("saga %s: %s", self.kind, what,
                       extra={"event_type": event_type, "event_id": trigger.message_id,
                              "handler": f"saga {self.kind}", "reaction": what})
        return after

    def _span(self, state: SagaState, step: Step, operation: str
              ) -> contextlib.AbstractContextManager[None]:
        """The span of one step's `run`, `compensate` or reaction to an event or timeout."""
        if not tracing.enabled():
            return contextlib.nullcontext()
        return tracing.span(f"saga {self.kind} {step.name} {operation}", attributes={
            "mussikon.saga.kind": self.kind, "mussikon.saga.id": state.saga_id,
            "mussikon.saga.step": step.name, "mussikon.saga.operation": operation,
            tracing.CORRELATION: state.data.get(CORRELATION)})

    def _next_to_undo(self, state: SagaState) -> Step | None:
        for name in reversed(state.completed):
            step = self.definition.step_named(name)
            if step.compensable and name not in state.compensated:
                return step
        return None

    def _context(self, state: SagaState, step: Step) -> StepContext:
        # Commands a step sends get ids derived from (instance, version, step): a step run
        # again after a crash sends the same ids, which the store recognises.
        causation = uuid.uuid5(_IDS, f"{state.saga_id}/{state.version}/{step.name}")
        correlation = uuid.UUID(str(state.data.get(CORRELATION) or causation))
        return StepContext(saga_id=state.saga_id, instance=state.instance,
                           data=MappingProxyType(dict(state.data)), now=self.clock.now(),
                           cause=Cause(correlation, causation), reason=state.reason)
