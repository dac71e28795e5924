"""Answers from a hostile (or broken) server, read by ``poll_url``'s client, under asyncio and trio.

Each test here pins down one way a server can frame an answer that a careless
client reads as something else: a transfer coding it does not undo, a status
that is not one, content codings stacked on each other, folded header lines,
a newer HTTP/1.x version, a head that grows past the cap (in one piece or
over several ``1xx`` answers), and bytes after the end of a gzip stream.
A scripted server on 127.0.0.1 sends the exact bytes.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import anyio
import pytest

from circleback import HttpTuning
from circleback.net.guarded_client import GuardedClient, HttpFailure
from circleback.net.http1 import MAX_HEAD_BYTES
from circleback.net.httpclient import body_decoder, make_http_client, read_capped
from circleback.net.netguard import NetworkPolicy, parse_http_url

from ..http_servers import ScriptedServer, answer

pytestmark = pytest.mark.anyio

_POLICY = NetworkPolicy(("127.0.0.1/32",))
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def _get(
    server: ScriptedServer, times: int = 1, limit: int = 1000
) -> list[tuple[int, str | None, bytes]]:
    """Status, ``x-a`` header and decoded body of ``times`` GETs through one client."""
    client = GuardedClient(HttpTuning(), _POLICY)
    seen: list[tuple[int, str | None, bytes]] = []
    try:
        with anyio.fail_after(20):
            for _ in range(times):
                async with client.request("GET", parse_http_url(server.url)) as response:
                    body, _ = await response.read_capped(limit)
                    seen.append((response.status, response.header("x-a"), body))
    finally:
        await client.aclose()
    return seen


async def _refused(reply: bytes, says: str) -> None:
    with (ScriptedServer(answer(reply, close=True)).running() as server,
          pytest.raises(HttpFailure, match=says)):
        await _get(server)


def _head(status: bytes = b"200 OK", *fields: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(field + b"\r\n" for field in fields)


# -- transfer codings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codings",
    [
        [b"gzip, chunked"],
        [b"chunked, gzip"],
        [b"gzip"],
        [b"identity"],
        [b"chunked, chunked"],
        [b"chunked", b"chunked"],
        [b"gzip", b"chunked"],
        [b""],
    ],
    ids=repr,
)
async def test_a_transfer_coding_other_than_chunked_alone_is_refused(codings: list[bytes]) -> None:
    """``gzip, chunked`` would come back still gzipped, ``chunked, gzip`` with its chunk framing."""
    packed = gzip.compress(b"hello")
    chunks = f"{len(packed):x}\r\n".encode() + packed + b"\r\n0\r\n\r\n"
    fields = [b"transfer-encoding: " + coding for coding in codings]
    await _refused(_head(b"200 OK", *fields) + b"\r\n" + chunks, "Transfer-Encoding")


async def test_chunked_is_read_in_any_case() -> None:
    reply = _head(b"200 OK", b"Transfer-Encoding: Chunked") + b"\r\n2\r\nok\r\n0\r\n\r\n"
    with ScriptedServer(answer(reply)).running() as server:
        [(status, _, body)] = await _get(server)
    assert (status, body) == (200, b"ok")


# -- statuses and versions ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [b"000", b"099", b"042"])
async def test_a_status_below_100_is_refused_not_passed_over(status: bytes) -> None:
    """It is not informational: a server that sends it, then a 200, is not believed."""
    reply = _head(status + b" Early") + b"\r\n" + _OK
    await _refused(reply, f"status {int(status)}")


async def test_a_newer_http_1_minor_version_is_read_as_http_1_1() -> None:
    """RFC 9112 §2.3: same major version, higher minor: processed as 1.1, kept alive."""
    reply = b"HTTP/1.2 200 OK\r\ncontent-length: 2\r\n\r\nok"
    with ScriptedServer(answer(reply)).running() as server:
        assert [(status, body) for status, _, body in await _get(server, 2)] == [(200, b"ok")] * 2
    assert server.connections == 1


@pytest.mark.parametrize("version", [b"HTTP/0.9", b"HTTP/2.0", b"HTTP/3.0", b"HTTP/2.1"])
async def test_another_major_version_is_refused(version: bytes) -> None:
    await _refused(version + b" 200 OK\r\ncontent-length: 2\r\n\r\nok", "version")


# -- folded header lines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "value"),
    [
        ([b"x-a: one", b" two"], "one two"),
        ([b"x-a: one  ", b" \t two", b"\tthree"], "one two three"),
        ([b"x-a:", b" two"], "two"),
        ([b"x-a: one", b" "], "one"),
    ],
)
async def test_a_folded_header_line_is_unfolded_with_one_space(
    lines: list[bytes], value: str
) -> None:
    """RFC 9112 §5.2: a user agent replaces each obs-fold with SP before reading the value."""
    reply = _head(b"200 OK", *lines, b"content-length: 2") + b"\r\nok"
    with ScriptedServer(answer(reply)).running() as server:
        assert await _get(server) == [(200, value, b"ok")]


async def test_a_folded_line_right_after_the_status_line_is_refused() -> None:
    """RFC 9112 §2.2: whitespace before the first field line: the answer is refused."""
    await _refused(_head(b"200 OK", b" x-a: one", b"content-length: 2") + b"\r\nok",
                   "the server broke HTTP/1.1")


# -- content codings ---------------------------------------------------------------------------


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


@pytest.mark.parametrize(
    ("coding", "pack"),
    [
        ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
        ("deflate, gzip", lambda data: gzip.compress(_deflate(data))),
        ("gzip,deflate", lambda data: _deflate(gzip.compress(data))),
        ("gzip, identity", gzip.compress),
        ("GZIP, x-gzip, deflate", lambda data: _deflate(gzip.compress(gzip.compress(data)))),
    ],
)
async def test_stacked_content_codings_are_undone_last_first(
    coding: str, pack: Callable[[bytes], bytes]
) -> None:
    content = b'{"status": "ok"}' * 20
    packed = pack(content)
    reply = _head(b"200 OK", b"content-encoding: " + coding.encode(),
                  f"content-length: {len(packed)}".encode()) + b"\r\n" + packed
    with ScriptedServer(answer(reply)).running() as server:
        [(_, _, body)] = await _get(server)
    assert body == content


async def test_stacked_codings_are_cut_at_the_cap_like_one() -> None:
    content = b"x" * 100_000
    packed = gzip.compress(gzip.compress(content))
    reply = _head(b"200 OK", b"content-encoding: gzip, gzip",
                  f"content-length: {len(packed)}".encode()) + b"\r\n" + packed
    client = GuardedClient(HttpTuning(), _POLICY)
    with ScriptedServer(answer(reply)).running() as server:
        try:
            async with client.request("GET", parse_http_url(server.url)) as response:
                assert await response.read_capped(5000) == (b"x" * 5000, True)
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    "coding", ["gzip, gzip, gzip, gzip", "br, gzip", "gzip, compress"]
)
async def test_codings_past_the_bound_or_unknown_come_back_raw(coding: str) -> None:
    """As for one unknown coding: the body is returned as sent, not half undone."""
    packed = gzip.compress(b"hello")
    reply = _head(b"200 OK", b"content-encoding: " + coding.encode(),
                  f"content-length: {len(packed)}".encode()) + b"\r\n" + packed
    with ScriptedServer(answer(reply)).running() as server:
        [(_, _, body)] = await _get(server)
    assert body == packed


# -- a gzip stream ends where its member ends ----------------------------------------------------

_JUNK_BLOCK = bytes(range(256)) * 256  # 64 KiB
_JUNK_BLOCKS = 512  # 32 MiB


def _junk_answer(coding: str, content: bytes) -> tuple[int, list[bytes]]:
    """The length and the parts of an answer: a compressed ``content``, then 32 MiB of junk."""
    member = gzip.compress(content) if coding == "gzip" else _deflate(content)
    length = len(member) + len(_JUNK_BLOCK) * _JUNK_BLOCKS
    head = _head(b"200 OK", b"content-encoding: " + coding.encode(),
                 f"content-length: {length}".encode()) + b"\r\n"
    return length, [head + member]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_bytes_after_the_end_of_the_compressed_stream_are_neither_inflated_nor_read(
    coding: str,
) -> None:
    """The body is the member's content; the junk after it is not collected, nor waited for."""
    content = b'{"status": "ok"}'
    length, first = _junk_answer(coding, content)

    def parts() -> Iterator[bytes]:
        yield from first
        for _ in range(_JUNK_BLOCKS):
            yield _JUNK_BLOCK

    with ScriptedServer(lambda request: (parts(), True)).running() as server:
        [(status, _, body)] = await _get(server)
    assert (status, body) == (200, content)
    # The client stopped reading once the stream ended (the kernel's buffers hold a few MB).
    assert server.bytes_sent < length // 2


