"""`MUSSIKON_LOG_FORMAT=json`: the demo's log, every line one JSON object, the lines written
while a message is handled carrying its event id and correlation id, no address nor name from
an event's body above debug; a bad value refused in one line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

from tests.command_line import environment, mussikon, one_error_line

FIELDS = {"timestamp", "level", "logger", "message"}


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert all(isinstance(line, dict) and set(line) >= FIELDS for line in lines)
    return lines


def test_the_demo_logs_one_json_object_per_line_with_the_ids_of_the_event_handled(
        tmp_path: Path) -> None:
    env = environment(store_url=f"sqlite:///{tmp_path}/logs.db", log_format="json",
                      log_level="DEBUG")
    demo = mussikon("demo", "--quiet", cwd=tmp_path, env=env)
    assert demo.returncode == 0, demo.stderr
    every = json_lines(demo.stderr)
    assert all(line["timestamp"].endswith("Z") for line in every)
    lines = [line for line in every if line["level"] != "DEBUG"]
    loggers = Counter(line["logger"] for line in lines)
    assert loggers["mussikon.notifications"] > 5 and loggers["mussikon.sagas"] > 5, loggers

    # Written while a message was handled: the event's ids (a UUID each).
    welcomes = [line for line in lines if line["message"].startswith("welcome notification")]
    started = [line for line in lines if line["logger"] == "mussikon.sagas"
               and line["message"].endswith(": Started")]
    assert len(welcomes) >= 3 and len(started) >= 3
    for line in welcomes + started:
        UUID(line["event_id"])
        UUID(line["correlation_id"])
        assert line["event_type"].endswith("Event")
    assert {line["event_type"] for line in welcomes} == {"MusicianRegisteredEvent"}
    # Not about one message: no ids.
    leases = [line for line in lines if line["logger"] == "mussikon.leases"]
    assert leases and not any("event_id" in line for line in leases)
    # Nothing from an event's body above debug: no address, no name, no amount.
    for line in lines:
        assert "@" not in line["message"] and "Pérez" not in line["message"], line
    assert "trace_id" not in demo.stderr  # no tracing: no empty trace fields either

    # At debug, the handlers' reactions say what they did, with the same ids.
    reactions = [line for line in every if line["logger"] == "mussikon.reactions"]
    assert any("@" in line["message"] for line in reactions)
    for line in reactions:  # a saga's timeout is no event: its own id, no correlation
        UUID(line["event_id"])
        if line["event_type"] != "timeout":
            UUID(line["correlation_id"])


def test_the_human_format_stays_the_default_and_a_bad_format_is_refused(tmp_path: Path) -> None:
    line = one_error_line(mussikon("asyncapi", cwd=tmp_path,
                                   env=environment(log_format="xml")))
    assert "MUSSIKON_LOG_FORMAT='xml': must be one of human, json" in line
    human = mussikon("demo", "--quiet", cwd=tmp_path,
                     env=environment(store_url=f"sqlite:///{tmp_path}/human.db",
                                     log_level="INFO"))
    assert human.returncode == 0, human.stderr
    first = human.stderr.splitlines()[0]
    assert " INFO mussikon." in first and not first.startswith("{")
