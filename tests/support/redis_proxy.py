"""A TCP proxy in front of a redis-server, for fault-injection tests (loopback only).

It runs an event loop of its own in a thread, so a test that blocks (starting an app
process, waiting for a redis-server to exit) never stalls the bytes flowing through it.

Faults, switched on and off while it runs:

- `delay`: seconds added to every server->client chunk (latency, not a bandwidth cap:
  a chunk read at t is written at t + delay, chunks keep their order);
- `drop_connections()`: resets every open connection (both sides, RST);
- `refuse_new()` / `accept_new()`: stop listening (connects get ECONNREFUSED), listen
  again on the same port;
- `lose_reply_to(pattern)`: the next command whose bytes hold `pattern` reaches Redis
  and runs, but its connection is reset before the reply comes back (a reply lost on
  the wire, which makes a client retry a command that already ran).

Use as `async with RedisProxy(redis_port) as proxy:` (or `start()` / `stop()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
_CHUNK = 65536
_CONTROL_TIMEOUT = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(eq=False)
class _Link:
    """One client connection and its connection to Redis."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    lose_next_reply: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class RedisProxy:
    """Proxies 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, with faults on demand."""

    def __init__(self, upstream_port: int, *, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or _free_port()
        self.delay = 0.0
        self.accepted = 0  # client connections accepted since start
        self.dropped = 0  # connections reset by drop_connections()
        self.chunks_to_server = 0  # client->server reads; grows when a command is sent
        self.client_eofs = 0  # connections the client closed itself (e.g. redis-py on cancel)
        self.peak_connections = 0  # most connections open at once
        self.replies_lost = 0  # replies withheld by lose_reply_to()
        self._lose_pattern: bytes | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    # -- life cycle -------------------------------------------------------------

    def start(self) -> RedisProxy:
        assert self._thread is None, "already started"
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"redis-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(_CONTROL_TIMEOUT):
            raise RuntimeError("the proxy's event loop did not start")
        self._call(self._listen())
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT)
            self._loop = self._thread = None

    async def __aenter__(self) -> RedisProxy:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- faults -----------------------------------------------------------------

    @contextlib.contextmanager
    def delayed(self, seconds: float) -> Iterator[None]:
        """Delay server->client bytes by `seconds` inside the block."""
        before, self.delay = self.delay, seconds
        try:
            yield
        finally:
            self.delay = before

    def drop_connections(self) -> int:
        """Reset every open connection; returns how many there were."""
        count: int = self._call(self._drop())
        return count

    def refuse_new(self) -> None:
        """Stop listening: new connections are refused; open ones are left alone."""
        self._call(self._close_listener())

    def accept_new(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def lose_reply_to(self, pattern: bytes | None) -> None:
        """Reset the connection of the next command holding `pattern`, once it has run
        (None: lose nothing)."""
        self._lose_pattern = pattern

    async def lose_reply_then_go_down(self, pattern: bytes, seconds: float) -> float:
        """The next command holding `pattern` runs and its reply is lost; then Redis is
        unreachable for `seconds` (new connections refused, open ones dropped). Returns
        when the reply was lost (monotonic time)."""
        self.lose_reply_to(pattern)
        for _ in range(200):  # until the command ran and its reply was withheld
            if self.replies_lost:
                break
            await asyncio.sleep(0.01)
        lost_at = time.monotonic()
        self.refuse_new()
        self.drop_connections()
        await asyncio.sleep(seconds)
        self.accept_new()
        return lost_at

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def wait_for_command(self, since: int, timeout: float = 5.0) -> None:
        """Wait (polling, bounded) until `chunks_to_server` grows past `since`."""
        deadline = time.monotonic() + timeout
        while self.chunks_to_server <= since:
            if time.monotonic() > deadline:
                raise TimeoutError("no command reached the proxy")
            await asyncio.sleep(0.002)

    # -- inside the proxy's loop ----------------------------------------------------

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "the proxy is not running"
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(_CONTROL_TIMEOUT)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, LOOPBACK, self.port, reuse_address=True
            )

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _drop(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        self.dropped += len(links)
        await self._settle(links)
        return len(links)

    async def _settle(self, links: list[_Link]) -> None:
        tasks = [task for link in links for task in link.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=_CONTROL_TIMEOUT)

    async def _shutdown(self) -> None:
        await self._close_listener()
        links = list(self._links)
        for link in links:
            link.abort()
        for link in links:
            for task in link.tasks:
                task.cancel()
        await self._settle(links)
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=_CONTROL_TIMEOUT)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._handlers.add(current)
        self.accepted += 1
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            # Only `stop()` cancels a handler. Ending normally keeps asyncio's own
            # done-callback (which asks the task for its exception) quiet.
            writer.transport.abort()
        finally:
            writer.close()
            self._handlers.discard(current)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(LOOPBACK, self.upstream_port), 2.0
            )
        except (OSError, TimeoutError):
            # Redis is down: the client sees its connection reset, as it would behind
            # a load balancer with no backend.
            writer.transport.abort()
            return
        link = _Link(client=writer, upstream=up_writer)
        self._links.add(link)
        self.peak_connections = max(self.peak_connections, len(self._links))
        link.tasks = [
            asyncio.create_task(self._to_server(reader, up_writer, link)),
            asyncio.create_task(self._to_client(up_reader, writer, link)),
        ]
        try:
            # Either direction ending (EOF, reset, drop) ends the link.
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in link.tasks:
                task.cancel()
            await asyncio.wait(link.tasks, timeout=_CONTROL_TIMEOUT)
            self._links.discard(link)
            # A plain close: what was already written (a last reply) is still delivered.
            up_writer.close()
            writer.close()

    async def _to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                self.chunks_to_server += 1
                if self._lose_pattern is not None and self._lose_pattern in data:
                    self._lose_pattern = None
                    link.lose_next_reply = True
                writer.write(data)
                await writer.drain()
            self.client_eofs += 1

    async def _to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            with contextlib.suppress(OSError):
                while data := await reader.read(_CHUNK):
                    if link.lose_next_reply:
                        self.replies_lost += 1
                        link.abort()
                        break
                    queue.put_nowait((time.monotonic() + self.delay, data))
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(OSError):
                await sender
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await sender
