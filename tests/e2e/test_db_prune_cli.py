"""`mussikon db prune`: removes the inbox entries older than MUSSIKON_INBOX_RETENTION and says
how many; keeps the newer ones."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.command_line import environment, mussikon, one_error_line

DAY_MICROS = 86_400 * 1_000_000


def test_db_prune_removes_the_old_inbox_entries_and_says_how_many(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    env = environment(store_url=f"sqlite:///{store}", inbox_retention="P2D")
    assert mussikon("db", "migrate", cwd=tmp_path, env=env).returncode == 0
    now = time.time_ns() // 1000
    with sqlite3.connect(store) as conn:
        conn.executemany("INSERT INTO inbox VALUES (?, ?, ?)", [
            ("musicians.on-registered", "old-1", now - 3 * DAY_MICROS),
            ("mussikon.notifications", "old-2", now - 5 * DAY_MICROS),
            ("musicians.on-registered", "recent", now - DAY_MICROS)])
    conn.close()
    pruned = mussikon("db", "prune", cwd=tmp_path, env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == (f"removed 2 inbox entries older than P2D "
                                     f"(MUSSIKON_INBOX_RETENTION) from sqlite:///{store}")
    with sqlite3.connect(store) as conn:
        left = conn.execute("SELECT message_id FROM inbox").fetchall()
    conn.close()
    assert left == [("recent",)]
    again = mussikon("db", "prune", cwd=tmp_path, env=env)
    assert again.stdout.startswith("removed 0 inbox entries older than P2D")


def test_db_prune_refuses_a_retention_under_ten_seconds(tmp_path: Path) -> None:
    line = one_error_line(mussikon("db", "prune", cwd=tmp_path,
                                   env=environment(store_url=f"sqlite:///{tmp_path}/s.db",
                                                   inbox_retention="PT5S")))
    assert line.startswith("error: MUSSIKON_INBOX_RETENTION='PT5S': must be at least 10 s")
    assert list(tmp_path.iterdir()) == []  # refused before opening anything
