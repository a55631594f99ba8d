"""`MUSSIKON_BROKER_URL` as a Service Bus connection string: read, refused in one line when
malformed, its key never shown; the topic's name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mussikon.config import ServiceBusConnectionString, SettingsError, load_settings, mask_url

KEY = "s3cr3t+Key/Value="
EMULATOR = (f"Endpoint=sb://localhost:5673;SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey={KEY};UseDevelopmentEmulator=true")
AZURE = (f"Endpoint=sb://mussikon.servicebus.windows.net/;SharedAccessKeyName=app;"
         f"SharedAccessKey={KEY}")


@pytest.fixture(autouse=True)
def _environment_without_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("MUSSIKON_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_a_connection_string_is_read_as_dotnet_writes_it() -> None:
    emulator = ServiceBusConnectionString.parse(EMULATOR)
    assert (emulator.host, emulator.port, emulator.key_name, emulator.emulator) == (
        "localhost", 5673, "RootManageSharedAccessKey", True)
    azure = ServiceBusConnectionString.parse(AZURE)
    assert (azure.host, azure.port, azure.emulator) == ("mussikon.servicebus.windows.net",
                                                        None, False)


def test_the_settings_take_a_connection_string_and_a_topic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSSIKON_BROKER_URL", AZURE)
    settings = load_settings()
    assert settings.broker_url == AZURE
    assert settings.servicebus_topic == "mussikon-events"
    monkeypatch.setenv("MUSSIKON_SERVICEBUS_TOPIC", "events-2")
    assert load_settings().servicebus_topic == "events-2"


@pytest.mark.parametrize("value", [EMULATOR, AZURE, AZURE.replace("SharedAccessKey=",
                                                                  "sharedaccesskey = ")])
def test_the_key_is_never_shown(value: str) -> None:
    masked = mask_url(value)
    assert KEY not in masked and "=***" in masked
    assert "SharedAccessKeyName=" in masked.replace(" ", "")
    assert KEY not in str(ServiceBusConnectionString.parse(value))


@pytest.mark.parametrize(("value", "reason"), [
    ("Endpoint=http://x/;SharedAccessKeyName=a;SharedAccessKey=" + KEY, "Endpoint=sb://"),
    ("Endpoint=sb://x/;SharedAccessKey=" + KEY, "needs SharedAccessKeyName"),
    ("Endpoint=sb://x/;SharedAccessKeyName=a", "needs SharedAccessKey=…"),
    ("Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=" + KEY + ";oops", "not KEY=VALUE"),
    ("Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey:" + KEY, "needs SharedAccessKey=…"),
    ("Endpoint=sb://x:port/;SharedAccessKeyName=a;SharedAccessKey=" + KEY, "port is not"),
    (EMULATOR.replace("=true", "=yes"), "UseDevelopmentEmulator must be"),
])
def test_a_malformed_connection_string_is_one_line_without_the_key(
        monkeypatch: pytest.MonkeyPatch, value: str, reason: str) -> None:
    monkeypatch.setenv("MUSSIKON_BROKER_URL", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith("MUSSIKON_BROKER_URL=") and reason in message
    assert KEY not in message and "\n" not in message


def test_a_bad_topic_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSSIKON_SERVICEBUS_TOPIC", "our events")
    with pytest.raises(SettingsError, match="MUSSIKON_SERVICEBUS_TOPIC='our events'"):
        load_settings()
