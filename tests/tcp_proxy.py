"""A TCP proxy in front of a server (the broker, PostgreSQL) whose connections a test can cut
or stall, as a network failure would, or whose replies it can hold back."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forwards every connection to the server `target_url` names. `cut()` aborts them (the
    client sees its socket die, the server sees the peer vanish); `stall()` keeps them open
    but forwards nothing more, either way (a server that accepts and stops answering, or a
    network that drops everything). `hold_replies()` keeps what the server sends (the
    client's messages still reach it, but no confirm or answer comes back) until
    `release_replies()`."""

    def __init__(self, target_url: str, default_port: int = 5672) -> None:
        parts = urlsplit(target_url)
        self.target_url = target_url
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or default_port
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._stalled: set[asyncio.StreamWriter] = set()
        self._replies = asyncio.Event()
        self._replies.set()
        self.cuts = 0
        self.accepted = 0
        """Connections accepted so far."""
        self.listening_port = 0

    async def start(self, port: int = 0) -> str:
        """Listen on `port` (a free one if 0: after `close`, pass the port it had to be the
        same server back); return `target_url` going through the proxy."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        port = self.listening_port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self.target_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2
                                         else host))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self._pipes |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer),
                             self._pump(up_reader, writer, self._replies),
                             return_exceptions=True)
        self._pipes -= {writer, up_writer}
        self._stalled -= {writer, up_writer}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    flowing: asyncio.Event | None = None) -> None:
        try:
            while data := await reader.read(65536):
                if flowing is not None:
                    await flowing.wait()
                if writer in self._stalled:
                    continue  # read and dropped: the sender sees nothing wrong
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        """Abort every connection through the proxy (new ones are accepted)."""
        self.cuts += 1
        for writer in list(self._pipes):
            writer.transport.abort()

    def hold_replies(self) -> None:
        """Stop passing on what the server sends, from now on (kept, not lost)."""
        self._replies.clear()

    def release_replies(self) -> None:
        """Pass on what the server sent meanwhile, and what it sends from now on."""
        self._replies.set()

    def stall(self) -> None:
        """From now on forward nothing on the connections open (new ones are forwarded)."""
        self._stalled |= self._pipes

    async def close(self) -> None:
        """Stop listening and cut what is left."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
