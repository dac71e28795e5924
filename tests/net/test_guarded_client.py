"""The HTTP/1.1 client of ``poll_url`` against real sockets on 127.0.0.1, under asyncio and trio.

What the checker's tests (test_poll_url.py, test_ssrf.py) do not reach: what
happens to kept-alive connections a server drops, and the limit on open
connections.
"""

from __future__ import annotations

import socket

import anyio
import pytest

from circleback import HttpTuning
from circleback.net.guarded_client import GuardedClient, HttpFailure, PoolTimedOut
from circleback.net.netguard import NetworkPolicy, parse_http_url

from ..http_servers import HttpServer, RawServer, Reply, sequence

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
_POLICY = NetworkPolicy(("127.0.0.1/32",))


class RudeServer(RawServer):
    """Answers requests on keep-alive connections, then drops connections without a word.

    ``answers_per_connection`` requests are answered on a connection; the next
    one is read and the connection closed without an answer (a server that
    timed the connection out just as the request arrived). With
    ``close_after_answer`` the connection is closed right after each answer
    instead, still without ``Connection: close``.
    """

    def __init__(self, *, answers_per_connection: int = 1, close_after_answer: bool = False):
        super().__init__()
        self.answers_per_connection = answers_per_connection
        self.close_after_answer = close_after_answer
        self.requests = 0

    def serve(self, connection: socket.socket) -> None:
        connection.settimeout(5)
        answered = 0
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = connection.recv(65_536)
                if not data:
                    return
                buffer += data
            _, _, buffer = buffer.partition(b"\r\n\r\n")
            self.requests += 1
            if answered == self.answers_per_connection:
                return  # read, never answered: the connection just closes
            connection.sendall(_ANSWER)
            answered += 1
            if self.close_after_answer:
                return


async def _get(client: GuardedClient, url: str) -> tuple[int, bytes]:
    async with client.request("GET", parse_http_url(url)) as response:
        body, _ = await response.read_capped(1000)
        return response.status, body


async def test_a_kept_alive_connection_the_server_closed_is_not_used_again() -> None:
    client = GuardedClient(HttpTuning(), _POLICY)
    with RudeServer(close_after_answer=True).running() as server:
        url = f"http://127.0.0.1:{server.port}/health"
        first = await _get(client, url)
        await anyio.sleep(0.1)  # the server's close reaches the idle connection
        second = await _get(client, url)
        await client.aclose()
    assert first == second == (200, b"ok")
    assert server.connections == 2
    assert server.requests == 2  # nothing was sent down the closed connection


async def test_a_request_the_server_dropped_on_a_kept_alive_connection_is_sent_again() -> None:
    client = GuardedClient(HttpTuning(), _POLICY)
    with RudeServer(answers_per_connection=1).running() as server:
        url = f"http://127.0.0.1:{server.port}/health"
        answers = [await _get(client, url) for _ in range(3)]
        await client.aclose()
    assert answers == [(200, b"ok")] * 3
    # Each kept-alive connection answered once and dropped the next request,
    # which went again, once, on a new connection.
    assert server.connections == 3
    assert server.requests == 5


async def test_a_request_dropped_on_a_new_connection_fails_without_a_retry() -> None:
    client = GuardedClient(HttpTuning(), _POLICY)
    with RudeServer(answers_per_connection=0).running() as server:
        with pytest.raises(HttpFailure) as failure:
            await _get(client, f"http://127.0.0.1:{server.port}/health")
        await client.aclose()
    assert "closed" in str(failure.value)
    assert server.connections == 1
    assert server.requests == 1


async def test_no_more_connections_than_allowed_are_opened() -> None:
    tuning = HttpTuning(max_connections=1, connect_timeout_seconds=0.3)
    client = GuardedClient(tuning, _POLICY)
    with HttpServer(sequence(Reply(hang=True))) as server:
        async with anyio.create_task_group() as group:
            group.start_soon(_get, client, f"{server.url}/stuck")
            with anyio.fail_after(10):
                while not server.requests:
                    await anyio.sleep(0.01)
            with pytest.raises(PoolTimedOut):
                await _get(client, f"{server.url}/waiting")
            group.cancel_scope.cancel()
        await client.aclose()
        connections = server.connections
    assert connections == 1
    assert [request.path for request in server.requests] == ["/stuck"]


async def test_idle_connections_are_kept_up_to_the_limit() -> None:
    tuning = HttpTuning(max_keepalive_connections=2)
    client = GuardedClient(tuning, _POLICY)
    with HttpServer(sequence(Reply(status=202))) as server:
        for _round in range(3):
            async with anyio.create_task_group() as group:
                for index in range(4):
                    group.start_soon(_get, client, f"{server.url}/{index}")
        await client.aclose()
        assert client.is_closed
    assert len(server.requests) == 12
    # Four at once need four connections; two are kept after each round and reused.
    assert 4 < server.connections <= 8
