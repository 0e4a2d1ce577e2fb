"""A TCP fault proxy for the chaos tests: loopback only, asyncio, on a thread of its own.

The pools connect to Redis through it (their Redis URL names the proxy's port), so a test
can break the network between them and Redis without touching either:

* :meth:`FaultProxy.latency` delays every chunk forwarded, both ways;
* :meth:`FaultProxy.stall` holds every byte for N seconds, then delivers it (a slow link);
* :meth:`FaultProxy.reset` aborts every open connection (RST: the peer sees an error);
* :meth:`FaultProxy.half_open` makes every open connection silent for ever: the proxy
  keeps both sockets open and acknowledges what it is sent (the kernel does), but nothing
  is forwarded and nothing is closed, so neither TCP keepalive nor an error reveals it.
  New connections work;
* :meth:`FaultProxy.partition` drops everything for N seconds: open connections go silent,
  new ones are accepted but never reach Redis; at the end every connection that lived
  through it is aborted (the way a long partition ends for TCP connections whose
  retransmissions gave up), and new connections work again.

Every fault is a state of the proxy, so a test or the soak script drives faults from its
own thread while the pools run in their own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    silent: bool = False
    """Half-open: never forward another byte, never close."""
    born_in_partition: int = -1
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close with RST (SO_LINGER 0) so that the peer sees a reset, not an orderly end."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``with FaultProxy(redis_port) as proxy:`` forwards ``127.0.0.1:proxy.port`` to
    ``127.0.0.1:redis_port`` until the block ends."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._ready = threading.Event()
        self._delay = 0.0
        self._stalled_until = 0.0
        self._partition_until = 0.0
        self._partitions = 0
        self.connections = 0
        """Connections accepted so far (a pool that reconnects shows here)."""

    # -- running ---------------------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            self._drop(link)

    def _call(self, func: object, *args: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(func, *args)  # type: ignore[arg-type]

    # -- faults (called from any thread) ---------------------------------------------------

    def latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds`` from now on (0: none)."""
        self._delay = seconds

    def stall(self, seconds: float) -> None:
        """Hold every byte for ``seconds``, then deliver it."""
        self._stalled_until = time.monotonic() + seconds

    def reset(self) -> None:
        """Abort every open connection now."""
        self._call(self._reset_all)

    def half_open(self) -> int:
        """Make every open connection silent for ever; returns how many."""
        count = sum(not link.silent for link in list(self._links))
        self._call(self._silence_all)
        return count

    def partition(self, seconds: float) -> None:
        """Drop everything for ``seconds``; connections that lived through it are aborted at
        its end."""
        self._partitions += 1
        number = self._partitions
        self._partition_until = time.monotonic() + seconds
        self._call(self._mark_partitioned, number)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.call_later, seconds, self._heal, number)

    def heal(self) -> None:
        """End latency, stalls and partitions now. Silent (half-open) connections stay
        silent: nothing ever tells their owner, which must give up on them by itself."""
        self._delay = 0.0
        self._stalled_until = 0.0
        self._partition_until = 0.0
        self._call(self._heal, -1)

    @property
    def partitioned(self) -> bool:
        return time.monotonic() < self._partition_until

    # -- on the proxy's loop ---------------------------------------------------------------

    def _drop(self, link: _Link) -> None:
        self._links.discard(link)
        for task in link.tasks:
            task.cancel()
        _abort(link.client)
        _abort(link.upstream)

    def _reset_all(self) -> None:
        for link in list(self._links):
            self._drop(link)

    def _silence_all(self) -> None:
        for link in self._links:
            link.silent = True

    def _mark_partitioned(self, number: int) -> None:
        for link in self._links:
            link.born_in_partition = max(link.born_in_partition, number)

    def _heal(self, number: int) -> None:
        if number != -1 and number != self._partitions:
            return  # a later partition is still on: it heals itself
        for link in list(self._links):
            if link.born_in_partition >= 0 and not link.silent:
                self._drop(link)

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        self._links.add(link)
        if self.partitioned:
            link.born_in_partition = self._partitions
            # Accepted (the kernel did that), never connected upstream: silent until the
            # partition heals and aborts it.
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                                 self.upstream_port)
        except OSError:
            self._drop(link)  # Redis is down: the client sees a reset
            return
        if link not in self._links:  # aborted meanwhile
            _abort(up_writer)
            return
        link.upstream = up_writer
        link.tasks = [asyncio.create_task(self._pump(link, reader, up_writer)),
                      asyncio.create_task(self._pump(link, up_reader, writer))]

    async def _pump(self, link: _Link, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while True:
                    now = time.monotonic()
                    wait = max(self._stalled_until, self._partition_until) - now
                    if link.silent:
                        wait = 3600.0
                    if wait <= 0:
                        break
                    await asyncio.sleep(min(wait, 0.05))
                if link.born_in_partition >= 0 or link.silent:
                    continue  # a partition drops what was sent through it
                if self._delay:
                    await asyncio.sleep(self._delay)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # One side closed or failed: pass it on, unless the link is silent (half-open).
        if not link.silent and link in self._links:
            self._drop(link)
