"""`/readyz` with RabbitMQ cut away: 503 naming the broker (its password masked) while the
connection is down, 200 again once it is back."""

from __future__ import annotations

import httpx
import pytest

from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.config import Settings
from mussikon.entrypoints.http.api import create_api
from tests.integration.rabbitmq_kit import BrokerNamespace
from tests.polling import eventually
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq


async def test_readyz_names_rabbitmq_while_it_is_cut_away(rabbitmq_url: str,
                                                          unique_name: str) -> None:
    proxy = TcpProxy(rabbitmq_url)
    proxy_url = await proxy.start()
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    settings = Settings(store_url="memory://", broker_url=proxy_url,
                        rabbitmq_prefix=namespace.prefix, rabbitmq_queue_type="classic",
                        poll_interval=0.01, poll_max_interval=0.05)
    api = create_api(settings)
    brokers: dict[str, object] = {}

    async def brokers_check(client: httpx.AsyncClient, status: int) -> bool:
        answer = await client.get("/readyz")
        checks = {c["name"]: c for c in answer.json()["checks"]}
        brokers.update(checks["brokers"])
        assert "guest:guest" not in answer.text
        return answer.status_code == status and checks["store"]["ok"]

    try:
        async with api.router.lifespan_context(api):
            transport = api.state.mussikon.app.transport
            assert isinstance(transport, RabbitMqTransport)
            namespace.track(transport)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api),
                                         base_url="http://api") as client:
                await eventually(lambda: brokers_check(client, 200), 10, what="ready")
                assert brokers == {"name": "brokers", "ok": True,
                                   "detail": f"RabbitMQ {proxy_url.replace(':guest@', ':***@')}"}

                await proxy.close()
                await eventually(lambda: brokers_check(client, 503), 30, what="503")
                assert brokers["ok"] is False
                detail = str(brokers["detail"])
                assert detail.startswith(
                    f"RabbitMQ at {proxy_url.replace(':guest@', ':***@')}: connection lost")

                await proxy.start(proxy.listening_port)
                await eventually(lambda: brokers_check(client, 200), 30, what="ready again")
    finally:
        await proxy.close()
        await namespace.cleanup()
