"""Opening the SQLite store from the command line: three slashes are a relative path and four
an absolute one, a missing directory is an error (never made), the commands that only look
never create or migrate a store and can read one on read-only media."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.command_line import environment, mussikon, one_error_line

from mussikon.bootstrap import open_app
from mussikon.config import Settings

READ_ONLY_COMMANDS = (
    ("events", "tail"), ("events", "stream", "musician-x"),
    ("events", "by-type", "MusicianRegisteredEvent"), ("notifications", "list"),
    ("projections", "status"), ("sagas", "list"), ("sagas", "show", "booking-x"),
    ("dlq", "list"), ("dlq", "show", "x"))


def test_three_slashes_are_relative_and_a_missing_directory_is_named(tmp_path: Path) -> None:
    env = environment(store_url="sqlite:///tmp/x.db")
    line = one_error_line(mussikon("db", "migrate", cwd=tmp_path, env=env))
    assert line == (f"error: MUSSIKON_STORE_URL 'sqlite:///tmp/x.db': no directory "
                    f"{tmp_path / 'tmp'}; sqlite:/// is followed by a path relative to the "
                    "current directory, an absolute path takes four slashes: "
                    "sqlite:////tmp/x.db")
    assert list(tmp_path.iterdir()) == []  # no ./tmp made

    line = one_error_line(mussikon("worker", cwd=tmp_path,
                                   env=environment(store_url="sqlite:///missing-dir/x.db")))
    assert "no directory" in line and "sqlite:////missing-dir/x.db" in line
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "data").mkdir()
    relative = mussikon("db", "migrate", cwd=tmp_path,
                        env=environment(store_url="sqlite:///data/x.db"))
    assert relative.returncode == 0, relative.stderr
    assert (tmp_path / "data" / "x.db").is_file()
    absolute = mussikon("db", "migrate", cwd=tmp_path / "data",
                        env=environment(store_url=f"sqlite:///{tmp_path}/abs.db"))
    assert absolute.returncode == 0, absolute.stderr
    assert (tmp_path / "abs.db").is_file()


def test_commands_that_only_look_create_no_store(tmp_path: Path) -> None:
    env = environment(store_url="sqlite:///./mussikon.db")
    for args in READ_ONLY_COMMANDS:
        line = one_error_line(mussikon(*args, cwd=tmp_path, env=env))
        assert line == f"error: no store at {tmp_path / 'mussikon.db'} (MUSSIKON_STORE_URL)", \
            args
        assert list(tmp_path.iterdir()) == [], args

    # A relative path that looks meant as absolute gets the hint.
    line = one_error_line(mussikon("events", "tail", cwd=tmp_path,
                                   env=environment(store_url="sqlite:///srv/m.db")))
    assert line.startswith(f"error: no store at {tmp_path / 'srv' / 'm.db'} (MUSSIKON_STORE_URL;")
    assert "sqlite:////srv/m.db" in line

    # An empty file (not a store yet) is left as it is.
    (tmp_path / "mussikon.db").touch()
    line = one_error_line(mussikon("projections", "status", cwd=tmp_path, env=env))
    assert line == f"error: no store at {tmp_path / 'mussikon.db'} (MUSSIKON_STORE_URL)"
    assert (tmp_path / "mussikon.db").stat().st_size == 0


def _read_only(directory: Path) -> tuple[str, ...]:
    """A command prefix under which `directory` is read-only for what it runs: permission
    bits for an ordinary user; for root (whom they do not stop), a read-only bind mount in a
    mount namespace of its own."""
    if os.geteuid() != 0:
        for path in directory.iterdir():
            path.chmod(0o444)
        directory.chmod(0o555)
        return ()
    if shutil.which("unshare") is None:
        pytest.skip("running as root without `unshare`: no way to make a directory read-only")
    prefix = ("unshare", "--mount", "sh", "-c",
              'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
              "sh", str(directory))
    probe = subprocess.run([*prefix, "touch", str(directory / "probe")], capture_output=True,
                           text=True, check=False)
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        (directory / "probe").unlink(missing_ok=True)
        pytest.skip(f"cannot make a read-only bind mount here: {probe.stderr.strip()}")
    return prefix


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


async def test_commands_that_only_look_read_a_store_on_read_only_media(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    url = f"sqlite:///{media}/mussikon.db"  # absolute: resolved through the mount
    app = await open_app(Settings(store_url=url, broker_url="memory://"))
    try:
        musician = await app.marketplace.register_musician(
            email="ana@example.com", name="Ana Díaz", genres=["jazz"], location="Santo Domingo")
    finally:
        await app.close()
    assert sorted(p.name for p in media.iterdir()) == ["mussikon.db"]  # checkpointed, closed
    before = _digest(media)
    prefix = _read_only(media)
    try:
        env = environment(store_url=url)
        tail = mussikon("events", "tail", cwd=tmp_path, env=env, prefix=prefix)
        assert tail.returncode == 0, tail.stderr
        assert "MusicianRegisteredEvent" in tail.stdout
        stream = mussikon("events", "stream", f"musician-{musician}", cwd=tmp_path, env=env,
                          prefix=prefix)
        assert stream.returncode == 0, stream.stderr
        assert '"Email": "ana@example.com"' in stream.stdout
        for args in (("projections", "status"), ("notifications", "list"), ("sagas", "list"),
                     ("dlq", "list")):
            result = mussikon(*args, cwd=tmp_path, env=env, prefix=prefix)
            assert result.returncode == 0, (args, result.stderr)
            assert result.stderr == "", args

        # Commands that write say so in one line.
        writers = {("db", "migrate"): "mussikon.db",
                   ("demo", "--fresh", "--yes"): "mussikon-demo.db",  # the demo's own store
                   ("projections", "rebuild", "directory", "--yes"): "mussikon.db"}
        for writer, store in writers.items():
            line = one_error_line(mussikon(*writer, cwd=tmp_path, env=env, prefix=prefix))
            assert store in line, writer
    finally:
        media.chmod(0o755)
        for path in media.iterdir():
            path.chmod(0o644)
    assert _digest(media) == before
