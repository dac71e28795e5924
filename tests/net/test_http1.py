"""HTTP/1.1 on the wire, without a network: requests written, answers parsed (net/http1.py).

Hypothesis draws answers in each framing (a length, chunks, the connection's
end) and cuts their bytes anywhere: what the parser makes of them must not
depend on how the bytes arrived. Requests are read back with llhttp's request
parser: what goes out is what was asked for, and a header that would change the
request's shape is refused, by name, before anything is written.
"""

from __future__ import annotations

import re
from typing import Any

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from circleback.net.http1 import (
    MAX_HEAD_BYTES,
    AnswerParser,
    BrokenAnswer,
    UnsendableRequest,
    encode_request,
)

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(_TOKEN_CHARS, min_size=1, max_size=12)
#: Header values as they may be sent: visible characters with single inner spaces.
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(
    lambda text: text.replace("~", " ").strip()
)
statuses = st.sampled_from([200, 201, 202, 203, 400, 404, 409, 500, 503])
framings = st.sampled_from(["length", "chunked", "close"])


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, int, list[tuple[str, bytes]], bytes, str]:
    """The bytes of an answer, and its status, headers, body and framing."""
    status = draw(statuses)
    names = draw(st.lists(tokens.map(lambda name: "x-" + name.lower()), max_size=4, unique=True))
    headers = [(name, draw(values).encode()) for name in names]
    body = draw(st.binary(max_size=300))
    framing = draw(framings)
    head = [f"HTTP/1.1 {status} Whatever\r\n".encode()]
    head += [name.encode() + b": " + value + b"\r\n" for name, value in headers]
    if framing == "length":
        head.append(f"content-length: {len(body)}\r\n".encode())
        payload = body
    elif framing == "chunked":
        head.append(b"transfer-encoding: chunked\r\n")
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                           for piece in pieces if piece) + b"0\r\n\r\n"
    else:
        payload = body
    return b"".join(head) + b"\r\n" + payload, status, headers, body, framing


def _parse(data: bytes, cuts: list[int], *, closed: bool) -> dict[str, Any]:
    parser = AnswerParser()
    body = b""
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        parser.feed(data[start:end])
        body += b"".join(parser.take_body())
    if closed:
        parser.end()
    return {"status": parser.status, "headers": parser.headers, "body": body,
            "complete": parser.complete, "keep_alive": parser.keep_alive}


@given(answers(), st.data())
def test_an_answer_reads_the_same_however_its_bytes_arrive(
    answer: tuple[bytes, int, list[tuple[str, bytes]], bytes, str], data: st.DataObject
) -> None:
    raw, status, headers, body, framing = answer
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=8)))
    closed = framing == "close"
    whole = _parse(raw, [], closed=closed)
    assert _parse(raw, cuts, closed=closed) == whole
    assert whole["status"] == status
    assert [(name, value) for name, value in whole["headers"] if name.startswith("x-")] == headers
    assert whole["body"] == body
    assert whole["complete"]
    # Only an answer whose end is marked leaves the connection fit for the next request.
    assert whole["keep_alive"] is (framing != "close")


@given(answers(), st.data())
def test_an_answer_cut_short_is_never_taken_for_a_whole_one(
    answer: tuple[bytes, int, list[tuple[str, bytes]], bytes, str], data: st.DataObject
) -> None:
    raw, _, _, _, framing = answer
    length = data.draw(st.integers(0, len(raw) - 1))
    parser = AnswerParser()
    if length:
        parser.feed(raw[:length])
    if framing == "close" and parser.status is not None:
        parser.end()  # no length, no chunks: whatever came before the close is the body
        assert parser.complete and not parser.keep_alive
        return
    assert not parser.complete
    with pytest.raises(BrokenAnswer, match="closed before the answer was complete"):
        parser.end()


