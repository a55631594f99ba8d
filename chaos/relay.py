"""An outbox relay alone (no handlers, no read models), on the store and broker MUSSIKON_*
name: what a deployment runs beside its workers to publish the store's events. SIGTERM stops
it (exit 0); what it published and the broker did not confirm is published again by the next.

    python -m chaos.relay
"""

from __future__ import annotations

import asyncio
import signal

from mussikon.bootstrap import open_app
from mussikon.config import Settings, mask_url


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    app = await open_app(Settings())
    try:
        await app.transport.start([])  # no subscription: the relay alone
        print(f"relay running on {mask_url(app.settings.broker_url)}", flush=True)
        await stop.wait()
        await app.transport.stop()
    finally:
        await app.close()


if __name__ == "__main__":
    asyncio.run(main())
