"""`mussikon bench api` in a tiny configuration: both servers start as processes, the load
generator drives them, and every figure is reported. Not a timed test: the figures themselves
are not checked."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest
from bench import api
from bench.cli import bench_app
from bench.report import Report, Result
from typer.testing import CliRunner

TINY = {"requests": 20, "warmup": 4, "clients": 4, "rounds": 1}


def _check(report: Report, backend: str) -> None:
    figures = {r.workload: r for r in report.results}
    assert report.benchmark == f"api-{backend}"
    assert list(figures) == [api.THROUGHPUT, api.P50, api.P99]
    assert all(r.ours > 0 and set(r.peers) == {api.PEER} and r.peers[api.PEER] > 0
               for r in report.results)
    assert figures[api.P50].ours <= figures[api.P99].ours
    assert report.settings["requests"] == "20 × 1"
    assert float(report.settings["load generator ceiling"].rstrip("/s").replace(",", "")) > 0


def test_the_api_benchmark_runs_ours_and_the_peer_as_servers_on_sqlite(tmp_path: Path) -> None:
    report = api.run(api.Options(**TINY, directory=str(tmp_path)))  # type: ignore[arg-type]

    _check(report, "sqlite")
    assert list(tmp_path.iterdir()) == []  # the scratch files are gone


@pytest.mark.postgres
async def test_the_api_benchmark_runs_on_postgres_and_drops_its_schemas(
        postgres_url: str) -> None:
    async def schemas() -> set[str]:
        conn = await asyncpg.connect(postgres_url)
        try:
            rows = await conn.fetch("SELECT nspname FROM pg_namespace "
                                    "WHERE nspname LIKE 'bench_api_%'")
        finally:
            await conn.close()
        return {row["nspname"] for row in rows}

    before = await schemas()
    import asyncio

    report = await asyncio.to_thread(api.run, api.Options(
        backend="postgres", url=postgres_url, **TINY))  # type: ignore[arg-type]

    _check(report, "postgres")
    assert await schemas() <= before


def test_bench_api_passes_its_options_and_prints_one_json_object(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[api.Options] = []

    def fake(options: api.Options, progress: object = None) -> Report:
        seen.append(options)
        return Report("api-sqlite", [Result(api.THROUGHPUT, "requests/s", 1.0)])

    monkeypatch.setattr(api, "run", fake)
    monkeypatch.delenv("MUSSIKON_BENCH_POSTGRES_URL", raising=False)
    result = CliRunner().invoke(bench_app, ["api", "--json", "--requests", "100",
                                            "--clients", "8", "--rounds", "1"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["benchmark"] == "api-sqlite"
    assert seen == [api.Options(requests=100, clients=8, rounds=1)]


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    result = CliRunner().invoke(bench_app, ["api", "--backend", "postgres", "--requests", "10",
                                            "--url", "postgresql://nobody:secret@127.0.0.1:1/x"])

    assert result.exit_code == 2
    assert result.output.startswith("error: PostgreSQL at postgresql://nobody:***@127.0.0.1:1/x")
    assert len(result.output.splitlines()) == 1 and "secret" not in result.output
    assert "Traceback" not in result.output
