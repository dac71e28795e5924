"""How ``poll_url``'s HTTP/1.1 client reads answers byte for byte, under asyncio and trio.

A scripted server on 127.0.0.1 sends exact bytes, so each way HTTP/1.1 frames
a body (a length, chunks, the connection's end, none at all), the answers
that are not the real one (``100 Continue``), the answers that break the
protocol, and whether a connection may carry the next request are each
pinned down. Also what the client puts on the wire, and that it refuses to
send a header that would split the request.
"""

from __future__ import annotations

import anyio
import pytest

from circleback import HttpTuning
from circleback.net.guarded_client import GuardedClient, HttpFailure
from circleback.net.netguard import NetworkPolicy, parse_http_url

from ..http_servers import ScriptedServer, answer

pytestmark = pytest.mark.anyio

_POLICY = NetworkPolicy(("127.0.0.1/32",))
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

async def _fetch(client: GuardedClient, url: str, method: str = "GET") -> tuple[int, bytes]:
    async with client.request(method, parse_http_url(url)) as response:
        body, _ = await response.read_capped(1000)
        return response.status, body


async def _twice(server: ScriptedServer, method: str = "GET") -> list[tuple[int, bytes]]:
    """Two requests one after the other through one client."""
    client = GuardedClient(HttpTuning(), _POLICY)
    try:
        return [await _fetch(client, f"{server.url}/a", method),
                await _fetch(client, f"{server.url}/b", method)]
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("reply", "body", "connections"),
    [
        pytest.param([_OK], b"ok", 1, id="content-length, kept"),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
             b"2\r\nde\r\n0\r\n\r\n"],
            b"abcde", 1, id="chunked, kept",
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"],
            b"hello", 2, id="connection close, not kept",
        ),
        pytest.param(
            [b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello"],
            b"hello", 2, id="HTTP/1.0, not kept",
        ),
        pytest.param(
            [b"HTTP/1.1 100 Continue\r\n\r\n", _OK],
            b"ok", 1, id="100 continue, then the answer",
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\ncont", b"ent-length: 2\r\n", b"\r\no", b"k"],
            b"ok", 1, id="head and body in pieces",
        ),
    ],
)
async def test_a_framed_body_is_read_whole_and_the_connection_kept_when_it_may_be(
    reply: list[bytes], body: bytes, connections: int
) -> None:
    close = connections == 2
    with ScriptedServer(answer(*reply, close=close)).running() as server:
        assert await _twice(server) == [(200, body), (200, body)]
    assert server.connections == connections


