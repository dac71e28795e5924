"""The HTTP client's TCP stream under asyncio behaves as an anyio byte stream should.

It keeps the socket registered for reading and buffers what arrives, so these
tests check what that could break: every byte of a large answer arrives in
order (reading pauses and resumes around the buffer limit), a cancelled read
leaves the stream usable, the end of the connection is seen — while idle too,
which is how the pool recognises a connection the server closed — and writing
to a closed connection fails. The peer is a real socket on 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import pytest

from circleback.net.asyncio_stream import AsyncioTCPStream, connect_tcp

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the stream is asyncio's; under trio the client uses anyio's own


@contextmanager
def _peer(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection server on 127.0.0.1 running ``serve`` in a thread; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def accept() -> None:
        connection, _ = listener.accept()
        with connection:
            serve(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(10)
        listener.close()


async def _until_news(stream: AsyncioTCPStream) -> None:
    with anyio.fail_after(10):
        while not stream.has_news():
            await anyio.sleep(0.01)


async def _read_all(stream: AsyncioTCPStream) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(await stream.receive(50_000))
        except anyio.EndOfStream:
            return b"".join(chunks)


async def test_a_large_answer_arrives_whole_and_in_order() -> None:
    payload = bytes(range(256)) * 8_192  # 2 MiB: well past the buffer limit
    request_seen = threading.Event()

    def serve(connection: socket.socket) -> None:
        assert connection.recv(100) == b"give"
        request_seen.set()
        connection.sendall(payload)

    with _peer(serve) as port:
        stream = await connect_tcp("127.0.0.1", port)
        await stream.send(b"give")
        await anyio.sleep(0.3)  # let the buffer fill up past its limit before reading
        # It stopped reading there: what a slow reader holds in memory is bounded.
        assert stream._protocol.reading_paused
        assert stream._protocol.buffered < len(payload)
        received = await _read_all(stream)
        await stream.aclose()
    assert request_seen.is_set()
    assert received == payload


async def test_a_cancelled_read_leaves_the_stream_usable() -> None:
    go_on = threading.Event()

    def serve(connection: socket.socket) -> None:
        go_on.wait(10)
        connection.sendall(b"late")

    with _peer(serve) as port:
        stream = await connect_tcp("127.0.0.1", port)
        with anyio.move_on_after(0.1) as scope:
            await stream.receive()
        assert scope.cancelled_caught
        go_on.set()
        with anyio.fail_after(10):
            assert await stream.receive() == b"late"
        await stream.aclose()


@asynccontextmanager
async def _after_goodbye(goodbye: bytes) -> AsyncIterator[AsyncioTCPStream]:
    """A stream whose peer sent ``goodbye`` and closed, once the bytes have arrived."""

    def serve(connection: socket.socket) -> None:
        connection.sendall(goodbye)

    with _peer(serve) as port:
        stream = await connect_tcp("127.0.0.1", port)
        await _until_news(stream)
        yield stream


async def test_the_end_of_an_idle_connection_is_news_and_writing_to_it_fails() -> None:
    async with _after_goodbye(b"bye") as stream:
        assert await stream.receive() == b"bye"
        await _until_news(stream)  # the bytes were read; the close is still news
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await stream.send(b"anyone?")
        await stream.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()


async def test_a_closed_stream_refuses_to_read_even_with_bytes_waiting() -> None:
    async with _after_goodbye(b"unread") as stream:
        await stream.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"more")


async def test_a_quiet_open_connection_has_no_news() -> None:
    done = threading.Event()

    def serve(connection: socket.socket) -> None:
        done.wait(10)

    with _peer(serve) as port:
        stream = await connect_tcp("127.0.0.1", port)
        await anyio.sleep(0.1)
        assert not stream.has_news()
        await stream.aclose()
        done.set()
