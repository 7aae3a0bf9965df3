"""A TCP proxy to a real server that a test can cut or freeze: the server is real, only the path
to it fails.

``async with tcp_proxy("127.0.0.1", 5432) as proxy:`` forwards ``127.0.0.1:proxy.port`` to the
target.

- ``await proxy.cut()`` closes every connection and stops listening (the server looks gone).
- ``proxy.freeze()`` keeps every connection open and keeps accepting new ones, but forwards
  nothing in either direction: the server looks hung (a stopped process, a lock it never
  releases, a network path that drops packets). ``proxy.resume()`` forwards again, in order,
  what was held back, as a server that wakes up would answer what it had been sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    target_host: str
    target_port: int
    port: int = 0
    connections: int = 0  # accepted so far (frozen or not)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._flowing.set()

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    def freeze(self) -> None:
        """Forward nothing from now on; connections stay open and new ones are accepted."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()  # frozen: held here (and the sender's kernel buffers fill)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(client_writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            # A connection accepted while frozen reaches the server only once it resumes: the
            # client sees a TCP connection that never answers its first message.
            await self._flowing.wait()
            server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.append(server_writer)
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        except (ConnectionError, OSError):
            client_writer.close()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def aclose(self) -> None:
        """Cut, and end the connections' tasks (frozen ones too)."""
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def tcp_proxy(host: str, port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()
