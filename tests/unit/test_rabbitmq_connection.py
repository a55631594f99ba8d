"""The heartbeat a broker connection asks for: a connection on which nothing arrives is found
dead within about the broker timeout, unless the URL chooses its own heartbeat. The nodes of a
cluster given as a comma-separated list of URLs, each masked in errors."""

from __future__ import annotations

import pytest

from mussikon.adapters.messaging.rabbitmq.connection import (
    BrokerConnection,
    BrokerUnavailable,
    with_heartbeat,
)
from mussikon.bootstrap import ConfigurationError, open_app
from mussikon.config import Settings, mask_url, split_urls


def test_the_heartbeat_follows_the_timeout_unless_the_url_sets_one() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    # aiormq gives up after (heartbeat + 1) * 3 seconds without a frame
    assert with_heartbeat(url, 30) == url + "?heartbeat=9"
    assert with_heartbeat(url, 10) == url + "?heartbeat=2"
    assert with_heartbeat(url, 0.5) == url + "?heartbeat=1"  # the shortest aiormq takes
    assert with_heartbeat(url + "vhost?name=x", 30) == url + "vhost?name=x&heartbeat=9"
    assert with_heartbeat(url + "?heartbeat=0", 30) == url + "?heartbeat=0"


def test_a_comma_separated_list_names_the_nodes_in_order_and_each_password_is_masked() -> None:
    nodes = "amqp://app:s3cret@n1:5672/, amqp://app:s3cret@n2:5673/,amqp://n3:5674/vh"
    assert split_urls(nodes) == ["amqp://app:s3cret@n1:5672/", "amqp://app:s3cret@n2:5673/",
                                 "amqp://n3:5674/vh"]
    assert mask_url(nodes) == "amqp://app:***@n1:5672/,amqp://app:***@n2:5673/,amqp://n3:5674/vh"
    assert BrokerConnection(nodes).urls == split_urls(nodes)
    assert BrokerConnection("amqp://n1/").urls == ["amqp://n1/"]


def test_a_comma_inside_one_url_does_not_split_it() -> None:
    # A password may hold a comma; PostgreSQL lists its hosts with one.
    assert split_urls("amqp://app:a,b@n1:5672/") == ["amqp://app:a,b@n1:5672/"]
    assert mask_url("amqp://app:a,b@n1:5672/") == "amqp://app:***@n1:5672/"
    assert mask_url("postgresql://u:pw@h1:5432,h2:5432/db") == "postgresql://u:***@h1:5432,h2:5432/db"


async def test_no_node_answering_is_one_error_naming_each_node_without_its_password() -> None:
    broker = BrokerConnection("amqp://app:s3cret@127.0.0.1:1/,amqp://app:s3cret@127.0.0.1:2/",
                              connect_timeout=5)
    with pytest.raises(BrokerUnavailable) as raised:
        await broker.open()
    message = str(raised.value)
    assert message.startswith("RabbitMQ is not reachable at any node: "
                              "amqp://app:***@127.0.0.1:1/: ")
    assert "amqp://app:***@127.0.0.1:2/: " in message
    assert "s3cret" not in message and "\n" not in message


@pytest.mark.parametrize("url", ["memory://,amqp://n1/", "amqp://n1/,memory://"])
async def test_a_list_mixing_memory_and_amqp_is_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        await open_app(Settings(store_url="memory://", broker_url=url))
    assert str(raised.value).startswith("MUSSIKON_BROKER_URL ")
