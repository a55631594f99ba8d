"""`mussikon dlq list | show | replay | purge` on the in-process transport, as an operator types
them: they deliver nothing of the store's pending events (no subscription reads the store, no
read model follows it); `replay` runs the dead letter's handler in the command itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings


def mussikon(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUSSIKON_STORE_URL": f"sqlite:///{store}",
           "MUSSIKON_BROKER_URL": "memory://", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "mussikon", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


async def opened(store: Path) -> App:
    return await open_app(Settings(store_url=f"sqlite:///{store}", broker_url="memory://"))


async def dead_letter(app: App, subscription: str, position: int) -> str:
    """Dead-letter the stored event at `position` for `subscription`, as a reader gives up."""
    transport = app.transport
    assert isinstance(transport, InProcessTransport)
    [record] = await app.store.read_all(position, 1)
    event = record.event
    await transport.dead_letter(subscription, str(event.id), event.event_type, position, 4,
                                "NotificationError", "the mail server refused it",
                                app.codec.encode(event).decode())
    return f"{subscription}:{event.id}"


async def test_dlq_commands_deliver_nothing_and_replay_runs_the_handler(tmp_path: Path) -> None:
    store = tmp_path / "mussikon.db"
    app = await opened(store)
    try:  # not started: the registrations stay unhandled, as if no worker ran yet
        await app.marketplace.register_musician(email="ana@example.com", name="Ana Díaz",
                                                genres=["jazz"], location="Santo Domingo")
        await app.marketplace.register_musician(email="luis@example.com", name="Luis Pérez",
                                                genres=["salsa"], location="Santiago")
        welcome = await dead_letter(app, "musicians.on-registered", 1)
        stray = await dead_letter(app, "no.such-subscription", 2)
    finally:
        await app.close()

    listed = mussikon("dlq", "list", store=store)
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letter(s)" in listed.stdout
    assert welcome in listed.stdout and stray in listed.stdout
    assert "the mail server refused it" in listed.stdout
    shown = mussikon("dlq", "show", welcome, store=store)
    assert shown.returncode == 0, shown.stderr
    assert '"Email": "ana@example.com"' in shown.stdout

    app = await opened(store)
    try:  # nothing was delivered: no checkpoint moved, no email went out
        assert set((await app.documents.checkpoints()).values()) <= {0}
        assert await app.notifier.sent() == []
    finally:
        await app.close()

    replayed = mussikon("dlq", "replay", welcome, store=store)
    assert replayed.returncode == 0, replayed.stderr
    assert f"{welcome}: handled" in replayed.stdout
    unknown = mussikon("dlq", "replay", stray, store=store)
    assert unknown.returncode == 1
    assert "subscription 'no.such-subscription' is not known here" in unknown.stderr
    missing = mussikon("dlq", "replay", "no-such-letter", store=store)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no dead letter 'no-such-letter'"

    app = await opened(store)
    try:
        # Ana's welcome went out once, by the replay; Luis's event waits for a worker.
        assert [n.notification.recipient for n in await app.notifier.sent()] \
            == ["ana@example.com"]
        assert [d.id for d in await app.transport.dead_letters()] == [stray]
        checkpoints = await app.documents.checkpoints()
        assert {name: position for name, position in checkpoints.items()
                if name.startswith("subscription:") and position} == {}
    finally:
        await app.close()

    purged = mussikon("dlq", "purge", store=store)
    assert purged.returncode == 0, purged.stderr
    assert "purged 1" in purged.stdout
    assert "0 dead letter(s)" in mussikon("dlq", "list", store=store).stdout
