"""The dashboard in a real browser: Debian's chromium (/usr/bin/chromium) driven by Playwright
(no browser download), against `mussikon serve` on a SQLite store in a subprocess.

Without chromium the tests skip, naming why (`.ci/run` installs it; elsewhere `apt-get
install chromium`); with MUSSIKON_REQUIRE_SERVICES=1 a missing chromium is a failure.
Screenshots of every page, at a laptop's and a phone's size, go to MUSSIKON_SCREENSHOTS if
set, else to `screenshots` under pytest's base temporary directory (printed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.command_line import environment, free_port
from tests.polling import eventually

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OPERATOR_PASSWORD = "correct horse battery"
MUSICIAN_PASSWORD = "musician password"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, or a skip (a failure under MUSSIKON_REQUIRE_SERVICES=1)."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("MUSSIKON_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (MUSSIKON_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' screenshots go (printed, so a person can find them)."""
    given = os.environ.get("MUSSIKON_SCREENSHOTS")
    folder = Path(given) if given else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the dashboard: {folder}")
    return folder


@dataclass
class Served:
    """`mussikon serve` running: its URL, users' keys, and the SMTP port it sends mail to
    (nothing listens there until a test starts a server on it)."""

    url: str
    musician_key: str
    organizer_key: str
    smtp_port: int
    process: asyncio.subprocess.Process


def _add_user(cwd: Path, env: dict[str, str], name: str, role: str,
              password: str | None = None) -> str:
    args = [sys.executable, "-m", "mussikon", "users", "add", name, "--role", role]
    added = subprocess.run([*args, "--password"] if password else args, cwd=cwd, env=env,
                           input=f"{password}\n" if password else None, text=True,
                           capture_output=True, timeout=60, check=False)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """`mussikon serve` on a SQLite store, whose email goes to a port where nothing listens
    yet (so handlers that send mail fail and are dead-lettered), with an operator `op`, a
    musician `ana` and an organizer `casa`; stopped by SIGTERM afterwards, which must end
    it cleanly."""
    smtp_port = free_port()
    env = environment(store_url=f"sqlite:///{tmp_path}/dashboard.db",
                      smtp_url=f"smtp://127.0.0.1:{smtp_port}?timeout=2",
                      bus_retry_delays="0.01", poll_interval="0.01", poll_max_interval="0.05")
    _add_user(tmp_path, env, "op", "operator", OPERATOR_PASSWORD)
    musician_key = _add_user(tmp_path, env, "ana", "musician", MUSICIAN_PASSWORD)
    organizer_key = _add_user(tmp_path, env, "casa", "organizer")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mussikon", "serve", "--port", str(port), cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            async def up() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, 30, what="mussikon serve answering /readyz")
        yield Served(url, musician_key, organizer_key, smtp_port, process)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, err.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
