"""The load generator of `mussikon bench api`, run as a process of its own
(`python -m bench.api_load`), so that it never shares the server's event loop or interpreter.

HTTP/1.1 over plain asyncio streams, one keep-alive connection per client: each client sends a
request prepared beforehand and reads the answer (status line, headers, `Content-Length`
bytes of body), then sends the next. Parsing is the least that HTTP/1.1 with a length needs, so
that one core drives far more requests than a Python web server on another core answers
(`--fixed` serves a fixed answer, to measure that ceiling).

Protocol with the benchmark (one JSON object a line): the job comes on stdin; after the warm-up
the generator prints `{"warmed": true}` and waits for a line on stdin before the timed requests;
then it prints the result: the requests, the seconds they took and each one's latency in ms.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Job:
    """What to send, to whom, how many at once."""

    host: str
    port: int
    path: str
    token: str
    clients: int
    warmup: int
    requests: int
    bodies: list[str]
    """One body per request (warm-up first), made before the clock starts."""
    expect: int = 201


class LoadError(RuntimeError):
    """An answer other than the one expected, or a connection that failed."""


def _request(job: Job, body: str) -> bytes:
    data = body.encode()
    head = (f"POST {job.path} HTTP/1.1\r\nHost: {job.host}:{job.port}\r\n"
            f"Authorization: Bearer {job.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bytes]:
    """Send one request, read its answer: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _phase(job: Job, requests: list[bytes],
                 connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
                 latencies: list[float] | None) -> float:
    """Send `requests` over the connections, each client taking the next one when its last is
    answered; returns the seconds from the first send to the last answer."""
    pending = iter(requests)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = time.perf_counter
        for request in pending:
            started = clock()
            status, body = await _exchange(reader, writer, request)
            if latencies is not None:
                latencies.append((clock() - started) * 1000.0)
            if status != job.expect:
                raise LoadError(f"HTTP {status} (expected {job.expect}): "
                                f"{body[:300].decode(errors='replace')}")

    started = time.perf_counter()
    await asyncio.gather(*(client(r, w) for r, w in connections))
    return time.perf_counter() - started


async def run(job: Job, ready: Any = None) -> dict[str, Any]:
    """Warm up, call `ready()` (awaitable), then time `job.requests` requests."""
    requests = [_request(job, body) for body in job.bodies]
    connections = [await asyncio.open_connection(job.host, job.port)
                   for _ in range(job.clients)]
    try:
        await _phase(job, requests[:job.warmup], connections, None)
        if ready is not None:
            await ready()
        latencies: list[float] = []
        seconds = await _phase(job, requests[job.warmup:job.warmup + job.requests], connections,
                               latencies)
    finally:
        for _, writer in connections:
            writer.close()
    return {"requests": len(latencies), "seconds": seconds, "latencies_ms": latencies}


async def serve_fixed(port: int) -> None:
    """A server that answers every request with the same small 201, as fast as asyncio can:
    the ceiling of what the load generator can drive."""
    answer = (b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
              b"content-length: 11\r\n\r\n{\"id\":\"x\"}\n")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(json.dumps({"listening": port}), flush=True)
    async with server:
        await server.serve_forever()


async def _main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--fixed":
        await serve_fixed(int(sys.argv[2]))
        return
    job = Job(**json.loads(sys.stdin.readline()))
    loop = asyncio.get_running_loop()

    async def ready() -> None:
        print(json.dumps({"warmed": True}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)

    try:
        result = await run(job, ready)
    except (LoadError, OSError, asyncio.IncompleteReadError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise SystemExit(1) from None
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
