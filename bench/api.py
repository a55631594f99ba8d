"""`mussikon bench api`: `POST /musicians` over HTTP, ours beside the same endpoint written the
usual way, in the same run, on the same kind of database.

- ours: `mussikon serve` as a process of its own (uvicorn, one worker, FastAPI), on a scratch
  SQLite file or a scratch PostgreSQL schema, in-process bus: the request checks the service
  key, registers the musician through the marketplace (an event appended to the store, which
  is the outbox), reads the stream back for the version it answers with; meanwhile, in the
  same process, the handlers, read models and sagas follow the store's global order.
- `fastapi-sqlalchemy` (`bench/api_peer.py`): the same framework and server, one worker,
  SQLAlchemy's async engine and ORM session writing one row (aiosqlite, asyncpg), no events.
  The same bearer check (the key's digest looked up in the database), body model and answer.

The load generator (`bench/api_load.py`) is another process: `clients` keep-alive connections,
each sending the next registration when its last is answered (closed loop). Each contender
gets `warmup` untimed requests, then `requests` timed ones, each with a body of its own made
before the clock starts. Throughput is the timed requests over the time from the first send
to the last answer; latency is each request's time from send to answer, p50 and p99 over all
timed requests. With `rounds` > 1 the contenders take turns, each round on a fresh server and
database, and the figures are over all rounds. The load generator's own ceiling, against a
server answering a fixed reply with no framework, is measured first and shown under the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.report import Report, Result
from mussikon.config import mask_url

OURS = "ours"
PEER = "fastapi-sqlalchemy"
THROUGHPUT = "register-musician"
P50 = "register-musician-p50"
P99 = "register-musician-p99"
PATH = "/musicians"
TARGETS: dict[str, dict[str, float]] = {THROUGHPUT: {PEER: 0.8}, P99: {PEER: 0.67}}
"""Ours ÷ peer wanted: 0.8 of its throughput; a p99 within 1.5 × its p99 (1 / 1.5 ≈ 0.67)."""
START_TIMEOUT = 60.0
SETTLE_TIMEOUT = 300.0
ROOT = Path(__file__).resolve().parent.parent
"""The directory holding the `bench` package, put on the processes' PYTHONPATH."""

Progress = Callable[[str], None]


class BenchFailed(RuntimeError):
    """A server did not start, or answered the load with something else than 201."""


@dataclass(frozen=True, slots=True)
class Options:
    """Which database, how many requests, how many clients at once, how many rounds."""

    backend: str = "sqlite"
    url: str = "postgresql://postgres@127.0.0.1:5432/test"
    """PostgreSQL (`backend` postgres): a scratch schema per contender and round."""
    requests: int = 5_000
    warmup: int = 500
    clients: int = 64
    rounds: int = 2
    synchronous: str = "FULL"
    peers: bool = True
    directory: str | None = None


@dataclass(slots=True)
class _Tally:
    """One contender's timed requests, seconds and latencies, summed over the rounds."""

    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0
    """Seconds of CPU the server used in the timed stretch."""
    settle: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def run(options: Options, progress: Progress | None = None) -> Report:
    """Measure ours and the peer; the report has throughput, p50 and p99."""
    say = progress or (lambda _line: None)
    directory = Path(tempfile.mkdtemp(prefix="mussikon-api-", dir=options.directory))
    tallies: dict[str, _Tally] = {OURS: _Tally()}
    if options.peers:
        tallies[PEER] = _Tally()
    if options.backend == "postgres":
        asyncio.run(_reachable(options.url))
    try:
        ceiling = _ceiling(options)
        say(f"load generator against a fixed answer: {ceiling:,.0f} requests/s")
        for round_ in range(options.rounds):
            order = list(tallies) if round_ % 2 == 0 else list(reversed(tallies))
            for contender in order:
                with _server(contender, options, directory, round_) as (port, token, pid):
                    _load(options, port, token, pid, tallies[contender],
                          settle=contender == OURS)
                tally = tallies[contender]
                say(f"round {round_ + 1}/{options.rounds} {contender}: {tally.rate:,.0f} "
                    f"requests/s so far, p99 {tally.percentile(99):.1f} ms")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ours = tallies[OURS]
    peers = {name: t for name, t in tallies.items() if name != OURS}
    report = Report(f"api-{options.backend}", settings={
        "store": options.backend if options.backend == "sqlite" else mask_url(options.url),
        "clients": str(options.clients), "requests": f"{options.requests} × {options.rounds}",
        "warm-up": str(options.warmup), "load generator ceiling": f"{ceiling:,.0f}/s",
        **({"synchronous": options.synchronous} if options.backend == "sqlite" else {}),
        **{f"server CPU ms/request ({name})": f"{t.cpu * 1000 / t.requests:.2f}"
           for name, t in tallies.items() if t.requests},
        **({"ours settled after (s)": f"{max(ours.settle):.1f}"} if ours.settle else {})})
    report.results.append(Result(THROUGHPUT, "requests/s", ours.rate,
                                 {n: t.rate for n, t in peers.items()},
                                 targets=TARGETS[THROUGHPUT] if peers else {}))
    for workload, p in ((P50, 50.0), (P99, 99.0)):
        report.results.append(Result(workload, "ms", ours.percentile(p),
                                     {n: t.percentile(p) for n, t in peers.items()},
                                     targets=TARGETS.get(workload, {}) if peers else {}))
    return report


