"""The heartbeat a broker connection asks for: a connection on which nothing arrives is found
dead within about the broker timeout, unless the URL chooses its own heartbeat."""

from __future__ import annotations

from mussikon.adapters.messaging.rabbitmq.connection import with_heartbeat


def test_the_heartbeat_follows_the_timeout_unless_the_url_sets_one() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    # aiormq gives up after (heartbeat + 1) * 3 seconds without a frame
    assert with_heartbeat(url, 30) == url + "?heartbeat=9"
    assert with_heartbeat(url, 10) == url + "?heartbeat=2"
    assert with_heartbeat(url, 0.5) == url + "?heartbeat=1"  # the shortest aiormq takes
    assert with_heartbeat(url + "vhost?name=x", 30) == url + "vhost?name=x&heartbeat=9"
    assert with_heartbeat(url + "?heartbeat=0", 30) == url + "?heartbeat=0"
