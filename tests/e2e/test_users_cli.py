"""`mussikon users list|remove` against a running `mussikon serve`: the list shows names and
roles and never a key or hash; a removed user's key, password and tokens get 401 at once, and a
user added again under that name is someone else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.command_line import environment, mussikon, one_error_line, serving


async def test_a_removed_user_is_refused_at_once_and_the_list_shows_no_secret(
        tmp_path: Path) -> None:
    env = environment()

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if stdin is None:
            return mussikon(*args, cwd=tmp_path, env=env)
        return subprocess.run([sys.executable, "-m", "mussikon", *args], cwd=tmp_path, env=env,
                              input=stdin, text=True, capture_output=True, timeout=60,
                              check=False)

    ops = cli("users", "add", "ops", "--role", "operator", "--password",
              stdin="a long passphrase\n")
    casa = cli("users", "add", "casa", "--role", "organizer")
    assert ops.returncode == 0 and casa.returncode == 0, ops.stderr + casa.stderr
    ops_key, casa_key = ops.stdout.strip(), casa.stdout.strip()

    listed = cli("users", "list")
    as_json = cli("users", "list", "--json")
    assert listed.returncode == 0 and as_json.returncode == 0, listed.stderr + as_json.stderr
    assert "ops" in listed.stdout and "operator" in listed.stdout and "organizer" in listed.stdout
    document = json.loads(as_json.stdout)
    assert [(u["name"], u["role"], u["password"]) for u in document["users"]] == [
        ("casa", "organizer", False), ("ops", "operator", True)]
    for output in (listed.stdout + listed.stderr, as_json.stdout):
        assert ops_key not in output and casa_key not in output
        assert "mk_" not in output and "argon2" not in output

    async with serving(cwd=tmp_path, env=env) as served:
        client = served.client

        async def status(credential: str) -> int:
            answer = await client.get("/analytics",
                                      headers={"Authorization": f"Bearer {credential}"})
            return answer.status_code

        async def token_status() -> int:
            answer = await client.post("/token", data={"username": "ops",
                                                       "password": "a long passphrase"})
            return answer.status_code

        issued = await client.post("/token", data={"username": "ops",
                                                   "password": "a long passphrase"})
        token = issued.json()["access_token"]
        assert await status(ops_key) == 200 and await status(token) == 200

        refused = cli("users", "remove", "ops")  # no terminal, no --yes
        assert "--yes" in one_error_line(refused)
        assert await status(ops_key) == 200

        removed = cli("users", "remove", "ops", "--yes")
        assert removed.returncode == 0, removed.stderr
        assert await status(ops_key) == 401 and await status(token) == 401
        assert await token_status() == 401
        assert await status(casa_key) == 403  # the others are untouched (an organizer)

        again = cli("users", "add", "ops", "--role", "operator", "--password",
                    stdin="a long passphrase\n")
        assert again.returncode == 0, again.stderr
        assert await status(ops_key) == 401 and await status(token) == 401
        assert await status(again.stdout.strip()) == 200 and await token_status() == 200

    unknown = cli("users", "remove", "nobody", "--yes")
    assert "no user 'nobody'" in one_error_line(unknown)
    assert [u["name"] for u in json.loads(cli("users", "list", "--json").stdout)["users"]] \
        == ["casa", "ops"]
