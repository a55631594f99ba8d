"""The JSON log lines: the fields, the ids of the message being handled (from the context or
the record), trace ids when a record carries them, exceptions on the same line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

from mussikon.logs import JsonFormatter, current_context, handling


@dataclass(frozen=True)
class Handled:
    id: str
    correlation_id: str | None
    event_type: str = "MusicianRegisteredEvent"


def line(message: str = "hello %s", *args: Any, exc: bool = False,
         **attributes: Any) -> dict[str, Any]:
    record = logging.LogRecord("mussikon.test", logging.WARNING, __file__, 1, message,
                               args or ("world",), None)
    if exc:
        try:
            raise ValueError("broken")
        except ValueError:
            record.exc_info = sys.exc_info()
    for name, value in attributes.items():
        setattr(record, name, value)
    text = JsonFormatter().format(record)
    assert "\n" not in text
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def test_a_line_holds_time_level_logger_and_message_and_no_empty_field() -> None:
    parsed = line()
    assert set(parsed) == {"timestamp", "level", "logger", "message"}
    assert parsed["level"] == "WARNING" and parsed["logger"] == "mussikon.test"
    assert parsed["message"] == "hello world"
    assert parsed["timestamp"].endswith("Z") and len(parsed["timestamp"]) == 24


async def test_the_ids_of_the_message_being_handled_reach_its_lines_and_tasks() -> None:
    with handling(Handled("e-1", None)):
        assert current_context() == {"event_id": "e-1", "event_type": "MusicianRegisteredEvent"}
        assert "correlation_id" not in line()
        with handling(Handled("e-2", "c-1")):
            assert line()["correlation_id"] == "c-1"
            in_a_task = await asyncio.create_task(asyncio.to_thread(line))
            assert (in_a_task["event_id"], in_a_task["correlation_id"]) == ("e-2", "c-1")
        assert line()["event_id"] == "e-1"
        assert line(event_id="from-the-record")["event_id"] == "from-the-record"
        with handling(None):  # a body that did not decode: no ids
            assert "event_id" not in line()
    assert "event_id" not in line()


def test_trace_ids_come_from_opentelemetry_attributes_and_an_invalid_one_is_left_out() -> None:
    parsed = line(otelTraceID="4bf92f3577b34da6a3ce929d0e0e4736", otelSpanID="00f067aa0ba902b7")
    assert parsed["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parsed["span_id"] == "00f067aa0ba902b7"
    assert "trace_id" not in line(otelTraceID="0" * 32, otelSpanID="0" * 16)
    assert line(trace_id="abc")["trace_id"] == "abc"


def test_an_exception_stays_on_the_line() -> None:
    parsed = line(exc=True)
    assert "ValueError: broken" in parsed["exception"]
