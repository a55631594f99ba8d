"""What a saga is made of: steps that run, wait, fail or are undone, and the definition that
orders them and says which events concern which instance.

A step's `run` does its work and says how it went (`Done`, `Failed`, `Wait`). Work must be
idempotent (deterministic ids, notification keys, payment idempotency keys): a crash after
the work and before the engine committed the outcome runs the step again, and the second
run must find the work done. A waiting step checks the current state when it starts
waiting, so an event that came early is not missed; events and timeouts then reach it
through `on_event` and `on_timeout`. `compensate` undoes a completed step, also
idempotently, and says what it did.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from mussikon.application.repository import Cause
from mussikon.domain.events import DomainEvent

_KEYS = uuid.UUID("8d3c0f4e-6a1b-4f2d-9e7a-3b5c1d9f0e62")


@dataclass(frozen=True, slots=True)
class Done:
    """The step did its work; `data` is remembered for the next steps."""

    data: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Failed:
    """The step cannot succeed: the completed steps are compensated, and `reason` is kept."""

    reason: str


@dataclass(frozen=True, slots=True)
class TimeoutRequest:
    """Fire timeout `name` after `after`, unless the step ends first."""

    name: str
    after: timedelta


@dataclass(frozen=True, slots=True)
class Wait:
    """The step waits for an event or for `timeout`; `data` is remembered meanwhile."""

    data: Mapping[str, Any] = field(default_factory=dict)
    timeout: TimeoutRequest | None = None
    note: str = ""


Outcome = Done | Failed | Wait


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step knows when it runs: the instance, its data, the time, why it compensates."""

    saga_id: str
    instance: str
    data: Mapping[str, Any]
    now: datetime
    cause: Cause
    reason: str = ""
    """Why the saga failed (for compensations)."""

    def key(self, purpose: str) -> uuid.UUID:
        """A stable id for one effect of this instance (a notification), the same on every run."""
        return uuid.uuid5(_KEYS, f"{self.saga_id}/{purpose}")

    def text(self, name: str) -> str:
        """A remembered text value."""
        return str(self.data[name])


class Step(abc.ABC):
    """One step of a saga."""

    name: ClassVar[str]
    compensable: ClassVar[bool] = False
    """True if `compensate` undoes something; steps without it are skipped when undoing."""

    @abc.abstractmethod
    async def run(self, ctx: StepContext) -> Outcome:
        """Do the step's work (idempotently) and say how it went."""

    async def on_event(self, ctx: StepContext, event: DomainEvent) -> Outcome | None:
        """While waiting: an event of this instance came. None means "keep waiting"."""
        return None

    async def on_timeout(self, ctx: StepContext, name: str) -> Outcome:
        """While waiting: timeout `name` fired."""
        return Failed(f"{self.name} timed out ({name})")

    async def compensate(self, ctx: StepContext) -> str:
        """Undo what `run` did (idempotently); return what was done, for the history."""
        raise NotImplementedError(f"step {self.name} has no compensation")


class SagaDefinition(abc.ABC):
    """A kind of saga: its steps in order, the events it listens to, how they correlate."""

    kind: ClassVar[str]
    event_types: ClassVar[frozenset[str]]

    @property
    @abc.abstractmethod
    def steps(self) -> Sequence[Step]:
        """The steps, in the order they run."""

    @abc.abstractmethod
    def correlate(self, event: DomainEvent) -> str | None:
        """The instance an event concerns (by the ids in it), or None if none."""

    @abc.abstractmethod
    def starts(self, event: DomainEvent) -> bool:
        """True if this event starts a new instance."""

    @abc.abstractmethod
    def initial_data(self, event: DomainEvent) -> dict[str, Any]:
        """What the instance remembers of the event that started it."""

    def streams(self, instance: str, data: Mapping[str, Any]) -> list[str]:
        """The event-store streams holding the events this instance listens to, so that an
        instance that lost a delivery can be given them again (none by default)."""
        return []

    def step_named(self, name: str) -> Step:
        """The step called `name`."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"saga {self.kind} has no step {name!r}")
