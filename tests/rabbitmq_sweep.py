"""Delete the exchanges and queues that interrupted test runs left on the local RabbitMQ.

`python -m tests.rabbitmq_sweep [AMQP_URL]`: every queue and exchange whose name starts with a
test prefix (`t` and ten hex digits, as the `unique_name` fixture makes them) is deleted.
A test deletes its own at its end; a run that was killed does not, and thousands of leftover
quorum queues (each one a replicated log of its own) slow the broker down for every later run.
Then it checks that the broker works: a quorum queue declared, a message confirmed and got
back, the queue deleted; exit code 1 if not. `.ci/run` calls this before the suite, when no
other test run uses the broker (run by hand while another test session runs, it deletes that
session's queues too), and restarts the broker when it does not work.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid

import pika

from tests.conftest import RABBITMQ_URL

TEST_PREFIX = re.compile(r"^t[0-9a-f]{10}\.")


def listed(what: str) -> list[str]:
    """The names `rabbitmqctl list_<what>` prints for the default virtual host."""
    output = subprocess.run(["rabbitmqctl", "-q", f"list_{what}", "name"], check=True,
                            capture_output=True, text=True, timeout=120).stdout
    return [name for name in output.splitlines() if TEST_PREFIX.match(name)]


def main(url: str) -> int:
    if shutil.which("rabbitmqctl") is None:
        print("rabbitmq_sweep: rabbitmqctl not found, nothing swept")
        return 0
    queues, exchanges = listed("queues"), listed("exchanges")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
        print(f"rabbitmq_sweep: deleted {len(queues)} queues and {len(exchanges)} exchanges "
              "left by earlier test runs")
        if not works(channel):
            print("rabbitmq_sweep: the broker did not give back the message it confirmed")
            return 1
    finally:
        connection.close()
    return 0


def works(channel: pika.adapters.blocking_connection.BlockingChannel) -> bool:
    """A quorum queue declared, a message confirmed into it and got back, the queue deleted."""
    queue = f"t{uuid.uuid4().hex[:10]}.health"
    channel.confirm_delivery()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        channel.basic_publish("", queue, b"ping")
        for _ in range(50):
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                return bool(body == b"ping")
            channel.connection.sleep(0.1)
        return False
    finally:
        channel.queue_delete(queue)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else RABBITMQ_URL))