def test_a_head_that_never_ends_is_refused_past_the_cap() -> None:
    parser = AnswerParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(BrokenAnswer, match="head is over"):
        for _ in range(MAX_HEAD_BYTES // 1000 + 2):
            parser.feed(b"x-filler: " + b"a" * 988 + b"\r\n")


def _head_of(total: int, status_line: bytes, last: bytes) -> bytes:
    """A head of exactly ``total`` bytes: the status line, one filler field, ``last``."""
    room = total - len(status_line) - len(b"x-filler: \r\n") - len(last)
    return status_line + b"x-filler: " + b"a" * room + b"\r\n" + last


@given(st.integers(0, 1), st.integers(0, 3), st.lists(st.integers(1, 70_000), max_size=6))
def test_the_head_cap_is_exact_whatever_the_pieces(
    extra: int, informational: int, sizes: list[int]
) -> None:
    """The heads of the informational answers and of the real one count together."""
    final = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    share = (MAX_HEAD_BYTES - len(final)) // (informational + 1)
    heads = [_head_of(share, b"HTTP/1.1 103 Early Hints\r\n", b"\r\n")
             for _ in range(informational)]
    heads.append(_head_of(MAX_HEAD_BYTES + extra - sum(map(len, heads)),
                          b"HTTP/1.1 200 OK\r\n", b"content-length: 2\r\n\r\n"))
    raw = b"".join(heads) + b"ok"
    assert len(raw) == MAX_HEAD_BYTES + extra + 2
    parser = AnswerParser()
    position = 0
    try:
        for size in [*sizes, len(raw)]:
            parser.feed(raw[position:position + size])
            position += size
    except BrokenAnswer as exc:
        assert extra and "head is over" in str(exc)
    else:
        assert not extra and parser.complete and parser.status == 200
        assert b"".join(parser.take_body()) == b"ok"


def test_trailer_fields_are_dropped_not_taken_for_headers() -> None:
    """RFC 9110 §6.5.1: a trailer field is not merged into the head's fields."""
    parser = AnswerParser()
    parser.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n0\r\ncontent-encoding: gzip\r\nx-t: 1\r\n\r\n")
    assert parser.complete and parser.headers == [("transfer-encoding", b"chunked")]


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok", [("content-length", b"2")]),
        (b"HTTP/1.1 200 OK\r\nx-a: 1\ncontent-length: 2\n\r\nok",
         [("x-a", b"1"), ("content-length", b"2")]),
    ],
)
def test_a_bare_lf_ends_a_head_line(raw: bytes, headers: list[tuple[str, bytes]]) -> None:
    """RFC 9112 §2.2: a recipient may take a bare LF for a line's end (as h11 does)."""
    parser = AnswerParser()
    parser.feed(raw)
    assert parser.complete and parser.headers == headers
    assert b"".join(parser.take_body()) == b"ok"


@pytest.mark.parametrize("raw", [b"\r\nHTTP/1.1 200 OK\r\n\r\n", b"http/1.1 200 OK\r\n\r\n",
                                 b"HTTP/1.1 100 Continue\r\n\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"])
def test_an_answer_begins_with_http_slash(raw: bytes) -> None:
    """No empty line before a status line: RFC 9112 §2.2 lets only a server skip one."""
    with pytest.raises(BrokenAnswer, match="does not begin with HTTP/"):
        AnswerParser().feed(raw)


@pytest.mark.parametrize("informational", [b"HTTP/1.0 100 Continue\r\n\r\n",
                                           b"HTTP/1.1 103 Early\r\nconnection: close\r\n\r\n"])
def test_an_informational_answer_does_not_close_what_follows(informational: bytes) -> None:
    """RFC 9110 §15.2: the final answer follows a 1xx, whatever the 1xx says of the connection."""
    parser = AnswerParser()
    parser.feed(informational + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert parser.complete and parser.status == 200 and b"".join(parser.take_body()) == b"ok"


def test_what_follows_a_complete_answer_spoils_the_connection_not_the_answer() -> None:
    parser = AnswerParser()
    parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    assert parser.complete and b"".join(parser.take_body()) == b"ok"
    assert not parser.keep_alive


# -- requests ------------------------------------------------------------------------------------


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


@given(
    st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH"]),
    st.lists(st.tuples(tokens, values), max_size=6),
    st.binary(max_size=200),
)
def test_a_request_goes_out_as_asked(
    method: str, extra: list[tuple[str, str]], content: bytes
) -> None:
    headers = [(b"host", b"example.com"),
               *((name.encode(), value.encode()) for name, value in extra)]
    if content:
        headers.append((b"content-length", str(len(content)).encode()))
    data = encode_request(method, b"/p/a%20th?q=1", headers, content)
    request = _Request()
    parser = httptools.HttpRequestParser(request)
    parser.feed_data(data)
    assert request.complete
    assert parser.get_method() == method.encode()
    assert request.url == b"/p/a%20th?q=1"
    assert request.headers == headers
    assert request.body == content


@given(
    tokens,
    st.text(max_size=10),
    st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x01", "\x1f", "\x7f"]),
    st.text(max_size=10),
)
def test_a_header_value_with_a_line_break_or_control_is_refused_by_name(
    name: str, before: str, control: str, after: str
) -> None:
    value = (before + control + after).encode("utf-8", "surrogatepass")
    with pytest.raises(UnsendableRequest, match=re.escape(f"the value of {name!r}")):
        encode_request("GET", b"/", [(b"host", b"h"), (name.encode(), value)], None)


@given(st.text(min_size=1, max_size=12).filter(
    lambda name: any(ch not in _TOKEN_CHARS for ch in name)
))
def test_a_header_name_that_is_not_a_token_is_refused(name: str) -> None:
    raw = name.encode("utf-8", "surrogatepass")
    with pytest.raises(UnsendableRequest, match="is not a header name"):
        encode_request("GET", b"/", [(raw, b"x")], None)


@pytest.mark.parametrize(
    ("method", "target", "says"),
    [("GE T", b"/", "is not a method"), ("", b"/", "is not a method"),
     ("GET", b"/a b", "is not a request target"), ("GET", b"/a\r\nX: y", "is not a request target"),
     ("GET", b"", "is not a request target")],
)
def test_a_request_line_that_would_break_is_refused(method: str, target: bytes, says: str) -> None:
    with pytest.raises(UnsendableRequest, match=says):
        encode_request(method, target, [(b"host", b"h")], None)
