"""HTTP/1.1 on the wire for :mod:`~circleback.net.guarded_client`: requests out, answers in.

Sans-I/O: :func:`encode_request` turns a request into the bytes to send,
refusing any part that would change the request's shape (a line break in a
header, a space in the target); :class:`AnswerParser` is fed the bytes that
arrive and says when the answer's head and body are complete, what they
hold, and whether the connection may carry another request. Answers are
parsed by httptools (Node.js's llhttp, in C), strict as it comes: a poll
costs one parse per request, and llhttp's costs a tenth of a pure-Python
parser's. The parser gathers each head itself before llhttp reads it, so the
head's cap is exact and the head can be mended first where RFC 9112 tells a
user agent to (folded lines unfolded, a bare LF read as CRLF).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import httptools

from ..core.errors import BrokenAnswer, UnsendableRequest

__all__ = ["MAX_HEAD_BYTES", "AnswerParser", "BrokenAnswer", "UnsendableRequest", "encode_request"]

#: The most bytes an answer's head (status line and headers) may take, counting the heads
#: of every informational (``1xx``) answer before it.
MAX_HEAD_BYTES: Final = 65_536

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(rb"[^\x00-\x20\x7f]+")
#: Visible characters, spaces and tabs: no line breaks, no other control characters.
_FIELD_VALUE: Final = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_OUTER_SPACE: Final = b" \t"
#: Where a head ends: a line break, then an empty line (a bare LF may stand for CRLF).
_HEAD_END: Final = re.compile(rb"\n\r?\n")
#: What is mended in a head's field lines: an obs-fold (with the spaces around it), a bare LF.
_FOLD: Final = re.compile(rb"\n[ \t]")
_FOLD_OR_BARE_LF: Final = re.compile(rb"[ \t]*\r?\n[ \t]+|(?<!\r)\n")


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
    an HTTP/1.x answer, for a head over :data:`MAX_HEAD_BYTES`, and for
    framing that is not read the same way everywhere: a status under 100,
    a Transfer-Encoding other than ``chunked`` alone (as h11 does; RFC 9112
    §6.3 would read such a body to the close, still coded). Trailer fields
    are read and dropped: they are not the head's (RFC 9110 §6.5.1).
    """

    def __init__(self, *, bodiless: bool = False) -> None:
        self._parser = self._llhttp()
        self._bodiless = bodiless
        #: Bytes of a head that has not ended yet, and where the search for its end resumes.
        self._head = bytearray()
        self._searched = 0
        #: Bytes of the heads that ended, the informational ones included.
        self._head_bytes = 0
        self._head_read = False
        self.received_any = False
        #: The status code, once the (final) answer's head is complete.
        self.status: int | None = None
        #: The answer's headers: lower-case names, values as sent (folded lines unfolded).
        self.headers: list[tuple[str, bytes]] = []
        #: The head's Transfer-Encoding values.
        self._codings: list[bytes] = []
        self._body: list[bytes] = []
        self.complete = False
        #: Whether the connection may carry the next request (once :attr:`complete`).
        self.keep_alive = False

    # -- what the client calls -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse bytes that arrived; what follows a complete answer is not parsed."""
        if not data:
            return
        if self.complete:
            self.keep_alive = False  # bytes after the answer: the connection is not clean
            return
        self.received_any = True
        if self.status is not None:
            self._parse(data)
            return
        pending: bytes | bytearray = data
        if self._head:
            self._head += data
            pending = self._head
        used = self._read_heads(pending)
        if self.status is None:  # a head that has not ended yet: kept for the next bytes
            if pending is self._head:
                del self._head[:used]
            else:
                self._head = bytearray(pending[used:])
            if self._head_bytes + len(self._head) > MAX_HEAD_BYTES:
                raise BrokenAnswer(f"its head is over {MAX_HEAD_BYTES} bytes")
            self._searched = max(0, len(self._head) - 2)
        elif pending is self._head:
            self._head = bytearray()

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
        self._codings = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete or self.status is not None:
            return  # a trailer field: dropped
        key = name.decode("latin-1").lower()
        value = value.strip(_OUTER_SPACE)
        self.headers.append((key, value))
        if key == "transfer-encoding":
            self._codings.append(value)

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        self._head_read = True
        status = self._parser.get_status_code()
        if status < 100:
            raise BrokenAnswer(f"its status {status} is not one (a status is 100 to 999)")
        codings = self._codings
        if codings and (len(codings) > 1 or codings[0].lower() != b"chunked"):
            shown = b", ".join(codings).decode("latin-1")
            raise BrokenAnswer(f"its Transfer-Encoding is {shown!r}: only chunked alone is read")
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
        if self.status is not None and not self.complete:
            self._finish()

    # -- helpers -------------------------------------------------------------------------------

    def _read_heads(self, pending: bytes | bytearray) -> int:
        """Parse the heads that ended in ``pending``; return the bytes the 1xx ones took.

        Once the real answer's head is there, it is parsed with all that follows.
        """
        used = 0
        while True:
            if not pending.startswith(b"HTTP/", used) and not b"HTTP/".startswith(
                pending[used : used + 5]
            ):
                raise BrokenAnswer("it does not begin with HTTP/")
            found = _HEAD_END.search(pending, max(used, self._searched))
            if found is None:
                return used
            end = found.end()
            self._head_bytes += end - used
            if self._head_bytes > MAX_HEAD_BYTES:
                raise BrokenAnswer(f"its head is over {MAX_HEAD_BYTES} bytes")
            if pending[used + 5 : used + 7] != b"1.":
                shown = bytes(pending[used : used + 8]).decode("latin-1")
                raise BrokenAnswer(f"its version is {shown!r}, not HTTP/1.x")
            self._searched = 0
            self._head_read = False
            # llhttp takes only "HTTP/d.d ddd": the status's first digit is byte 9.
            final = pending[used + 9 : used + 10] != b"1"
            if _needs_mending(pending, used, end):
                head = _mend(bytes(pending[used:end]))
                self._parse(head + bytes(pending[end:]) if final else head)
            else:
                self._parse(bytes(pending[used:] if final else pending[used:end]))
            if not self._head_read:
                raise BrokenAnswer("its head does not end at its first empty line")
            if final:
                return len(pending)
            used = end
            # A 1xx may say HTTP/1.0 or "connection: close"; llhttp would then take the real
            # answer for bytes after the close. It is not (RFC 9110 §15.2).
            self._parser = self._llhttp()

    def _llhttp(self) -> httptools.HttpResponseParser:
        parser = httptools.HttpResponseParser(self)
        # llhttp knows 0.9, 1.0, 1.1 and 2.0; the version is checked before it (any 1.x).
        parser.set_dangerous_leniencies(lenient_version=True)
        return parser

    def _parse(self, data: bytes) -> None:
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

    def _finish(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        if self._codings and self._parser.get_http_version() == "1.0":
            self.keep_alive = False  # RFC 9112 §6.1: faulty framing; close after the answer

    def _framed(self) -> bool:
        """Whether the body's end is marked (a length, or chunks), not the connection's end."""
        return any(name in ("content-length", "transfer-encoding") for name, _ in self.headers)


def _needs_mending(data: bytes | bytearray, start: int, end: int) -> bool:
    """Whether the head in ``data[start:end]`` has an obs-fold or a bare LF."""
    return (data.count(b"\n", start, end) != data.count(b"\r\n", start, end)
            or _FOLD.search(data, start, end) is not None)


def _mend(head: bytes) -> bytes:
    """``head`` with each obs-fold replaced by one space and each bare LF by CRLF.

    RFC 9112 §5.2: a user agent unfolds; §2.2: a recipient may take a bare LF
    for a line's end. A fold right after the status line is left for llhttp to
    refuse (§2.2).
    """
    first = head.index(b"\n")
    fields = _FOLD_OR_BARE_LF.sub(
        lambda found: b"\r\n" if found[0] == b"\n" else b" ", head[first + 1 :]
    )
    return head[:first].removesuffix(b"\r") + b"\r\n" + fields
