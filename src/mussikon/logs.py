"""How the processes log: one line per record on stderr, for people (the default) or as one
JSON object per line (`MUSSIKON_LOG_FORMAT=json`), and the ids a record carries when it is
written while a message is handled.

A JSON line holds `timestamp` (UTC, ISO 8601 with milliseconds), `level`, `logger` and
`message`, then, when known, `event_id`, `correlation_id` and `event_type`, and `exception`
(the traceback) for a record logged with one. The ids come from the record itself (a call's
`extra`) or else from the message being handled (`handling`, set by the transports around
each delivery). `trace_id` and `span_id` are written when a record carries them (the
attributes OpenTelemetry's logging instrumentation adds, `otelTraceID` and `otelSpanID`, left
out when they are the invalid all-zero ids, or ones given as `trace_id` and `span_id`), or
else when it is written inside a span (`trace_ids`, with tracing on).

Standard library only: a `logging.Formatter` and a context variable.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

CONTEXT_FIELDS = ("event_id", "correlation_id", "event_type")
"""What a record says about the message being handled, when it is known."""

_TRACE_FIELDS = (("trace_id", ("trace_id", "otelTraceID")),
                 ("span_id", ("span_id", "otelSpanID")))
"""Each trace field of a JSON line, and the record attributes it is read from, in order."""

_handling: ContextVar[Message | None] = ContextVar("mussikon_log_message", default=None)


class Message(Protocol):
    """What a record written while a message is handled names: its event's ids."""

    @property
    def id(self) -> object: ...

    @property
    def correlation_id(self) -> object: ...

    @property
    def event_type(self) -> str: ...


class handling:
    """`with`: the records logged inside (in this task and those it starts) carry the ids of
    `message` (its event id, correlation id and event type), read only when a JSON line is
    written: this runs around every message. None: no message (a body that did not decode).
    """

    __slots__ = ("_message", "_token")

    def __init__(self, message: Message | None) -> None:
        self._message = message

    def __enter__(self) -> None:
        self._token = _handling.set(self._message)

    def __exit__(self, *exc_info: object) -> None:
        _handling.reset(self._token)


def current_context() -> dict[str, object]:
    """The ids of the message `handling` set for the code running now (None left out)."""
    message = _handling.get()
    if message is None:
        return {}
    ids = {"event_id": message.id, "correlation_id": message.correlation_id,
           "event_type": message.event_type}
    return {name: value for name, value in ids.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = current_context()
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value:
                line[name] = str(value)
        traced = trace_ids()
        for index, (name, attributes) in enumerate(_TRACE_FIELDS):
            value = next((str(v) for a in attributes
                          if (v := getattr(record, a, None)) and str(v).strip("0")), None)
            if value or traced:
                line[name] = value or traced[index]  # type: ignore[index]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def no_trace_ids() -> tuple[str, str] | None:
    """No span: tracing is off."""
    return None


trace_ids: Callable[[], tuple[str, str] | None] = no_trace_ids
"""The current span's trace and span ids, named by every JSON line written inside a span:
`mussikon.tracing` sets this when tracing is switched on (this module is below it)."""


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` puts on the root logger (and replaces when called again)."""


def configure(level: str = "WARNING", log_format: str = "human") -> None:
    """Log records of `level` and above to stderr in `log_format` (human or json): the
    command line's set-up, at its start. Handlers others put on the root logger stay."""
    root = logging.getLogger()
    if not any(isinstance(h, _OurHandler) for h in root.handlers):
        root.addHandler(_OurHandler(sys.stderr))
    root.setLevel(level)
    use_format(log_format)


def use_format(log_format: str) -> None:
    """Write in `log_format` from now on, through the handler `configure` set up (without
    it, as in a test or an embedding application, nothing changes)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _OurHandler):
            handler.setFormatter(JsonFormatter() if log_format == "json"
                                 else logging.Formatter(HUMAN_FORMAT))


def is_json() -> bool:
    """Whether `configure` set up JSON lines."""
    return any(isinstance(h, _OurHandler) and isinstance(h.formatter, JsonFormatter)
               for h in logging.getLogger().handlers)
