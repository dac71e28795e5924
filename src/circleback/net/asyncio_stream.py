"""A TCP byte stream for the HTTP client under asyncio, with no loop pass it does not need.

anyio's asyncio socket stream registers the socket with the selector before
every ``receive`` and removes it after (two ``epoll_ctl`` calls), and after
every ``send`` waits one pass of the event loop. A poll exchanges one small
request for one small answer on a kept-alive connection, so those were a
good part of its cost. This stream keeps the socket registered for reading
while it is open (buffering what arrives, up to a limit), writes without an
extra pass, and is still a point where a cancelled task stops
(``checkpoint_if_cancelled``). It also tells whether anything arrived while
the connection sat idle (:meth:`AsyncioTCPStream.has_news`), which is how a
pooled connection the server closed is recognised without polling the socket.

Under trio the client uses anyio's own stream.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["AsyncioTCPStream", "connect_tcp"]

#: Bytes buffered unread before the socket is no longer read from, and when reading resumes.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class _Protocol(asyncio.Protocol):
    """Buffers what arrives and wakes the one reader waiting, if any."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.reading_paused = False
        self.ended = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport: a half-closed HTTP/1.1 connection is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.drained is None or self.drained.done():
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncioTCPStream(anyio.abc.ByteStream):
    """A connected TCP socket as an anyio byte stream (asyncio only)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    def has_news(self) -> bool:
        """Whether bytes or the end of the connection arrived and were not read yet."""
        return bool(self._protocol.chunks) or self._protocol.ended

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint_if_cancelled()
        protocol = self._protocol
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if protocol.chunks:
                break
            if protocol.ended:
                if protocol.error is not None:
                    raise anyio.BrokenResourceError from protocol.error
                raise anyio.EndOfStream
            if protocol.waiter is not None:
                raise anyio.BusyResourceError("reading from")
            protocol.waiter = asyncio.get_running_loop().create_future()
            try:
                await protocol.waiter
            finally:
                protocol.waiter = None
        chunk = protocol.chunks.popleft()
        if len(chunk) > max_bytes:
            protocol.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered < _LOW_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        if protocol.error is not None or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.error
        self._transport.write(item)
        drained = protocol.drained
        if drained is not None and not drained.done():
            await drained
            if protocol.error is not None:
                raise anyio.BrokenResourceError from protocol.error

    async def send_eof(self) -> None:
        if not self._transport.is_closing():
            self._transport.write_eof()

    async def aclose(self) -> None:
        """Close at once: a pooled connection being given up has nothing left to say."""
        self._closed = True
        self._transport.abort()
        self._protocol._wake()
        # The socket is closed on the loop's next pass: let it come, even when cancelled.
        await anyio.lowlevel.cancel_shielded_checkpoint()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        sock: socket.socket = self._transport.get_extra_info("socket")
        return {
            anyio.abc.SocketAttribute.family: lambda: sock.family,
            anyio.abc.SocketAttribute.local_address: sock.getsockname,
            anyio.abc.SocketAttribute.remote_address: sock.getpeername,
            anyio.abc.SocketAttribute.raw_socket: lambda: sock,
        }


async def connect_tcp(host: str, port: int) -> AsyncioTCPStream:
    """Connect to ``host`` (an address, not a name: nothing is resolved here) and ``port``."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_Protocol, host, port)
    assert isinstance(transport, asyncio.Transport)
    return AsyncioTCPStream(transport, protocol)
