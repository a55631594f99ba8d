"""Every failure of the `mussikon` command is one line on stderr that names the `MUSSIKON_*`
variable or the option at fault, with exit code 1 and no traceback (`mussikon --debug`
shows it); `--help` works whatever the environment says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.command_line import ROOT, environment, mussikon, one_error_line


def test_help_works_whatever_the_settings_say(tmp_path: Path) -> None:
    env = environment(log_level="LOUD", bus_concurrency="abc", smtp_timeout="-1")
    for args in (["--help"], ["events", "--help"], ["worker", "--help"], []):
        result = mussikon(*args, cwd=tmp_path, env=env)
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout, args
        assert result.stderr == "", args
    assert "--debug" in mussikon("--help", cwd=tmp_path, env=env).stdout
    assert list(tmp_path.iterdir()) == []


def test_a_bad_log_level_is_named_when_a_command_reads_the_settings(tmp_path: Path) -> None:
    line = one_error_line(mussikon("db", "migrate", cwd=tmp_path,
                                   env=environment(log_level="LOUD")))
    assert line == ("error: MUSSIKON_LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, "
                    "ERROR, CRITICAL")
    assert list(tmp_path.iterdir()) == []  # failed before opening anything


def test_a_bad_integer_setting_names_its_variable(tmp_path: Path) -> None:
    line = one_error_line(mussikon("events", "tail", cwd=tmp_path,
                                   env=environment(bus_concurrency="abc")))
    assert line.startswith("error: MUSSIKON_BUS_CONCURRENCY='abc': ")
    assert "valid integer" in line
    assert "bus_concurrency" not in line


def test_every_variable_at_fault_is_named_in_the_one_line(tmp_path: Path) -> None:
    env = environment(smtp_timeout="0", broker_connect_timeout="soon",
                      rabbitmq_retry_delays="1,x", sqlite_synchronous="sometimes",
                      rabbitmq_events_exchange="our events", poll_max_interval="0.5",
                      lease_seconds="0.9")
    line = one_error_line(mussikon("db", "migrate", cwd=tmp_path, env=env))
    for part in ("MUSSIKON_SMTP_TIMEOUT='0': Input should be greater than 0",
                 "MUSSIKON_RABBITMQ_EVENTS_EXCHANGE='our events': must be an exchange name",
                 "MUSSIKON_BROKER_CONNECT_TIMEOUT='soon': ",
                 "MUSSIKON_RABBITMQ_RETRY_DELAYS='1,x': must be comma-separated seconds",
                 "MUSSIKON_SQLITE_SYNCHRONOUS='sometimes': must be OFF, NORMAL, FULL or EXTRA",
                 "MUSSIKON_LEASE_SECONDS='0.9': must be at least 2 x "
                 "MUSSIKON_POLL_MAX_INTERVAL (1 s), so a worker renews its leases in time"):
        assert part in line, part


def test_a_setting_that_cannot_be_used_is_named_without_its_password(tmp_path: Path) -> None:
    env = environment(store_url="memory://", smtp_url="http://mailer:s3cret@mail.example")
    line = one_error_line(mussikon("db", "migrate", cwd=tmp_path, env=env))
    assert line.startswith("error: MUSSIKON_SMTP_URL 'http://mailer:***@mail.example': ")
    assert "smtp or smtps" in line
    line = one_error_line(mussikon("db", "migrate", cwd=tmp_path,
                                   env=environment(store_url="mysql://root:s3cret@db/x")))
    assert line.startswith("error: MUSSIKON_STORE_URL 'mysql://root:***@db/x': ")
    # A password that would go over the network in cleartext is refused before any send.
    env = environment(store_url="memory://", smtp_url="smtp://mailer:s3cret@mail.example:25")
    line = one_error_line(mussikon("db", "migrate", cwd=tmp_path, env=env))
    assert line == ("error: MUSSIKON_SMTP_URL 'smtp://mailer:***@mail.example:25': SMTP URL "
                    "for mail.example: a user and password are sent only over TLS: use "
                    "smtps:// or add ?starttls=1")


def test_an_unreachable_store_or_broker_is_one_line_naming_its_variable(
        tmp_path: Path) -> None:
    env = environment(store_url="postgresql://postgres:s3cret@127.0.0.1:1/x")
    line = one_error_line(mussikon("worker", cwd=tmp_path, env=env))
    assert line.startswith("error: MUSSIKON_STORE_URL 'postgresql://postgres:***@127.0.0.1:1/x'"
                           ": PostgreSQL at 127.0.0.1:1/x is unavailable")
    env = environment(store_url="memory://", broker_url="amqp://guest:s3cret@127.0.0.1:1/")
    line = one_error_line(mussikon("worker", cwd=tmp_path, env=env))
    assert line.startswith("error: MUSSIKON_BROKER_URL: RabbitMQ is not reachable at "
                           "amqp://guest:***@127.0.0.1:1/: ")


def test_usage_errors_are_one_line_naming_the_option_and_exit_1(tmp_path: Path) -> None:
    env = environment(store_url="memory://")
    cases = {
        ("events", "tail", "--bogus"): "error: No such option: --bogus "
                                       "(see `mussikon events tail --help`)",
        ("events", "tail", "--limit", "many"): "error: Invalid value for '--limit': ",
        ("events", "tail", "--limit", "0"): "error: Invalid value for '--limit': ",
        ("events", "stream"): "error: Missing argument 'stream_id' "
                              "(see `mussikon events stream --help`)",
        ("nonsense",): "error: No such command 'nonsense' (see `mussikon --help`)",
        ("dlq", "replay"): "error: give a dead letter id or --all",
    }
    for args, start in cases.items():
        line = one_error_line(mussikon(*args, cwd=tmp_path, env=env))
        assert line.startswith(start), (args, line)


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    env = environment(bus_concurrency="abc")
    result = mussikon("--debug", "events", "tail", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "MUSSIKON_BUS_CONCURRENCY='abc'" in result.stderr.splitlines()[-1]


def test_an_unexpected_error_is_one_line_with_its_type_and_the_way_to_see_more(
        tmp_path: Path) -> None:
    # The real entry point, with the store's opening broken the way a bug would break it.
    code = ("import mussikon.bootstrap as b\n"
            "async def broken(*args, **kwargs):\n"
            "    raise RuntimeError('the wiring is broken')\n"
            "b.open_stores = broken\n"
            "from mussikon.entrypoints.cli.app import main\n"
            "main(sys.argv[1:])\n")
    env = environment(store_url="memory://")
    run = [sys.executable, "-c", f"import sys\n{code}"]
    plain = subprocess.run([*run, "db", "migrate"], cwd=tmp_path, env=env, text=True,
                           capture_output=True, timeout=60, check=False)
    assert one_error_line(plain) == ("error: RuntimeError: the wiring is broken "
                                     "(`mussikon --debug …` shows the traceback)")
    debug = subprocess.run([*run, "--debug", "db", "migrate"], cwd=tmp_path, env=env,
                           text=True, capture_output=True, timeout=60, check=False)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1] == "RuntimeError: the wiring is broken"


def test_an_error_outside_a_command_body_is_one_line_too(tmp_path: Path) -> None:
    # `demo --fresh` refuses a PostgreSQL store before the command's body runs.
    env = environment(store_url="postgresql://postgres:s3cret@127.0.0.1:1/x")
    line = one_error_line(mussikon("demo", "--fresh", cwd=tmp_path, env=env))
    assert "s3cret" not in line


def test_the_readme_lists_every_setting() -> None:
    from mussikon.config import Settings

    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`MUSSIKON_{name.upper()}`" in readme, name
