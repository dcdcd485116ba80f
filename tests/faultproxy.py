"""A fault-injecting TCP proxy, for what the test API server's HTTP answers cannot show.

It sits between the operator and the API server (tests/fakeapi) and does to the TCP
connections what a real API server's bad days do (found on Kubernetes 1.36, see
/work/shared/design-notes.md: a kube-apiserver restart drops every connection; clients see
aiohttp's `ServerDisconnectedError` / `ClientConnectorError`, not an HTTP status):

- `drop_all()`: every open connection is reset at once: requests in flight and watch streams
  end mid-way;
- `lose_answer(substring)`: the next request whose bytes contain `substring` reaches the server
  (so its write happens), but the connection is reset before the answer comes back;
- `refuse()` / `accept()`: new connections are refused (connection refused, as while the
  server restarts), and open ones dropped;
- `latency`: seconds added before every chunk forwarded, in both directions.

Plain asyncio streams; HTTP is not parsed (it is all one to the proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field


@dataclass(eq=False)  # kept in a set, by identity
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    lose_next_answer: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.server):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()  # RST, not a clean FIN: as a dying process's sockets go


@dataclass
class FaultProxy:
    target_host: str
    target_port: int
    latency: float = 0.0
    port: int = 0
    connections: int = 0  # accepted so far
    _server: asyncio.base_events.Server | None = None
    _links: set[_Link] = field(default_factory=set)
    _lose: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        await self.accept()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.refuse()  # resets every connection: each forwarding task ends by itself
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._links)

    # -- faults -------------------------------------------------------------------------------
    def drop_all(self) -> int:
        """Reset every open connection; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        return len(links)

    def lose_answer(self, substring: str) -> None:
        """The next request containing `substring` is delivered, its answer is not."""
        self._lose.append(substring)

    async def refuse(self) -> None:
        """Stop listening (new connections are refused) and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.drop_all()

    async def accept(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    # -- forwarding ---------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, upstream_writer)
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(
                self._pump(reader, link, upstream=True), self._pump(upstream_reader, link, upstream=False)
            )
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(link)
            link.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, link: _Link, *, upstream: bool) -> None:
        target = link.server if upstream else link.client
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                with contextlib.suppress(OSError):
                    target.write_eof()
                return
            if self.latency:
                await asyncio.sleep(self.latency)
            if upstream:
                for substring in self._lose:
                    if substring.encode() in chunk:
                        self._lose.remove(substring)
                        link.lose_next_answer = True
                        break
            elif link.lose_next_answer:
                link.abort()  # the request was served; its answer never arrives
                return
            target.write(chunk)
            await target.drain()