# --- processes ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(contender: str, options: Options, directory: Path,
            round_: int) -> Iterator[tuple[int, str, int]]:
    """Start a contender's server on a fresh database; yields (port, API key, pid)."""
    port = _free_port()
    schema = f"bench_api_{uuid.uuid4().hex[:12]}"
    env = _env()
    cwd = directory / f"{contender}-{round_}"
    cwd.mkdir()
    if contender == OURS:
        if options.backend == "sqlite":
            env["MUSSIKON_STORE_URL"] = f"sqlite:///{cwd / 'ours.db'}"
            env["MUSSIKON_SQLITE_SYNCHRONOUS"] = options.synchronous
        else:
            env["MUSSIKON_STORE_URL"] = options.url
            env["MUSSIKON_POSTGRES_SCHEMA"] = schema
        env["MUSSIKON_BROKER_URL"] = "memory://"
        added = subprocess.run([sys.executable, "-m", "mussikon", "users", "add", "bench",
                                "--role", "service"], env=env, cwd=cwd, capture_output=True,
                               text=True, timeout=START_TIMEOUT, check=False)
        if added.returncode != 0:
            raise BenchFailed(f"mussikon users add: {mask_url(added.stderr.strip())}")
        token = added.stdout.strip()
        command = [sys.executable, "-m", "mussikon", "serve", "--port", str(port)]
    else:
        if options.backend == "sqlite":
            url = f"sqlite+aiosqlite:///{cwd / 'peer.db'}"
        else:
            url = options.url.replace("postgresql://", "postgresql+asyncpg://", 1) \
                .replace("postgres://", "postgresql+asyncpg://", 1)
            asyncio.run(_create_schema(options.url, schema))
        command = [sys.executable, "-m", "bench.api_peer", "--port", str(port), "--url", url,
                   "--schema", schema, "--synchronous", options.synchronous]
        token = ""
    with open(cwd / "stderr", "w") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                   stderr=log, text=True)
    try:
        if not token:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise BenchFailed(f"{contender} did not start: {_stderr(process, cwd / 'stderr')}")
            token = json.loads(line)["key"]
        _wait_until_up(process, port, contender, cwd / "stderr")
        yield port, token, process.pid
    finally:
        _stop(process)
        if options.backend == "postgres":
            asyncio.run(_drop_schema(options.url, schema))


def _stderr(process: subprocess.Popen[str], log: Path | None = None) -> str:
    """The end of what a process wrote on stderr: to its pipe, or to the file `log`."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    if log is not None:
        text = log.read_text(errors="replace") if log.exists() else ""
    elif process.stderr is not None and process.poll() is not None:
        text = process.stderr.read()
    else:
        text = ""
    return mask_url(text.strip()[-2000:]) or "no output"


def _wait_until_up(process: subprocess.Popen[str], port: int, contender: str,
                   log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchFailed(f"{contender} stopped at start: {_stderr(process, log)}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.05)
    raise BenchFailed(f"{contender} did not answer on port {port} within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


async def _reachable(url: str) -> None:
    import asyncpg

    try:
        connection = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchFailed(f"PostgreSQL at {mask_url(url)}: {type(exc).__name__}: {exc}"
                          ) from None
    await connection.close()


async def _create_schema(url: str, schema: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its threads so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- load -----------------------------------------------------------------------------------


def _bodies(count: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [json.dumps({"email": f"musician{i}-{tag}@bench.example", "name": f"Musician {i}",
                        "genres": ["Jazz"], "location": "Santo Domingo"})
            for i in range(count)]


def _load_process() -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench.api_load"], env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _send(stream: IO[str] | None, line: str) -> None:
    assert stream is not None
    stream.write(line + "\n")
    stream.flush()


def _receive(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise BenchFailed(f"the load generator stopped: {_stderr(process)}")
    answer: dict[str, Any] = json.loads(line)
    if "error" in answer:
        raise BenchFailed(f"the load generator: {answer['error']}")
    return answer


def _load(options: Options, port: int, token: str, pid: int, tally: _Tally, *,
          settle: bool) -> None:
    """Warm up, then time the requests; adds to `tally`. With `settle`, then waits until the
    server's analytics read model counts every registration (ours only)."""
    total = options.warmup + options.requests
    loader = _load_process()
    try:
        _send(loader.stdin, json.dumps({
            "host": "127.0.0.1", "port": port, "path": PATH, "token": token,
            "clients": options.clients, "warmup": options.warmup,
            "requests": options.requests, "bodies": _bodies(total)}))
        _receive(loader)
        cpu = _cpu_seconds(pid)
        _send(loader.stdin, "go")
        result = _receive(loader)
        tally.cpu += _cpu_seconds(pid) - cpu
    finally:
        _stop(loader)
    tally.requests += result["requests"]
    tally.seconds += result["seconds"]
    tally.latencies.extend(result["latencies_ms"])
    if settle:
        started = time.monotonic()
        _wait_for_analytics(port, token, total)
        tally.settle.append(time.monotonic() - started)


def _wait_for_analytics(port: int, token: str, registrations: int) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/analytics", headers={"Authorization": f"Bearer {token}"})
            answer = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        if answer.get("by_genre", {}).get("Jazz", 0) >= registrations:
            return
        time.sleep(0.1)
    raise BenchFailed(f"the read models did not count {registrations} registrations within "
                      f"{SETTLE_TIMEOUT:.0f} s")


def _ceiling(options: Options) -> float:
    """Requests/s the load generator drives against a fixed answer (no framework)."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.api_load", "--fixed", str(port)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        _receive(server)
        requests = max(options.requests, 1000) * 2
        loader = _load_process()
        try:
            _send(loader.stdin, json.dumps({
                "host": "127.0.0.1", "port": port, "path": PATH, "token": "x",
                "clients": options.clients, "warmup": options.clients,
                "requests": requests, "bodies": _bodies(requests + options.clients)}))
            _receive(loader)
            _send(loader.stdin, "go")
            result = _receive(loader)
        finally:
            _stop(loader)
    finally:
        _stop(server)
    return float(result["requests"] / result["seconds"])
