"""`mussikon serve` as a person runs it: in an empty folder with no settings, a user added with
`mussikon users add`, the API called over TCP, SIGTERM to stop it cleanly."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from tests.command_line import environment, mussikon, one_error_line
from tests.polling import eventually


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_serve_on_the_defaults_then_sigterm(tmp_path: Path) -> None:
    env = environment()
    added = mussikon("users", "add", "casa", "--role", "organizer", cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("mk_") and "organizer" in added.stderr
    port = _free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mussikon", "serve", "--port", str(port), cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async def up() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, 30)
            registered = await client.post(
                "/organizers", headers={"Authorization": f"Bearer {key}"},
                json={"email": "booking@casa.example", "name": "Casa", "payment_source": ""})
            assert registered.status_code == 201, registered.text
            refused = await client.post("/organizers", json={})
            assert refused.status_code == 401
            docs = await client.get("/docs")
            assert "/docs-assets/swagger-ui-bundle.js" in docs.text
        server.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(server.communicate(), 30)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert server.returncode == 0, err.decode()
    assert key not in out.decode() + err.decode()
    assert (tmp_path / "mussikon.db").is_file()  # the embedded default store


def test_a_bad_role_or_setting_is_one_line(tmp_path: Path) -> None:
    bad_role = mussikon("users", "add", "x", "--role", "king", cwd=tmp_path, env=environment())
    assert "--role" in one_error_line(bad_role)
    bad_limit = mussikon("serve", cwd=tmp_path, env=environment(api_max_body="10"))
    assert "MUSSIKON_API_MAX_BODY" in one_error_line(bad_limit)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = mussikon("serve", "--port", str(taken.getsockname()[1]), cwd=tmp_path,
                        env=environment(store_url="memory://"))
    assert "cannot listen on 127.0.0.1:" in one_error_line(busy)
    short = mussikon("serve", cwd=tmp_path, env=environment(api_secret="short"))
    line = one_error_line(short)
    assert "MUSSIKON_API_SECRET" in line and "short" not in line.split(":", 1)[1]