async def test_a_body_that_ends_with_the_connection_is_read_to_the_end() -> None:
    with ScriptedServer(answer(b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the end", close=True)
                        ).running() as server:
        assert await _twice(server) == [(200, b"until the end")] * 2
    assert server.connections == 2


@pytest.mark.parametrize(
    ("method", "reply"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"),
    ],
)
async def test_an_answer_without_a_body_ends_at_its_head(method: str, reply: bytes) -> None:
    status = int(reply.split()[1])
    with ScriptedServer(answer(reply)).running() as server:
        assert await _twice(server, method) == [(status, b""), (status, b"")]
    assert server.connections == 1


async def test_repeated_headers_are_joined_and_names_are_case_blind() -> None:
    reply = (b"HTTP/1.1 200 OK\r\nX-Step: one\r\nx-step: two\r\nContent-Type: text/plain; "
             b"charset=latin-1\r\nContent-Length: 2\r\n\r\nok")
    client = GuardedClient(HttpTuning(), _POLICY)
    with ScriptedServer(answer(reply)).running() as server:
        async with client.request("GET", parse_http_url(server.url)) as response:
            assert response.header("x-step") == "one, two"
            assert response.charset == "latin-1"
            assert response.header("x-missing") is None
            await response.read_capped(10)
    await client.aclose()


@pytest.mark.parametrize(
    ("parts", "says"),
    [
        pytest.param([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
                     "closed the connection before its answer was complete", id="cut body"),
        pytest.param([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"],
                     "closed the connection before its answer was complete", id="cut chunks"),
        pytest.param([b"HTTP/1.1 200 OK\r\ncontent-le"],
                     "closed the connection before its answer was complete", id="cut head"),
        pytest.param([b"SPDY/3 200 OK\r\n\r\n"], "the server broke HTTP/1.1", id="not HTTP"),
        pytest.param([b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"],
                     "the server broke HTTP/1.1", id="bad length"),
        pytest.param([b"HTTP/1.1 2OO OK\r\n\r\n"], "the server broke HTTP/1.1", id="bad status"),
        pytest.param([b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade"
                      b"\r\n\r\n"], "the server broke HTTP/1.1", id="unasked upgrade"),
        pytest.param([], "the server closed the connection without answering", id="no answer"),
    ],
)
async def test_a_broken_answer_fails_the_request_and_says_how(
    parts: list[bytes], says: str
) -> None:
    client = GuardedClient(HttpTuning(), _POLICY)
    with ScriptedServer(answer(*parts, close=True)).running() as server:
        with pytest.raises(HttpFailure, match=says):
            await _fetch(client, server.url)
        # The broken connection is not kept: the next request dials again.
        with pytest.raises(HttpFailure):
            await _fetch(client, server.url)
    assert server.connections == 2
    await client.aclose()


async def test_what_goes_on_the_wire() -> None:
    client = GuardedClient(HttpTuning(), _POLICY)
    with ScriptedServer(answer(_OK)).running() as server:
        url = parse_http_url(f"{server.url}/path/x%20y?q=1&r=%2F")
        async with client.request("POST", url, headers={"X-Trace": "t 1"},
                                  content=b'{"a":1}') as response:
            await response.read_capped(10)
        async with client.request("GET", parse_http_url(server.url)) as response:
            await response.read_capped(10)
    await client.aclose()
    posted, got = server.requests
    head, _, body = posted.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /path/x%20y?q=1&r=%2F HTTP/1.1"
    fields = {name.lower(): value.strip() for name, _, value in
              (line.partition(b":") for line in lines[1:])}
    port = server.url.rsplit(":", 1)[1].encode()
    assert fields == {
        b"host": b"127.0.0.1:" + port,
        b"user-agent": b"circleback",
        b"accept": b"*/*",
        b"accept-encoding": b"identity",
        b"x-trace": b"t 1",
        b"content-length": b"7",
    }
    assert body == b'{"a":1}'
    assert got.split(b"\r\n")[0] == b"GET / HTTP/1.1"


@pytest.mark.parametrize(
    "headers",
    [{"X-Evil": "a\r\nInjected: yes"}, {"X-Evil": "a\nb"}, {"X-Evil": "a\x00b"},
     {"Bad Name": "x"}, {"X-Evil:": "x"}, {"": "x"}],
)
async def test_a_header_that_would_break_the_request_is_not_sent(headers: dict[str, str]) -> None:
    client = GuardedClient(HttpTuning(), _POLICY)
    with ScriptedServer(answer(_OK)).running() as server:
        with pytest.raises(HttpFailure, match="the request cannot be sent"):
            async with client.request("GET", parse_http_url(server.url), headers=headers):
                pass
        assert await _fetch(client, server.url) == (200, b"ok")
    await client.aclose()
    assert len(server.requests) == 1
    assert b"Injected" not in server.requests[0]


async def test_a_body_past_the_cap_is_cut_and_the_connection_closed() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n" + b"x" * 2000
    client = GuardedClient(HttpTuning(), _POLICY)
    with ScriptedServer(answer(reply)).running() as server:
        async with client.request("GET", parse_http_url(server.url)) as response:
            assert await response.read_capped(100) == (b"x" * 100, True)
        assert await _fetch(client, server.url) == (200, b"x" * 1000)
    await client.aclose()
    assert server.connections == 2


async def test_a_slow_answer_arrives_whole_under_either_backend() -> None:
    """The head and body trickle in a byte at a time."""
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow"
    with ScriptedServer(answer(*(reply[i:i + 1] for i in range(len(reply))))
                        ).running() as server:
        client = GuardedClient(HttpTuning(), _POLICY)
        with anyio.fail_after(10):
            assert await _fetch(client, server.url) == (200, b"slow")
        await client.aclose()
