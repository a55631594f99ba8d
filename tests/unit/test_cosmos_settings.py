"""The Cosmos DB connection string in MUSSIKON_STORE_URL: read, checked, masked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mussikon.config import CosmosConnectionString, Settings, describe_invalid_settings, mask_url

KEY = "c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWs="
STRING = f"AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey={KEY};"


def test_a_connection_string_is_read_and_its_key_masked() -> None:
    parsed = CosmosConnectionString.parse(STRING)
    assert (parsed.endpoint, parsed.key) == ("https://acct.documents.azure.com:443/", KEY)
    for shown in (str(parsed), repr(parsed), mask_url(STRING)):
        assert KEY not in shown and "AccountKey=***" in shown
        assert "https://acct.documents.azure.com:443/" in shown


def test_the_settings_take_it_with_the_specifications_names_by_default() -> None:
    settings = Settings(store_url=STRING)
    assert (settings.cosmos_database, settings.cosmos_container,
            settings.cosmos_verify_tls) == ("MussikOn", "Events", True)


@pytest.mark.parametrize(("value", "reason"), [
    ("AccountEndpoint=http://acct/;AccountKey=k;", "AccountEndpoint=https://"),
    ("AccountEndpoint=https://acct/;", "AccountKey="),
    (f"AccountEndpoint=https://acct/;{KEY}", "AccountKey="),  # a key cut loose
    ("AccountEndpoint=https://acct/;AccountKey", "not KEY=VALUE"),
])
def test_a_wrong_connection_string_is_one_line_without_the_key(value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(store_url=value)
    message = describe_invalid_settings(raised.value)
    assert reason in message and KEY not in message and "\n" not in message
