"""`mussikon worker` stopped by a signal while a handler hangs on an SMTP server that never
answers: the first signal waits for the messages in flight, for MUSSIKON_STOP_GRACE seconds
at most, a second one stops at once, and the message is handled by the next worker (nothing
lost)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.command_line import (
    SilentServer,
    environment,
    line_with,
    mussikon,
    prints,
    store_with_one_registration,
    worker_until,
)
from tests.polling import eventually


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
async def test_a_second_signal_stops_the_worker_at_once_and_loses_nothing(
        tmp_path: Path, signum: signal.Signals) -> None:
    url = await store_with_one_registration(tmp_path)

    async with SilentServer() as smtp:
        env = environment(store_url=url, smtp_url=f"smtp://127.0.0.1:{smtp.port}",
                          smtp_timeout="60", poll_interval="0.02", poll_max_interval="0.2")
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mussikon", "worker", cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await line_with(worker.stdout, "worker running")
            await eventually(smtp.accepted, 30)  # the welcome email waits for the server
            worker.send_signal(signum)
            stopping = await line_with(worker.stdout, "stopping")
            assert "finishing messages in flight" in stopping
            with pytest.raises(TimeoutError):  # it waits for the handler in flight
                await asyncio.wait_for(asyncio.shield(worker.wait()), 0.5)
            worker.send_signal(signum)
            out, err = await asyncio.wait_for(worker.communicate(), 5)
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        assert worker.returncode == 128 + signum
        assert "stopped at once" in out.decode()
        assert "Traceback" not in err.decode()

    # Nothing was sent, nothing is marked handled: the next worker sends the welcome.
    listed = mussikon("notifications", "list", cwd=tmp_path, env=environment(store_url=url))
    assert listed.returncode == 0, listed.stderr
    assert "0 notification(s)" in listed.stdout
    await worker_until(prints("ana@example.com", "notifications", "list", cwd=tmp_path,
                              env=environment(store_url=url)),
                       cwd=tmp_path, env=environment(store_url=url, poll_interval="0.02",
                                                     poll_max_interval="0.2"))


async def test_a_handler_still_running_after_the_stop_grace_is_cancelled_and_the_worker_exits(
        tmp_path: Path) -> None:
    url = await store_with_one_registration(tmp_path)

    async with SilentServer() as smtp:
        env = environment(store_url=url, smtp_url=f"smtp://127.0.0.1:{smtp.port}",
                          smtp_timeout="60", stop_grace="0.5", poll_interval="0.02",
                          poll_max_interval="0.2")
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mussikon", "worker", cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await line_with(worker.stdout, "worker running")
            await eventually(smtp.accepted, 30)  # the welcome email waits for the server
            worker.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            stopping = await line_with(worker.stdout, "stopping")
            assert "for up to 0.5 s" in stopping
            _, err = await asyncio.wait_for(worker.communicate(), 15)
            took = time.monotonic() - signalled
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        assert worker.returncode == 0, err.decode()
        assert "Traceback" not in err.decode()
        assert 0.5 <= took < 10  # the grace and the closing, not the 60 s of the SMTP timeout
        await eventually(lambda: _closed(smtp), 5)  # the send was given up with the handler

    # The checkpoint stayed before the registration: the next worker sends the welcome.
    await worker_until(prints("ana@example.com", "notifications", "list", cwd=tmp_path,
                              env=environment(store_url=url)),
                       cwd=tmp_path, env=environment(store_url=url, poll_interval="0.02",
                                                     poll_max_interval="0.2"))


async def _closed(server: SilentServer) -> bool:
    return all(c.closed_at is not None for c in server.connections)
