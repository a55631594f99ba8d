"""`mussikon serve` as a person runs it: in an empty folder with no settings, a user added with
`mussikon users add`, the API called over TCP, SIGTERM to stop it cleanly."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.command_line import environment, mussikon, one_error_line, serving


async def test_serve_on_the_defaults_then_sigterm(tmp_path: Path) -> None:
    env = environment()
    added = mussikon("users", "add", "casa", "--role", "organizer", cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("mk_") and "organizer" in added.stderr
    async with serving(cwd=tmp_path, env=env, ready="/readyz") as served:
        client = served.client
        registered = await client.post(
            "/organizers", headers={"Authorization": f"Bearer {key}"},
            json={"email": "booking@casa.example", "name": "Casa", "payment_source": ""})
        assert registered.status_code == 201, registered.text
        refused = await client.post("/organizers", json={})
        assert refused.status_code == 401
        docs = await client.get("/docs")
        assert "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert key not in served.out + served.err
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
