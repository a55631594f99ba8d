"""The benchmark machinery: the JSON shape, the table, the CLI. Not a timed test: the figures
themselves are not checked, only that every workload and peer is measured and reported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import asyncpg
import pytest
from bench import bus, bus_servicebus, store_cosmos, store_postgres, store_sqlite
from bench.cli import bench_app
from bench.peer_eventsourcing import available
from bench.report import Report, Result, from_json
from rich.console import Console
from typer.testing import CliRunner

from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.domain.instant import ticks_of
from mussikon.wire import EventCodec


def test_the_json_shape_is_the_one_of_the_design() -> None:
    report = Report("store-sqlite", [
        Result("append-new-stream", "events/s", 3000.04,
               {"raw-sqlite3": 3500, "pyeventsourcing": 2000}, targets={"raw-sqlite3": 0.8}),
    ], settings={"synchronous": "FULL"})

    document = json.loads(report.dumps())

    assert document == {"benchmark": "store-sqlite", "results": [
        {"workload": "append-new-stream", "unit": "events/s", "ours": 3000.0,
         "peers": {"raw-sqlite3": 3500.0, "pyeventsourcing": 2000.0}}]}
    assert from_json(document).to_json() == document


def test_a_ratio_says_how_many_times_better_ours_is_for_throughput_and_latency() -> None:
    throughput = Result("w", "events/s", 300.0, {"peer": 100.0}, targets={"peer": 2.5})
    latency = Result("w-p99", "ms", 2.0, {"peer": 8.0}, targets={"peer": 5.0})

    assert throughput.advantage("peer") == 3.0 and throughput.meets_targets()
    assert latency.advantage("peer") == 4.0 and not latency.meets_targets()
    assert throughput.advantage("absent") is None


def test_a_growth_ratio_is_held_to_its_ceiling_lower_being_better() -> None:
    report = Report("bus-rabbitmq", [Result("worker-rss-growth", "ratio", 1.05, ceiling=1.2),
                                     Result("inbox-size", "ratio", 1.3, ceiling=1.2)])
    console = Console(width=200, record=True)

    report.render(console)

    assert report.results[0].meets_targets() and not report.results[1].meets_targets()
    text = console.export_text()
    assert "1.05" in text and "≤1.2" in text and ">1.2" in text
    assert "| `inbox-size` | ratio | 1.30 | ≤ 1.2: missed |" in report.markdown()
    assert "ceiling" not in json.dumps(report.to_json())


def test_the_table_shows_ours_each_peer_and_the_ratios() -> None:
    report = Report("store-sqlite", [
        Result("append-batch-100", "events/s", 30000.0, {"raw-sqlite3": 40000.0,
                                                        "pyeventsourcing": 10000.0},
               targets={"raw-sqlite3": 0.8, "pyeventsourcing": 2.5}),
    ], settings={"synchronous": "FULL"})
    console = Console(width=200, record=True)

    report.render(console)

    text = console.export_text()
    assert "append-batch-100" in text and "30,000" in text and "40,000" in text
    assert "0.75× <0.8" in text and "3.00× ≥2.5" in text and "synchronous=FULL" in text


def test_the_sqlite_store_benchmark_measures_every_workload_beside_its_peers(
        tmp_path: Path) -> None:
    if not available():
        pytest.skip("the bench extra (eventsourcing) is not installed")
    report = store_sqlite.run(store_sqlite.Options(events=10, rounds=1, synchronous="NORMAL",
                                                   directory=str(tmp_path)))

    figures = {r.workload: r for r in report.results}
    assert list(figures) == ["append-new-stream", "append-existing-stream", "append-batch-100",
                             "read-stream-1000"]
    assert set(figures["append-new-stream"].peers) == {"raw-sqlite3", "pyeventsourcing"}
    assert set(figures["append-existing-stream"].peers) == {"pyeventsourcing"}
    assert set(figures["append-batch-100"].peers) == {"raw-sqlite3", "pyeventsourcing"}
    assert set(figures["read-stream-1000"].peers) == {"pyeventsourcing"}
    assert all(r.ours > 0 and all(v > 0 for v in r.peers.values()) for r in report.results)
    assert report.settings["synchronous"] == "NORMAL"


def test_the_cli_prints_one_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(options: store_sqlite.Options, progress: object = None) -> Report:
        seen["options"] = options
        return Report("store-sqlite", [Result("append-new-stream", "events/s", 1.0)])

    monkeypatch.setattr(store_sqlite, "run", fake)
    result = CliRunner().invoke(bench_app, ["store", "--backend", "sqlite", "--json",
                                            "--synchronous", "NORMAL", "--events", "20",
                                            "--rounds", "1"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["benchmark"] == "store-sqlite"
    assert seen["options"] == store_sqlite.Options(events=20, synchronous="NORMAL", rounds=1)


def test_bench_bus_runs_with_the_benchmark_s_own_defaults_and_the_options_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bus.Options] = []

    def fake(options: bus.Options, progress: object = None) -> Report:
        seen.append(options)
        return Report("bus-rabbitmq", [Result("full-path", "messages/s", 1.0)])

    monkeypatch.setattr(bus, "run", fake)
    monkeypatch.delenv("MUSSIKON_BROKER_URL", raising=False)
    plain = CliRunner().invoke(bench_app, ["bus", "--json"])
    chosen = CliRunner().invoke(bench_app, ["bus", "--json", "--concurrency", "8",
                                            "--queue-type", "classic",
                                            "--workloads", "full-path"])

    assert plain.exit_code == 0 and chosen.exit_code == 0, plain.output + chosen.output
    assert json.loads(plain.stdout)["benchmark"] == "bus-rabbitmq"
    assert seen == [bus.Options(), bus.Options(concurrency=8, queue_type="classic",
                                               workloads=("full-path",))]


def test_bench_bus_on_service_bus_runs_the_transport_path_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bus_servicebus.Options] = []

    def fake(options: bus_servicebus.Options, progress: object = None) -> Report:
        seen.append(options)
        return Report("bus-servicebus", [Result("transport-path", "messages/s", 1.0)])

    monkeypatch.setattr(bus_servicebus, "run", fake)
    plain = CliRunner().invoke(bench_app, ["bus", "--broker", "servicebus", "--json"])
    chosen = CliRunner().invoke(bench_app, ["bus", "--broker", "servicebus", "--json",
                                            "--messages", "500", "--rounds", "1",
                                            "--concurrency", "8"])
    other = CliRunner().invoke(bench_app, ["bus", "--broker", "servicebus",
                                           "--workloads", "transport-path,full-path"])

    assert plain.exit_code == 0 and chosen.exit_code == 0, plain.output + chosen.output
    assert json.loads(plain.stdout)["benchmark"] == "bus-servicebus"
    assert seen == [bus_servicebus.Options(),
                    bus_servicebus.Options(messages=500, rounds=1, concurrency=8)]
    assert other.exit_code == 2 and "full-path" in other.output


@pytest.mark.servicebus
def test_the_servicebus_benchmark_measures_the_transport_path_beside_the_raw_sdk(
        tmp_path: Path) -> None:
    report = bus_servicebus.run(bus_servicebus.Options(messages=200, rounds=1, concurrency=8,
                                                       directory=str(tmp_path)))

    document = json.loads(report.dumps())
    assert document["benchmark"] == "bus-servicebus"
    [result] = document["results"]
    assert (result["workload"], result["unit"]) == ("transport-path", "messages/s")
    assert set(result["peers"]) == {"raw-azure-servicebus"}
    assert result["ours"] > 0 and result["peers"]["raw-azure-servicebus"] > 0
    assert report.results[0].targets == {"raw-azure-servicebus": 0.8}
    assert re.fullmatch(r"ours \d+, raw-azure-servicebus \d+",
                        report.settings["client CPU, µs/message"])
    assert list(tmp_path.iterdir()) == []  # the scratch store is gone


@pytest.mark.postgres
def test_the_postgres_store_benchmark_measures_every_workload_beside_its_peers(
        postgres_url: str) -> None:
    if not available("eventsourcing.postgres"):
        pytest.skip("the bench extra (eventsourcing, psycopg) is not installed")
    report = store_postgres.run(store_postgres.Options(events=32, rounds=1, url=postgres_url))

    figures = {r.workload: r for r in report.results}
    assert list(figures) == ["append-one-writer", "append-16-writers", "append-batch-100",
                             "read-stream-10000", "read-all", "subscriber-lag-p50",
                             "subscriber-lag-p99"]
    for name in ("append-one-writer", "append-16-writers", "append-batch-100"):
        assert set(figures[name].peers) == {"raw-asyncpg", "pyeventsourcing"}
    for name in ("read-stream-10000", "read-all"):
        assert set(figures[name].peers) == {"pyeventsourcing"}
    assert figures["subscriber-lag-p50"].unit == figures["subscriber-lag-p99"].unit == "ms"
    assert figures["subscriber-lag-p50"].ours <= figures["subscriber-lag-p99"].ours
    assert all(r.ours > 0 and all(v > 0 for v in r.peers.values())
               for r in report.results if r.unit.endswith("/s"))
    assert report.settings["synchronous_commit"]


@pytest.mark.postgres
async def test_the_postgres_benchmark_drops_every_schema_it_made(postgres_url: str) -> None:
    options = store_postgres.Options(events=10, rounds=1, url=postgres_url, peers=False)
    contenders = await store_postgres.Contenders(options, "append-one-writer").open(1)
    await contenders.close()

    conn = await asyncpg.connect(postgres_url)
    try:
        left = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)",
                                   list(contenders.schemas.values()))
    finally:
        await conn.close()
    assert left == 0


def test_an_unreachable_postgres_says_so_in_one_line() -> None:
    result = CliRunner().invoke(bench_app, ["store", "--backend", "postgres",
                                            "--url", "postgresql://nobody:secret@127.0.0.1:1/x"])

    assert result.exit_code == 2
    assert "PostgreSQL at" in result.output and "secret" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.rabbitmq
def test_the_bus_benchmark_measures_every_workload_beside_its_peers(rabbitmq_url: str) -> None:
    report = bus.run(bus.Options(url=rabbitmq_url, messages=300, latency_messages=100,
                                 latency_rate=200, rss_messages=400, rss_baseline=100,
                                 queue_type="classic", appenders=4))

    figures = {r.workload: r for r in report.results}
    assert list(figures) == ["transport-path", "full-path", "latency-p50", "latency-p99",
                             "worker-rss-growth", "inbox-size"]
    assert set(figures["transport-path"].peers) == {"raw-aiormq"}
    assert set(figures["full-path"].peers) == {"faststream", "raw-aio-pika"}
    assert all(v > 0 for r in report.results for v in (r.ours, *r.peers.values()))
    assert figures["latency-p50"].ours <= figures["latency-p99"].ours
    assert figures["worker-rss-growth"].unit == "ratio"
    assert json.loads(report.dumps())["benchmark"] == "bus-rabbitmq"


@pytest.mark.rabbitmq
def test_the_bus_benchmark_deletes_every_queue_it_made(
        rabbitmq_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made = iter(range(100))
    monkeypatch.setattr(bus, "_prefix", lambda: f"{unique_name}{next(made)}.")
    bus.run(bus.Options(url=rabbitmq_url, messages=100, queue_type="classic",
                        workloads=("transport-path",)))

    assert next(made) == 2  # ours and raw aiormq each made their own queues
    assert _queues_named(unique_name) == []


@pytest.mark.rabbitmq
def test_the_foreign_path_runs_the_whole_worker_beside_raw_aio_pika_and_deletes_its_queues(
        rabbitmq_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made = iter(range(100))
    monkeypatch.setattr(bus, "_prefix", lambda: f"{unique_name}{next(made)}.")
    report = bus.run(bus.Options(url=rabbitmq_url, messages=100, queue_type="classic",
                                 workloads=("foreign-path",)))

    [result] = report.results
    assert (result.workload, result.unit) == ("foreign-path", "messages/s")
    assert set(result.peers) == {"raw-aio-pika"}
    assert result.ours > 0 and result.peers["raw-aio-pika"] > 0
    assert result.targets == {"raw-aio-pika": 0.5}
    assert next(made) == 2  # ours and raw aio-pika each made their own queues
    assert _queues_named(unique_name) == []


def test_the_foreign_path_publishes_registrations_as_the_dotnet_service_does() -> None:
    golden = json.loads((Path(__file__).parent.parent / "golden"
                         / "MusicianRegisteredEvent.json").read_text())
    (body, properties), (other, _) = bus._dotnet_message(0), bus._dotnet_message(1)

    event = EventCodec().decode(body)
    assert list(json.loads(body)) == list(golden)  # the .NET class's properties, in order
    assert b", " not in body and b": " not in body  # compact, as System.Text.Json writes
    assert isinstance(event, MusicianRegisteredEvent)
    assert ticks_of(event.occurred_at) != 0  # the seventh fraction digit .NET writes
    assert EventCodec().decode(other).id != event.id
    assert properties.message_id not in (str(event.id), None)
    assert properties.headers == {"EventType": "MusicianRegisteredEvent", "Version": "1.0"}
    assert properties.delivery_mode == 2 and properties.timestamp is not None


def _queues_named(prefix: str) -> list[str]:
    import subprocess

    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True,
                            text=True, timeout=60, check=True).stdout.split()
    return [name for name in listed if name.startswith(prefix)]


def test_the_bus_benchmark_names_an_unknown_workload_and_an_unreachable_broker() -> None:
    unknown = CliRunner().invoke(bench_app, ["bus", "--workloads", "full-path,nope"])
    unreachable = CliRunner().invoke(bench_app, [
        "bus", "--url", "amqp://guest:secret@127.0.0.1:1/", "--workloads", "full-path",
        "--no-peers", "--messages", "100"])

    assert unknown.exit_code == 2 and "nope" in unknown.output
    assert unreachable.exit_code == 2
    assert "RabbitMQ at" in unreachable.output and "secret" not in unreachable.output
    assert "Traceback" not in unreachable.output


@pytest.mark.rabbitmq
def test_the_growth_workloads_run_the_inbox_retention_and_report_both_ratios(
        rabbitmq_url: str, tmp_path: Path) -> None:
    report = bus.run(bus.Options(url=rabbitmq_url, rss_messages=2000, rss_baseline=500,
                                 inbox_retention=0.2, queue_type="classic", concurrency=8,
                                 workloads=("worker-rss-growth",), directory=str(tmp_path)))

    figures = {r.workload: r for r in report.results}
    assert list(figures) == ["worker-rss-growth", "inbox-size"]
    assert all(r.unit == "ratio" and r.ours > 0 and r.ceiling == 1.2 for r in report.results)
    end = report.settings["at end"]
    rows = int(re.search(r"([\d,]+) rows", end).group(1).replace(",", ""))  # type: ignore[union-attr]
    pruned = int(re.search(r"([\d,]+) pruned", end).group(1).replace(",", ""))  # type: ignore[union-attr]
    # a retention of 0.2 s, pruned every 0.1 s: the inbox forgot most of the 2,000 messages
    assert pruned > 0 and rows < 2000, end
    assert "main file bytes" in end and "WAL" in end
    assert list(tmp_path.iterdir()) == []  # the scratch store is gone


@pytest.mark.cosmos
async def test_the_cosmos_store_benchmark_counts_requests_beside_the_specification_s_way(
        cosmos_endpoint: str) -> None:
    from tests.conftest import COSMOS_KEY

    options = store_cosmos.Options(events=40, rounds=1, short=20, long=300)
    report = await store_cosmos.measure(cosmos_endpoint, COSMOS_KEY, False, options)
    figures = {(r.workload, r.unit): r for r in report.results}
    for size in (1, 10, 100):  # one request per append whatever its size; the spec's, one per event
        requests = figures[f"append-{size}", "requests/append"]
        assert (requests.ours, requests.peers["spec"]) == (1, size)
        assert figures[f"append-{size}", "events/s"].ours > 0
    for length in (20, 300):  # a snapshot's point read and one query for the tail
        assert figures[f"load-{length}", "requests/load"].ours == 2
        assert figures[f"load-{length}", "ms/load"].peers["spec"] > 0
    assert figures["load-300÷20-requests", "×"].meets_targets()


def test_the_cosmos_benchmark_names_a_malformed_connection_string() -> None:
    result = CliRunner().invoke(bench_app, ["store", "--backend", "cosmos", "--cosmos-url",
                                            "AccountEndpoint=http://x/;AccountKey=secret;"])
    assert result.exit_code == 2
    assert "AccountEndpoint=https://" in result.stderr and "secret" not in result.stderr
