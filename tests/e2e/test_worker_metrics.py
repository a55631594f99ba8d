"""`/metrics` of `mussikon worker` on MUSSIKON_METRICS_PORT: the counters of the messages it
handles, in Prometheus' text format; a port it cannot use is refused in one line."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.command_line import (
    Workers,
    environment,
    free_port,
    mussikon,
    one_error_line,
    store_with_one_registration,
)
from tests.polling import eventually


def figures(port: int) -> tuple[float, float | None]:
    """Messages handled over the memory broker, and the store's head, as the worker's
    `/metrics` says."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = [sample for family in text_string_to_metric_families(text)
               for sample in family.samples]
    handled = sum(sample.value for sample in samples
                  if sample.name == "mussikon_messages_handled_total"
                  and sample.labels["broker"] == "memory")
    heads = [s.value for s in samples if s.name == "mussikon_store_head_position"]
    return handled, heads[0] if heads else None


async def test_the_worker_serves_its_counters_on_the_metrics_port(tmp_path: Path) -> None:
    url = await store_with_one_registration(tmp_path)
    port = free_port()
    workers = Workers(tmp_path, environment(store_url=url, metrics_port=str(port),
                                            poll_interval="0.02", poll_max_interval="0.2"))
    try:
        await workers.start()
        assert f"metrics on http://127.0.0.1:{port}/metrics" in workers.output()

        async def counted() -> bool:
            handled, head = await asyncio.to_thread(figures, port)
            return handled > 0 and head == 1  # the registration: handled, and sampled

        await eventually(counted, 30, what="a handled message and the head on /metrics")
        await workers.terminate()
    finally:
        await workers.close()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # the port is closed
        s.connect(("127.0.0.1", port))


def test_a_metrics_port_that_is_not_a_port_is_refused_in_one_line(tmp_path: Path) -> None:
    result = mussikon("worker", cwd=tmp_path,
                      env=environment(store_url="memory://", metrics_port="99999"))
    line = one_error_line(result)
    assert "MUSSIKON_METRICS_PORT" in line and "99999" in line


def test_a_metrics_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mussikon("worker", cwd=tmp_path,
                          env=environment(store_url="memory://", metrics_port=str(port)))
    line = one_error_line(result)
    assert f"MUSSIKON_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in line
