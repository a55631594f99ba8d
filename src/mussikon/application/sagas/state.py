"""A saga instance's state, changed only by the records its engine commits.

Each record is a saga event (started, step completed, waiting, failed, compensated, timeout
scheduled or fired, completed, compensated) and names the message whose handling wrote
it, so the state also knows the messages it has handled, as far as it still needs them.

The ids of handled messages are only looked at while a step waits: a message that comes
again must not decide the wait a second time. So the state keeps the ids of the messages
that decided something in the current step, and that of the message that ended the step
before (it may come again while this one waits, or runs again after a crash); a message
that decided an earlier step ended that step's wait, and no later step waits for it (a
rule of saga definitions: the booking saga's waits are for signatures, then, after a
declined payment, for a cancellation or the retry's timeout). A finished instance keeps
none: nothing waits any more. So an instance's bookkeeping never grows with its age.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mussikon.ports.documents import Document

SagaData = dict[str, Any]
"""What a saga remembers between steps: JSON values (amounts as strings, to stay exact)."""


class SagaStatus(StrEnum):
    """Where an instance is."""

    RUNNING = "Running"
    """The current step is to run now."""
    WAITING = "Waiting"
    """The current step waits for an event or a timeout."""
    COMPENSATING = "Compensating"
    """A step failed; the completed steps are being undone, last first."""
    COMPLETED = "Completed"
    COMPENSATED = "Compensated"
    """Failed, and every completed step that can be undone was undone."""


FINISHED = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})


class RecordKind(StrEnum):
    """The saga events."""

    STARTED = "Started"
    STEP_COMPLETED = "StepCompleted"
    STEP_WAITING = "StepWaiting"
    STEP_FAILED = "StepFailed"
    STEP_COMPENSATED = "StepCompensated"
    TIMEOUT_SCHEDULED = "TimeoutScheduled"
    TIMEOUT_FIRED = "TimeoutFired"
    COMPLETED = "Completed"
    COMPENSATED = "Compensated"


_ENDING_A_STEP = frozenset({RecordKind.STEP_COMPLETED, RecordKind.STEP_FAILED})
_FINISHING = frozenset({RecordKind.COMPLETED, RecordKind.COMPENSATED})


@dataclass(frozen=True, slots=True)
class PendingTimeout:
    """A timeout a waiting step asked for: `name` fires at `due_at` unless the step ends first."""

    id: str
    name: str
    step: str
    due_at: datetime

    def __post_init__(self) -> None:
        # In UTC, as the timeouts collection orders due times (`timeouts.due_key`).
        object.__setattr__(self, "due_at", self.due_at.astimezone(UTC))

    def to_document(self) -> Document:
        """As stored in the saga's state."""
        return {"id": self.id, "name": self.name, "step": self.step,
                "due_at": self.due_at.isoformat()}

    @classmethod
    def from_document(cls, doc: Document) -> PendingTimeout:
        """Back from the saga's state."""
        return cls(doc["id"], doc["name"], doc["step"], datetime.fromisoformat(doc["due_at"]))


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """One saga event: what happened to the instance, about which step, with what data."""

    kind: RecordKind
    step: str = ""
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    timeout: PendingTimeout | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A committed record, with when it was committed and the message it was handling."""

    version: int
    at: datetime
    kind: str
    step: str
    detail: str
    message_id: str

    def to_document(self) -> Document:
        """As kept in the saga history collection."""
        return {"version": self.version, "at": self.at.isoformat(), "kind": self.kind,
                "step": self.step, "detail": self.detail, "message_id": self.message_id}

    @classmethod
    def from_document(cls, doc: Document) -> HistoryEntry:
        """Back from the saga history collection."""
        return cls(int(doc["version"]), datetime.fromisoformat(doc["at"]), doc["kind"],
                   doc["step"], doc["detail"], doc["message_id"])


@dataclass
class SagaState:
    """One saga instance: its steps, where it is, what it remembers, what it has handled."""

    kind: str
    instance: str
    steps: list[str]
    version: int = 0
    status: SagaStatus = SagaStatus.RUNNING
    step: int = 0
    data: SagaData = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    failed_step: str = ""
    reason: str = ""
    handled: list[str] = field(default_factory=list)
    timeouts: dict[str, PendingTimeout] = field(default_factory=dict)
    started_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def saga_id(self) -> str:
        """`<kind>-<instance>`: the instance's id among all sagas."""
        return saga_id_of(self.kind, self.instance)

    @property
    def exists(self) -> bool:
        """True once the instance has started."""
        return self.version > 0

    @property
    def finished(self) -> bool:
        """Completed or compensated: nothing more will happen."""
        return self.status in FINISHED

    @property
    def current_step(self) -> str:
        """The step being run or waited on ("" once every step is done)."""
        return self.steps[self.step] if self.step < len(self.steps) else ""

    def step_marks(self) -> list[tuple[str, str]]:
        """Each step and where it stands: `compensated` (done, then undone), `completed`,
        `failed`, the saga's status in lower case for the step it is at, or `to do`."""
        marks = []
        for n, name in enumerate(self.steps):
            if name in self.compensated:
                mark = "compensated"
            elif name in self.completed:
                mark = "completed"
            elif name == self.failed_step:
                mark = "failed"
            elif n == self.step and not self.finished \
                    and self.status is not SagaStatus.COMPENSATING:
                mark = self.status.value.lower()
            else:
                mark = "to do"
            marks.append((name, mark))
        return marks

    def has_handled(self, message_id: str) -> bool:
        """True if a committed record was written while handling this message, in the current
        step or the one that led to it (see the module's docstring); False once finished."""
        return message_id in self.handled

    def apply(self, record: SagaRecord, message_id: str, at: datetime) -> None:
        """Change the state by one record; `message_id` ("" for none) is the message whose
        handling decided it, which now counts as handled."""
        match record.kind:
            case RecordKind.STARTED:
                self.status, self.step, self.started_at = SagaStatus.RUNNING, 0, at
                self.data.update(record.data)
            case RecordKind.STEP_COMPLETED:
                self.completed.append(record.step)
                self.data.update(record.data)
                self._drop_timeouts_of(record.step)
                self.step += 1
                self.status = SagaStatus.RUNNING
            case RecordKind.STEP_WAITING:
                self.status = SagaStatus.WAITING
                self.data.update(record.data)
            case RecordKind.STEP_FAILED:
                self.status = SagaStatus.COMPENSATING
                self.failed_step, self.reason = record.step, record.detail
                self._drop_timeouts_of(record.step)
            case RecordKind.STEP_COMPENSATED:
                self.compensated.append(record.step)
            case RecordKind.TIMEOUT_SCHEDULED:
                assert record.timeout is not None
                self.timeouts[record.timeout.id] = record.timeout
            case RecordKind.TIMEOUT_FIRED:
                assert record.timeout is not None
                self.timeouts.pop(record.timeout.id, None)
            case RecordKind.COMPLETED:
                self.status = SagaStatus.COMPLETED
                self.timeouts.clear()
            case RecordKind.COMPENSATED:
                self.status = SagaStatus.COMPENSATED
                self.timeouts.clear()
        if record.kind in _FINISHING:
            self.handled.clear()
        elif message_id and record.kind in _ENDING_A_STEP:
            self.handled = [message_id]
        elif message_id and message_id not in self.handled:
            self.handled.append(message_id)
        self.updated_at = at

    def _drop_timeouts_of(self, step: str) -> None:
        for timeout_id in [t.id for t in self.timeouts.values() if t.step == step]:
            del self.timeouts[timeout_id]

    def copy(self) -> SagaState:
        """An independent copy, to apply records to before they are committed."""
        return copy.deepcopy(self)

    def to_document(self) -> Document:
        """The state as its versioned document (the version is added by the writer)."""
        return {
            "kind": self.kind, "instance": self.instance, "steps": list(self.steps),
            "status": self.status.value, "step": self.step, "data": dict(self.data),
            "completed": list(self.completed), "compensated": list(self.compensated),
            "failed_step": self.failed_step, "reason": self.reason,
            "handled": list(self.handled),
            "timeouts": [t.to_document() for t in self.timeouts.values()],
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }

    @classmethod
    def from_document(cls, doc: Document, version: int) -> SagaState:
        """The state from its document, at `version`."""
        timeouts = [PendingTimeout.from_document(t) for t in doc["timeouts"]]
        return cls(
            kind=doc["kind"], instance=doc["instance"], steps=list(doc["steps"]),
            version=version, status=SagaStatus(doc["status"]), step=int(doc["step"]),
            data=dict(doc["data"]), completed=list(doc["completed"]),
            compensated=list(doc["compensated"]), failed_step=doc["failed_step"],
            reason=doc["reason"], handled=list(doc["handled"]),
            timeouts={t.id: t for t in timeouts},
            started_at=_time(doc["started_at"]), updated_at=_time(doc["updated_at"]),
        )


def saga_id_of(kind: str, instance: str) -> str:
    """The id of instance `instance` of saga `kind`."""
    return f"{kind}-{instance}"


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def outline(records: Sequence[SagaRecord]) -> str:
    """The records' kinds and steps, without their details."""
    return "; ".join(f"{r.kind}{' ' + r.step if r.step else ''}" for r in records)


def describe(records: Sequence[SagaRecord]) -> str:
    """The records in a few words, for logs."""
    return "; ".join(f"{r.kind}{' ' + r.step if r.step else ''}"
                     f"{': ' + r.detail if r.detail else ''}" for r in records)