async def test_the_module_client_also_stops_where_the_stream_ends() -> None:
    """``poll_module``'s httpx client reads bodies through the same decoder."""
    content = b'{"status": "ok"}'
    length, first = _junk_answer("gzip", content)

    def parts() -> Iterator[bytes]:
        yield from first
        for _ in range(_JUNK_BLOCKS):
            yield _JUNK_BLOCK

    with ScriptedServer(lambda request: (parts(), True)).running() as server:
        async with make_http_client(HttpTuning()) as client:
            with anyio.fail_after(20):
                async with client.stream("GET", server.url) as response:
                    assert await read_capped(response, 1000) == (content, False)
    assert server.bytes_sent < length // 2


def test_a_decoder_keeps_nothing_of_what_follows_the_stream() -> None:
    """Junk after the member costs neither memory nor inflating, however much of it comes."""
    decoder = body_decoder("gzip")
    assert decoder is not None
    assert decoder.decode(gzip.compress(b"hello") + b"junk", 100) == b"hello"
    assert decoder.finished
    tracemalloc.start()
    try:
        for _ in range(1000):  # 64 MiB
            assert decoder.decode(_JUNK_BLOCK, 100) == b""
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


async def test_an_inner_coding_that_expands_to_nothing_without_end_is_refused() -> None:
    """A gzip of endless empty deflate blocks: no body ever comes out, yet it inflates on."""
    # A zlib header, then empty stored blocks (not the last: 0, LEN 0, NLEN 0xffff), 1 MB.
    inner = b"x\x9c" + b"\x00\x00\x00\xff\xff" * 200_000
    packed = gzip.compress(inner)
    reply = _head(b"200 OK", b"content-encoding: deflate, gzip",
                  f"content-length: {len(packed)}".encode()) + b"\r\n" + packed
    with (ScriptedServer(answer(reply)).running() as server,
          pytest.raises(HttpFailure, match="expands without end")):
        await _get(server)


