"""`mussikon dlq list | show | replay | purge` on the in-process transport, as an operator types
them: they deliver nothing of the store's pending events (no subscription reads the store, no
read model follows it); `replay` runs the dead letter's handler in the command itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings


def mussikon(*args: str, store: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MUSSIKON_STORE_URL": f"sqlite:///{store}",
                   "MUSSIKON_BROKER_URL": "memory://", "COLUMNS": "250", **env}
    return subprocess.run([sys.executable, "-m", "mussikon", *args], env=environment,
                          text=True, capture_output=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


async def opened(store: Path) -> App:
    return await open_app(Settings(store_url=f"sqlite:///{store}", broker_url="memory://"))


async def dead_letter(app: App, subscription: str, position: int,
                      reason: str = "the mail server refused it") -> str:
    """Dead-letter the stored event at `position` for `subscription`, as a reader gives up."""
    transport = app.transport
    assert isinstance(transport, InProcessTransport)
    [record] = await app.store.read_all(position, 1)
    event = record.event
    await transport.dead_letter(subscription, str(event.id), event.event_type, position, 4,
                                "NotificationError", reason, app.codec.encode(event).decode())
    return f"{subscription}:{event.id}"


async def welcomes_refused(store: Path, count: int) -> list[str]:
    """`count` musicians registered whose welcome email was given up on, oldest first."""
    app = await opened(store)
    try:
        letters = []
        for n in range(count):
            await app.marketplace.register_musician(
                email=f"m{n}@example.com", name=f"Musician {n}", genres=["jazz"],
                location="Santo Domingo")
            letters.append(await dead_letter(app, "musicians.on-registered", n + 1))
        return letters
    finally:
        await app.close()


async def recipients(store: Path) -> list[str]:
    app = await opened(store)
    try:
        return [n.notification.recipient for n in await app.notifier.sent()]
    finally:
        await app.close()


async def letter_ids(store: Path) -> list[str]:
    app = await opened(store)
    try:
        return [d.id for d in await app.transport.dead_letters()]
    finally:
        await app.close()


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

    refused = mussikon("dlq", "purge", store=store)  # no terminal to ask, no --yes
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == ("error: Drop every dead letter for good: refused without --yes "
                              "(no terminal to ask)\n")
    assert "1 dead letter(s)" in mussikon("dlq", "list", store=store).stdout
    purged = mussikon("dlq", "purge", "--yes", store=store)
    assert purged.returncode == 0, purged.stderr
    assert "purged 1" in purged.stdout
    assert "0 dead letter(s)" in mussikon("dlq", "list", store=store).stdout


async def test_list_pages_visit_every_letter_once_as_json_or_as_a_table_with_whole_ids(
        tmp_path: Path) -> None:
    store = tmp_path / "mussikon.db"
    letters = await welcomes_refused(store, 5)
    seen: list[str] = []
    after: list[str] = []
    while True:
        page = mussikon("dlq", "list", "--limit", "2", *after, "--json", store=store)
        assert page.returncode == 0, page.stderr
        document = json.loads(page.stdout)  # stdout holds the JSON document and nothing else
        seen += [d["id"] for d in document["dead_letters"]]
        if document["next_after"] is None:
            break
        assert document["next_after"] == seen[-1]
        after = ["--after", document["next_after"]]
    assert seen == letters
    first = document["dead_letters"][0]
    assert (first["subscription"], first["attempts"]) == ("musicians.on-registered", 4)
    assert '"MusicianId"' in first["body"]

    # Piped into a narrow terminal's environment, every id is still whole.
    table = mussikon("dlq", "list", "--limit", "3", store=store, COLUMNS="40")
    assert table.returncode == 0, table.stderr
    assert all(letter in table.stdout for letter in letters[:3])
    assert letters[3] not in table.stdout
    assert f"more: mussikon dlq list --limit 3 --after {letters[2]}" in table.stdout
    rest = mussikon("dlq", "list", "--after", letters[2], store=store)
    assert rest.returncode == 0, rest.stderr
    assert "2 dead letter(s)" in rest.stdout and "more:" not in rest.stdout
    assert all(letter in rest.stdout for letter in letters[3:])

    for args, error in ((["--after", "no-such-letter"], "no dead letter 'no-such-letter'"),
                        (["--limit", "0"], "--limit 0: give 1 or more")):
        bad = mussikon("dlq", "list", *args, "--json", store=store)
        assert (bad.returncode, bad.stdout, bad.stderr) == (1, "", f"error: {error}\n")


async def test_text_from_outside_is_printed_as_it_is_never_as_markup(tmp_path: Path) -> None:
    store = tmp_path / "mussikon.db"
    reason = "[link=http://evil.example]click[/link] [bold red]refused[/]"
    app = await opened(store)
    try:
        await app.marketplace.register_musician(
            email="ana@example.com", name="[blink]Ana[/blink]", genres=["jazz"],
            location="Santo Domingo")
        letter = await dead_letter(app, "musicians.on-registered", 1, reason=reason)
    finally:
        await app.close()
    listed = mussikon("dlq", "list", store=store)
    assert reason in listed.stdout
    shown = mussikon("dlq", "show", letter, store=store)
    assert reason in shown.stdout
    assert '"Name": "[blink]Ana[/blink]"' in shown.stdout
    shown_json = json.loads(mussikon("dlq", "show", letter, "--json", store=store).stdout)
    assert (shown_json["id"], shown_json["reason"]) == (letter, reason)


async def test_show_replay_and_delete_take_a_unique_start_of_an_id(tmp_path: Path) -> None:
    store = tmp_path / "mussikon.db"
    letters = await welcomes_refused(store, 3)
    shared = "musicians.on-registered:"
    for command in (["show"], ["replay"], ["delete", "--yes"]):
        ambiguous = mussikon("dlq", *command, shared, store=store)
        assert ambiguous.returncode == 1, command
        assert ambiguous.stderr.count("\n") == 1, command
        assert ambiguous.stderr.startswith(f"error: '{shared}' names 3 dead letters ("), command
        assert ambiguous.stderr.endswith("): give more of the id\n"), command
    unknown = mussikon("dlq", "delete", "nothing-like-this", "--yes", store=store)
    assert (unknown.returncode, unknown.stderr) == (
        1, "error: no dead letter 'nothing-like-this'\n")

    shown = mussikon("dlq", "show", letters[0][:-8], store=store)
    assert shown.returncode == 0, shown.stderr
    assert f"dead letter {letters[0]}" in shown.stdout
    assert '"Email": "m0@example.com"' in shown.stdout

    replayed = mussikon("dlq", "replay", letters[0][:-8], store=store)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == f"{letters[0]}: handled\n"
    assert await recipients(store) == ["m0@example.com"]

    refused = mussikon("dlq", "delete", letters[1][:-8], store=store)  # no terminal, no --yes
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: Drop dead letter {letters[1]} ")
    assert refused.stderr.endswith("refused without --yes (no terminal to ask)\n")
    assert await letter_ids(store) == letters[1:]
    deleted = mussikon("dlq", "delete", letters[1][:-8], "--yes", store=store)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f"deleted {letters[1]}\n"
    assert await letter_ids(store) == [letters[2]]  # the others stay
    assert await recipients(store) == ["m0@example.com"]  # a deleted letter is not delivered


async def test_a_replay_that_fails_again_exits_non_zero_and_replay_all_reports_each(
        tmp_path: Path) -> None:
    store = tmp_path / "mussikon.db"
    letters = await welcomes_refused(store, 3)
    mail_down = {"MUSSIKON_SMTP_URL": "smtp://127.0.0.1:9?timeout=2"}  # nothing listens there

    again = mussikon("dlq", "replay", letters[0], store=store, **mail_down)
    assert again.returncode == 1
    assert again.stdout.startswith(f"{letters[0]}: failed again: NotificationError: ")
    assert again.stderr == f"error: {letters[0]} failed again\n"
    assert await letter_ids(store) == [*letters[1:], letters[0]]  # it moved to the end
    app = await opened(store)
    try:
        attempts = {d.id: d.attempts for d in await app.transport.dead_letters()}
    finally:
        await app.close()
    assert attempts[letters[0]] == 5

    app = await opened(store)
    try:
        stray = await dead_letter(app, "no.such-subscription", 2)
    finally:
        await app.close()
    everything = mussikon("dlq", "replay", "--all", store=store)
    assert everything.returncode == 1
    assert everything.stdout.splitlines() == [
        f"{letters[1]}: handled", f"{letters[2]}: handled", f"{letters[0]}: handled",
        f"{stray}: failed again: subscription 'no.such-subscription' is not known here"]
    assert everything.stderr == "error: 1 of 4 dead letters failed again\n"
    assert sorted(await recipients(store)) == ["m0@example.com", "m1@example.com",
                                               "m2@example.com"]
    assert await letter_ids(store) == [stray]

    for args, error in ((["dlq", "replay"], "give a dead letter id or --all (not both)"),
                        (["dlq", "replay", stray, "--all"],
                         "give a dead letter id or --all (not both)")):
        bad = mussikon(*args, store=store)
        assert (bad.returncode, bad.stderr) == (1, f"error: {error}\n")
