"""The events exchange shared with the other services (`MUSSIKON_RABBITMQ_EVENTS_EXCHANGE`):
the prefix's own unless named, taken as it is when named, refused in one line when it is no
exchange name; and what the transport is built with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.bootstrap import open_app
from mussikon.config import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _environment_without_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `MUSSIKON_*` variable and no `.env` but those a test sets."""
    for name in [n for n in os.environ if n.startswith("MUSSIKON_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_by_default_no_events_exchange_is_named() -> None:
    assert load_settings().rabbitmq_events_exchange == ""


def test_the_events_exchange_is_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSSIKON_RABBITMQ_EVENTS_EXCHANGE", "bus:mussikon.events-2_x")
    assert load_settings().rabbitmq_events_exchange == "bus:mussikon.events-2_x"


@pytest.mark.parametrize(("value", "reason"), [
    ("our events", "must be an exchange name"),
    ("événements", "must be an exchange name"),
    ("x" * 256, "must be an exchange name"),
    ("amq.topic", "names starting with 'amq.' are the broker's own"),
])
def test_a_bad_events_exchange_is_one_line_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, value: str, reason: str) -> None:
    monkeypatch.setenv("MUSSIKON_RABBITMQ_EVENTS_EXCHANGE", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith(f"MUSSIKON_RABBITMQ_EVENTS_EXCHANGE={value!r}: {reason}")
    assert "\n" not in message


@pytest.mark.parametrize(("named", "exchange"), [("", "t.mussikon.events"),
                                                 ("bus.events", "bus.events")])
async def test_the_transport_takes_the_named_events_exchange_and_keeps_its_prefix(
        named: str, exchange: str) -> None:
    app = await open_app(Settings(store_url="memory://", broker_url="amqp://127.0.0.1:1/",
                                  rabbitmq_prefix="t.", rabbitmq_events_exchange=named))
    try:
        assert isinstance(app.transport, RabbitMqTransport)
        topology = app.transport.topology
        assert topology.events_exchange == exchange
        assert topology.queue("MusicianRegisteredEvent") == "t.musician.registered"
        assert topology.dead_letter_queue == "t.mussikon.dlq"
    finally:
        await app.close()
