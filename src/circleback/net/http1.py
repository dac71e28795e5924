"""HTTP/1.1 on the wire for :mod:`~circleback.net.guarded_client`: requests out, answers in.

Sans-I/O: :func:`encode_request` turns a request into the bytes to send,
refusing any part that would change the request's shape (a line break in a
header, a space in the target); :class:`AnswerParser` is fed the bytes that
arrive and says when the answer's head and body are complete, what they
hold, and whether the connection may carry another request. Answers are
parsed by httptools (Node.js's llhttp, in C), strict as it comes: a poll
costs one parse per request, and llhttp's costs a tenth of a pure-Python
parser's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import httptools

from ..core.errors import BrokenAnswer, UnsendableRequest

__all__ = ["MAX_HEAD_BYTES", "AnswerParser", "BrokenAnswer", "UnsendableRequest", "encode_request"]

#: The most bytes an answer's head (status line and headers) may take.
MAX_HEAD_BYTES: Final = 65_536

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(rb"[^\x00-\x20\x7f]+")
#: Visible characters, spaces and tabs: no line breaks, no other control characters.
_FIELD_VALUE: Final = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_OUTER_SPACE: Final = b" \t"


def encode_request(
    method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], content: bytes | None
) -> bytes:
    """The bytes of one request: its line, its headers, and ``content`` after them.

    The caller gives every header the request needs (``host``, a
    ``content-length`` for content). A value's outer spaces are not part of it
    (RFC 9110) and are dropped.
    """
    verb = method.encode("ascii", "replace")
    if not _TOKEN.fullmatch(verb):
        raise UnsendableRequest(f"{method!r} is not a method")
    if not _TARGET.fullmatch(target):
        raise UnsendableRequest(f"{target!r} is not a request target")
    lines = [verb, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise UnsendableRequest(f"{name!r} is not a header name")
        value = value.strip(_OUTER_SPACE)
        if not _FIELD_VALUE.fullmatch(value):
            raise UnsendableRequest(f"the value of {name.decode()!r} has a line break or control")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    if content:
        lines.append(content)
    return b"".join(lines)


class AnswerParser:
    """The answer to one request, as its bytes arrive; one parser per request.

    Feed it with :meth:`feed` and, when the server closes the connection,
    :meth:`end`. Informational answers (``1xx``) are passed over. For a
    ``HEAD`` request (``bodiless``) the answer ends with its head, whatever
    length it announces. Raises :class:`BrokenAnswer` for bytes that are not
    an HTTP/1.1 answer.
    """

    def __init__(self, *, bodiless: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._bodiless = bodiless
        #: Bytes of the current answer's head seen so far.
        self._head_bytes = 0
        self.received_any = False
        #: The status code, once the (final) answer's head is complete.
        self.status: int | None = None
        #: The answer's headers: lower-case names, values as sent.
        self.headers: list[tuple[str, bytes]] = []
        self._body: list[bytes] = []
        self.complete = False
        #: Whether the connection may carry the next request (once :attr:`complete`).
        self.keep_alive = False

    # -- what the client calls -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse bytes that arrived; what follows a complete answer is not parsed."""
        if not data or self.complete:
            self.keep_alive = self.keep_alive and not data
            return
        self.received_any = True
        if self.status is None:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.complete:
                self.keep_alive = False  # whatever follows the answer is not parsed
                return
            if isinstance(exc.__context__, BrokenAnswer):
                raise exc.__context__ from None
            if isinstance(exc, httptools.HttpParserUpgrade):
                raise BrokenAnswer("it switched protocols, which no request asked for") from None
            raise BrokenAnswer(str(exc) or type(exc).__name__) from None
        if self.status is None and self._head_bytes > MAX_HEAD_BYTES:
            raise BrokenAnswer(f"its head is over {MAX_HEAD_BYTES} bytes")

    def end(self) -> None:
        """The server closed the connection: the answer ends here, or is cut short."""
        if self.complete:
            return
        if self.status is not None and not self._framed():
            # No length and no chunks: the body is whatever came before the close.
            self.complete = True
            self.keep_alive = False
            return
        raise BrokenAnswer("the connection closed before the answer was complete")

    def take_body(self) -> list[bytes]:
        """The body's bytes that arrived since the last call."""
        body, self._body = self._body, []
        return body

    # -- httptools' callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.keep_alive = False  # bytes after the answer: the connection is not clean
            return
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        self.headers.append((name.decode("latin-1").lower(), value.strip(_OUTER_SPACE)))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self._parser.get_status_code()
        if status == 101:
            raise BrokenAnswer("it switched protocols, which no request asked for")
        if status < 200:
            return  # informational: the real answer follows
        self.status = status
        if self._bodiless:
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.keep_alive = False  # a body after a head that ends the answer
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.status is None:
            self._head_bytes = 0  # an informational answer ended; the real one begins
        elif not self.complete:
            self._finish()

    # -- helpers -------------------------------------------------------------------------------

    def _finish(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()

    def _framed(self) -> bool:
        """Whether the body's end is marked (a length, or chunks), not the connection's end."""
        if any(name == "content-length" for name, _ in self.headers):
            return True
        codings = [value for name, value in self.headers if name == "transfer-encoding"]
        return bool(codings) and codings[-1].rsplit(b",", 1)[-1].strip().lower() == b"chunked"