# -- the head's cap ----------------------------------------------------------------------------


def _filler(total: int, prefix: bytes = b"HTTP/1.1 200 OK\r\n", end: bytes = b"\r\n") -> bytes:
    """A head of exactly ``total`` bytes: ``prefix``, one ``x-filler`` field, the blank line."""
    room = total - len(prefix) - len(b"x-filler: \r\n") - len(end)
    return prefix + b"x-filler: " + b"a" * room + b"\r\n" + end


@pytest.mark.parametrize("piece", [None, 1000, 65_535])
async def test_one_header_past_the_cap_is_refused_however_it_arrives(piece: int | None) -> None:
    head = _filler(122 * 1024, end=b"content-length: 2\r\n\r\n")
    reply = head + b"ok"
    parts = [reply] if piece is None else [reply[i:i + piece] for i in range(0, len(reply), piece)]
    with (ScriptedServer(answer(*parts, close=True)).running() as server,
          pytest.raises(HttpFailure, match="head is over")):
        await _get(server)


@pytest.mark.parametrize("extra", [0, 1])
async def test_the_head_cap_is_exact(extra: int) -> None:
    head = _filler(MAX_HEAD_BYTES + extra, end=b"content-length: 2\r\n\r\n")
    with ScriptedServer(answer(head + b"ok")).running() as server:
        if extra:
            with pytest.raises(HttpFailure, match="head is over"):
                await _get(server)
        else:
            [(status, _, body)] = await _get(server)
            assert (status, body) == (200, b"ok")


@pytest.mark.parametrize("extra", [0, 1])
async def test_informational_heads_count_toward_the_cap_together(extra: int) -> None:
    """Four ``103`` answers of a quarter of the cap each, then the real one's head."""
    final = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    quarter = (MAX_HEAD_BYTES - len(final)) // 4
    early = [_filler(quarter, b"HTTP/1.1 103 Early Hints\r\n") for _ in range(3)]
    early.append(_filler(MAX_HEAD_BYTES - len(final) - 3 * quarter + extra,
                         b"HTTP/1.1 103 Early Hints\r\n"))
    assert sum(map(len, early)) + len(final) == MAX_HEAD_BYTES + extra
    with ScriptedServer(answer(*early, final + b"ok")).running() as server:
        if extra:
            with pytest.raises(HttpFailure, match="head is over"):
                await _get(server)
        else:
            [(status, _, body)] = await _get(server)
            assert (status, body) == (200, b"ok")
