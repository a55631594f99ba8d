"""Running the real `mussikon` command in a subprocess with a controlled environment (and
`mussikon serve` on a free port), and a server that accepts connections and never answers
(a hanging SMTP server or broker)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[1]


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without its `MUSSIKON_*` variables, plus `settings`
    (`store_url="memory://"` sets MUSSIKON_STORE_URL)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
    return {**inherited, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1",
            "COLUMNS": "250", **{f"MUSSIKON_{k.upper()}": v for k, v in settings.items()}}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    """A running `mussikon serve`: a client on its address; its output once it stopped."""

    client: httpx.AsyncClient
    out: str = ""
    err: str = ""


@contextlib.asynccontextmanager
async def serving(*, cwd: Path, env: dict[str, str], ready: str = "/healthz"
                  ) -> AsyncIterator[Served]:
    """`mussikon serve` on a free port, once `ready` answers 200. At the end of the block it
    gets SIGTERM and must exit 0 (its output is then in `out` and `err`); killed if the block
    failed."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mussikon", "serve", "--port", str(port), cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async def up() -> bool:
                try:
                    return (await client.get(ready)).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, 30)
            served = Served(client)
            yield served
        server.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(server.communicate(), 30)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    served.out, served.err = out.decode(), err.decode()
    assert server.returncode == 0, served.err


def mussikon(*args: str, cwd: Path, env: dict[str, str], prefix: tuple[str, ...] = (),
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`mussikon ARGS` run to its end in `cwd` (`prefix`: a command that runs it, as
    `unshare …`)."""
    return subprocess.run([*prefix, sys.executable, "-m", "mussikon", *args], cwd=cwd, env=env,
                          text=True, capture_output=True, timeout=timeout, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failed command's stderr, checked to be one `error: …` line and exit code 1."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


async def store_with_one_registration(tmp_path: Path) -> str:
    """The URL of a new SQLite store holding one musician's registration (Ana, ana@example.com),
    not yet handled."""
    from mussikon.bootstrap import open_app
    from mussikon.config import Settings

    url = f"sqlite:///{tmp_path}/mussikon.db"
    app = await open_app(Settings(store_url=url, broker_url="memory://"))
    try:
        await app.marketplace.register_musician(email="ana@example.com", name="Ana Díaz",
                                                genres=["jazz"], location="Santo Domingo")
    finally:
        await app.close()
    return url


async def line_with(stream: asyncio.StreamReader | None, text: str, timeout: float = 30) -> str:
    """The first line of a process's output that holds `text`; fails after `timeout` seconds
    or at the end of the output, naming what came."""
    assert stream is not None
    seen: list[str] = []

    async def until() -> str:
        while line := (await stream.readline()).decode():
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never came; got {seen}")

    return await asyncio.wait_for(until(), timeout)


async def worker_until(reached: Callable[[], Awaitable[bool]], *, cwd: Path,
                       env: dict[str, str], timeout: float = 30) -> None:
    """Run `mussikon worker` until `reached()` holds, then stop it with SIGTERM: it must exit
    0, without a traceback."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mussikon", "worker", cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await eventually(reached, timeout, interval=0.2)
        worker.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(worker.communicate(), 30)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert worker.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()


def prints(text: str, *args: str, cwd: Path, env: dict[str, str]
           ) -> Callable[[], Awaitable[bool]]:
    """A check for `eventually`: `mussikon ARGS` prints `text`."""
    async def check() -> bool:
        done = await asyncio.to_thread(mussikon, *args, cwd=cwd, env=env)
        return text in done.stdout

    return check


@dataclass
class HeldConnection:
    """One connection to a SilentServer: when it was accepted, when the client closed it."""

    accepted_at: float
    closed_at: float | None = None


@dataclass
class SilentServer:
    """A TCP server on loopback that accepts every connection and never sends a byte (what
    an SMTP server or a broker that hangs looks like); `async with` runs it."""

    port: int = 0
    connections: list[HeldConnection] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held = HeldConnection(time.monotonic())
        self.connections.append(held)
        self._writers.append(writer)
        try:
            while await reader.read(4096):
                pass  # whatever the client says, no answer
        except ConnectionError:
            pass
        finally:
            held.closed_at = time.monotonic()
            writer.close()

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def accepted(self, count: int = 1) -> bool:
        """Whether `count` connections were accepted."""
        return len(self.connections) >= count


@dataclass
class Workers:
    """`mussikon worker` processes (or another command: `args`, printing `ready` once it runs)
    run one after another, each one's output in a file of `cwd` named after `name`."""

    cwd: Path
    env: dict[str, str]
    name: str = "worker"
    args: tuple[str, ...] = ("-m", "mussikon", "worker")
    ready: str = "worker running"
    process: asyncio.subprocess.Process | None = None
    outputs: list[Path] = field(default_factory=list)

    async def start(self, timeout: float = 30) -> None:
        out = self.cwd / f"{self.name}-{len(self.outputs)}.out"
        self.outputs.append(out)
        with out.open("wb") as sink:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self.args, cwd=self.cwd, env=self.env,
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)

        def running() -> bool:
            assert self.process is not None and self.process.returncode is None, self.output()
            return self.ready in out.read_text()

        await eventually(running, timeout, what=f"{self.name} running")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        assert await self.process.wait() == -9, self.output()

    async def terminate(self) -> None:
        """SIGTERM: the worker finishes what it has in flight and exits 0."""
        assert self.process is not None
        self.process.terminate()
        assert await asyncio.wait_for(self.process.wait(), 30) == 0, self.output()

    def output(self) -> str:
        """Every worker's output so far."""
        return "".join(f"--- {out.name}\n{out.read_text()}" for out in self.outputs)

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
