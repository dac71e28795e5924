"""circleback's answer parser (llhttp, mended) read against h11, byte stream for byte stream.

Hypothesis builds answers as a server may send them, valid and broken: a
Content-Length (right, repeated, conflicting, negative, huge, cut short),
chunks (sizes, extensions, trailers, broken framing), a body to the close,
``1xx`` answers before the real one, heads a few bytes either side of
:data:`~circleback.net.http1.MAX_HEAD_BYTES`, odd status lines and versions,
folded lines, bare LFs, spaces before a colon, control characters. The same
bytes, cut at the same random points, go to :class:`AnswerParser` and to an
h11 client connection that sent a GET; the two must agree on the status, the
headers (lower-case names), the body (before content coding) and whether the
answer was refused. Every way they may differ is in :data:`DISAGREEMENTS`
with the rule that decides it and the side that is right; a stream carries
at most one such quirk, so a difference is blamed on exactly one entry.

Each CI run tries 3000 generated streams (``max_examples``), in about 12 s.
"""

from __future__ import annotations

import attrs
import h11
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from circleback.net.http1 import MAX_HEAD_BYTES, AnswerParser, BrokenAnswer


@attrs.frozen
class Disagreement:
    """A way the two parsers may read the same bytes differently, and who is right."""

    #: The rule that decides it.
    rule: str
    #: Which side refuses the answer ("neither": both read it, differently).
    refused_by: str
    #: Which side is right, and why.
    verdict: str


DISAGREEMENTS: dict[str, Disagreement] = {
    "repeated-content-length": Disagreement(
        "RFC 9110 §8.6", "circleback",
        "both: a recipient MAY refuse repeated equal Content-Length values or keep one; "
        "circleback (llhttp) refuses, h11 keeps one",
    ),
    "content-length-list": Disagreement(
        "RFC 9110 §8.6", "circleback",
        "both: as for repeated fields, for a list of equal values in one field (`2, 2`)",
    ),
    "content-length-overflow": Disagreement(
        "RFC 9110 §8.6", "circleback",
        "both: a recipient MUST guard against overflow in a large Content-Length; circleback "
        "(llhttp) refuses one past 2**64 - 1 even on a 204 or 304, which has no body; h11 "
        "takes up to 20 digits there (where a body follows, both refuse: it never ends)",
    ),
    "length-and-chunked": Disagreement(
        "RFC 9112 §6.3 (3)", "circleback",
        "both: Transfer-Encoding overrides Content-Length, and such an answer 'ought to be "
        "handled as an error'; circleback refuses it, h11 reads the chunks",
    ),
    "major-version": Disagreement(
        "RFC 9110 §2.5, RFC 9112 §2.3", "circleback",
        "circleback: the major version names the message syntax, so HTTP/2.0 or HTTP/0.9 on "
        "an HTTP/1.1 connection is not an HTTP/1.x answer; h11 takes any digit.digit",
    ),
    "control-in-value": Disagreement(
        "RFC 9110 §5.5", "circleback",
        "both: a CTL other than NUL, CR or LF is invalid in a field value, and a recipient "
        "MAY keep it 'for the sake of robustness'; circleback (llhttp) refuses, h11 keeps it",
    ),
    "fold-whitespace": Disagreement(
        "RFC 9112 §5.2", "neither",
        "circleback: obs-fold is OWS CRLF RWS and is replaced with SP; circleback replaces "
        "all of it with one SP, h11 keeps the OWS before the line break (a tab stays a tab)",
    ),
    "chunk-size-space": Disagreement(
        "RFC 9112 §7.1", "circleback",
        "circleback: chunk = chunk-size [ chunk-ext ] CRLF, with no whitespace after the "
        "size (BWS only before a ';'); h11 accepts it on purpose, for servers in the wild",
    ),
    "chunk-ext-odd": Disagreement(
        "RFC 9112 §7.1.1", "circleback",
        "circleback: a chunk-ext-val is a token or a quoted-string; h11 skips anything "
        "after the ';'",
    ),
    "trailer-fold": Disagreement(
        "RFC 9112 §5.2, §7.1.2", "circleback",
        "h11: a user agent unfolds obs-fold in trailer fields too; circleback cannot mend "
        "a trailer section before llhttp reads it (httptools' API tells no byte offset "
        "where it begins), so llhttp refuses it; trailer fields are dropped in any case",
    ),
    "trailer-bare-lf": Disagreement(
        "RFC 9112 §2.2", "circleback",
        "both: a recipient MAY take a bare LF as a line's end; circleback does in heads, "
        "not in a trailer section (which it cannot mend, as above); h11 does in both",
    ),
    "head-over-cap": Disagreement(
        "RFC 9110 §5.4", "circleback",
        "both: a recipient may limit the size of field sections; circleback refuses heads "
        "(every 1xx head counted in) over MAX_HEAD_BYTES, the h11 here runs without a limit",
    ),
}

#: An h11 receive buffer this large never refuses a head for its size: the cap is circleback's.
_NO_LIMIT = 16 * MAX_HEAD_BYTES
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


# -- what is compared ----------------------------------------------------------------------------


@attrs.frozen
class Reading:
    """What a parser made of the bytes: an answer, or a refusal (``refused`` says why)."""

    refused: str | None = None
    status: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes = b""

    def same_as(self, other: Reading) -> bool:
        if self.refused is not None or other.refused is not None:
            return (self.refused is None) == (other.refused is None)
        return (self.status, self.headers, self.body) == (other.status, other.headers, other.body)


def _fields(headers: list[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Headers as compared: h11 lower-cases a Transfer-Encoding value, so both sides do."""
    return tuple((name, value.lower() if name == "transfer-encoding" else value)
                 for name, value in headers)


def read_by_circleback(pieces: list[bytes]) -> Reading:
    parser = AnswerParser()
    body = b""
    try:
        for piece in pieces:
            parser.feed(piece)
            body += b"".join(parser.take_body())
        if not parser.complete:
            parser.end()
            body += b"".join(parser.take_body())
    except BrokenAnswer as exc:
        return Reading(refused=str(exc))
    return Reading(status=parser.status, headers=_fields(parser.headers), body=body)


def read_by_h11(pieces: list[bytes]) -> Reading:
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=_NO_LIMIT)
    connection.send(h11.Request(method="GET", target="/", headers=[("host", "example.com")]))
    connection.send(h11.EndOfMessage())
    status: int | None = None
    headers: list[tuple[str, bytes]] = []
    body = b""
    try:
        for piece in [*pieces, b""]:  # b"": the server closed the connection
            connection.receive_data(piece)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.Response):
                    status = event.status_code
                    headers = [(name.decode("latin-1"), value) for name, value in event.headers]
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return Reading(status=status, headers=_fields(headers), body=body)
                elif isinstance(event, h11.ConnectionClosed):
                    return Reading(refused="closed before the answer ended")
    except h11.RemoteProtocolError as exc:
        return Reading(refused=str(exc))
    return Reading(refused="no end")


# -- the byte streams ----------------------------------------------------------------------------


@attrs.frozen
class Stream:
    data: bytes
    #: The bytes of every head (1xx ones and the real one's), as built.
    head_bytes: int
    quirk: str | None


#: True now and then: for the rarer shapes (hypothesis would draw 0 of integers(0, n) often).
_sometimes = st.sampled_from([False] * 4 + [True])
_rarely = st.sampled_from([False] * 12 + [True])
_tokens = st.text(_TOKEN_CHARS, min_size=1, max_size=8).map(str.encode)
_eols = st.sampled_from([b"\r\n"] * 5 + [b"\n"])
_value_chars = st.sampled_from([b"a", b"Z", b"0", b"~", b'"', b"\xe9", b"\xff", b":", b";", b",",
                                b" ", b"\t"])
_values = st.lists(_value_chars, max_size=10).map(b"".join)
#: A head's line that both refuse: a space before the colon, no name, no colon, NUL, bare CR.
_broken_lines = st.sampled_from([b"x-a : b", b": b", b"x-a", b"x-a: a\x00b", b"x-a: a\rb",
                                 b"x@a: b"])


@st.composite
def _field(draw: st.DrawFn, quirk: str | None = None) -> bytes:
    """One field line (with its end), possibly folded; ``quirk`` shapes it."""
    name = b"x-" + draw(_tokens).lower()
    eol = draw(_eols)
    value = draw(_values)
    if quirk == "control-in-value":
        return name + b": a" + draw(st.sampled_from([b"\x01", b"\x1f", b"\x7f"])) + b"b" + eol
    if quirk == "fold-whitespace":
        return name + b": a" + draw(st.sampled_from([b" ", b"\t", b" \t"])) + eol + b" b" + eol
    line = name + b":" + draw(st.sampled_from([b"", b" ", b"\t", b"  "])) + value
    if draw(_sometimes):  # folded, the line before it ending without spaces
        line = line.rstrip(b" \t") + eol + draw(st.sampled_from([b" ", b"\t", b"  "]))
        line += draw(_values)
    return line + eol


@st.composite
def _fields_of(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_field(), max_size=3))
    if draw(_rarely):
        lines.insert(draw(st.integers(0, len(lines))), draw(_broken_lines) + draw(_eols))
    return b"".join(lines)


@st.composite
def _status_line(draw: st.DrawFn, quirk: str | None, informational: bool) -> bytes:
    versions = [b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/1.9"]
    if not informational and draw(_rarely):  # both refuse these
        versions = [b"http/1.1", b"HTTP/1.", b"HTTP/11", b"HTTP/1.1x", b"HTTP 1.1"]
    if quirk == "major-version" and not informational:
        versions = [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.1", b"HTTP/9.9"]
    statuses = [b"100", b"102", b"103", b"199"] if informational else (
        [b"200"] * 4 + [b"201", b"204", b"301", b"304", b"404", b"500", b"599", b"999"])
    if not informational and draw(_rarely):  # both refuse these
        statuses = [b"099", b"000", b"2OO", b"20", b"2000", b"101", b"-20"]
    reason = draw(st.sampled_from([b" OK", b" Not Found", b" ", b"", b" a\tb", b" \xe9t\xe9",
                                   b" x\x01y", b"  OK"]))
    return draw(st.sampled_from(versions)) + b" " + draw(st.sampled_from(statuses)) + reason


@st.composite
def _chunked_body(draw: st.DrawFn, quirk: str | None) -> tuple[bytes, bytes]:
    """The chunks' bytes and the body they carry."""
    pieces = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4))
    odd = draw(st.integers(0, len(pieces))) if pieces else 0  # where a quirk goes
    out = []
    for index, piece in enumerate(pieces):
        size = draw(st.sampled_from([b"%x", b"%X", b"0%x", b"000%x"])) % len(piece)
        if quirk == "chunk-size-space" and index == odd:
            size += draw(st.sampled_from([b" ", b"\t"]))
        extension = draw(st.sampled_from([b""] * 4 + [b";a", b";a=b", b';a="b c"', b";a=b;c=d"]))
        if quirk == "chunk-ext-odd" and index == odd:
            extension = draw(st.sampled_from([b";a=\x01", b";a=b c", b";\x7f"]))
        out.append(size + extension + b"\r\n" + piece + b"\r\n")
    last = b"0"
    if quirk in ("chunk-size-space", "chunk-ext-odd") and odd == len(pieces):
        last += b" " if quirk == "chunk-size-space" else b";a=\x01"
    trailers = b"".join(b"x-t" + b"%d" % i + b": v\r\n" for i in range(draw(st.integers(0, 2))))
    if quirk == "trailer-fold":
        trailers += b"x-f: a\r\n b\r\n"
    if quirk == "trailer-bare-lf":
        trailers += b"x-l: a\n"
    out.append(last + b"\r\n" + trailers + b"\r\n")
    chunks = b"".join(out)
    broken = draw(st.sampled_from(["no"] * 10 + ["cut", "size"]))
    if broken == "cut":
        chunks = chunks[: draw(st.integers(0, len(chunks) - 1))]
    elif broken == "size":  # a size that is not hex, or does not match its data
        chunks = draw(st.sampled_from([b"g\r\n", b"-1\r\n", b"\r\n", b"5\r\nab\r\n0\r\n\r\n",
                                       b"1\r\nabc\r\n0\r\n\r\n"])) + chunks
    return chunks, b"".join(pieces)


_QUIRKS = [name for name in DISAGREEMENTS if name != "head-over-cap"]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    quirk = draw(st.sampled_from([None] * 2 * len(_QUIRKS) + _QUIRKS))
    heads = []
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        heads.append(draw(_status_line(None, True)) + draw(_eols) + draw(_fields_of())
                     + draw(_eols))
    fields = [draw(_fields_of())]
    if quirk in ("control-in-value", "fold-whitespace"):
        fields.append(draw(_field(quirk)))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length"] * 3 + ["chunked"] * 3 + ["close", "broken"]))
    if quirk in ("repeated-content-length", "content-length-list", "content-length-overflow"):
        framing = "length"
    if quirk in ("length-and-chunked", "chunk-size-space", "chunk-ext-odd", "trailer-fold",
                 "trailer-bare-lf"):
        framing = "chunked"
    payload = body
    if framing == "length":
        length = len(body) + draw(st.sampled_from([0] * 6 + [1, -1]))
        shown = draw(st.sampled_from([b"%d", b"0%d", b" %d ", b"%d\t"])) % max(length, 0)
        fields.append(b"Content-Length: " + shown + b"\r\n")
        if quirk == "repeated-content-length":
            fields.append(b"content-length: %d\r\n" % max(length, 0))
        if quirk == "content-length-list":
            fields[-1] = b"Content-Length: %d, %d\r\n" % (max(length, 0), max(length, 0))
        if quirk == "content-length-overflow":
            fields[-1] = b"Content-Length: %d\r\n" % draw(st.sampled_from([2**64, 10**20 - 1]))
    elif framing == "chunked":
        coding = draw(st.sampled_from([b"chunked", b"Chunked", b"CHUNKED", b" chunked "]))
        fields.append(b"Transfer-Encoding: " + coding + b"\r\n")
        if quirk == "length-and-chunked":
            fields.append(b"content-length: %d\r\n" % len(body))
        payload, body = draw(_chunked_body(quirk))
    elif framing == "broken":  # framing both refuse
        fields.append(draw(st.sampled_from([
            b"content-length: -1\r\n", b"content-length: +2\r\n", b"content-length: 2x\r\n",
            b"content-length:\r\n", b"content-length: 1 2\r\n", b"content-length: 0x10\r\n",
            b"content-length: 2,\r\n", b"content-length: " + b"9" * 25 + b"\r\n",
            b"content-length: 1\r\ncontent-length: 2\r\n",
            b"transfer-encoding: gzip, chunked\r\n", b"transfer-encoding: chunked, gzip\r\n",
            b"transfer-encoding: gzip\r\n", b"transfer-encoding: identity\r\n",
            b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
        ])))
    draw(st.randoms()).shuffle(fields)
    final = draw(_status_line(quirk, False)) + draw(_eols)
    blank = draw(_eols)
    head_bytes = sum(map(len, heads)) + len(final) + sum(map(len, fields)) + len(blank)
    if draw(_sometimes):  # a filler field to land a few bytes from the cap
        over = draw(st.integers(-3, 0 if quirk else 3))
        room = MAX_HEAD_BYTES + over - head_bytes - len(b"x-filler: \r\n")
        if room >= 0:
            fields.insert(0, b"x-filler: " + b"f" * room + b"\r\n")
            head_bytes = MAX_HEAD_BYTES + over
    if head_bytes > MAX_HEAD_BYTES:
        quirk = "head-over-cap"
    tail = draw(st.sampled_from([b""] * 4 + [b"HTTP/1.1 200 OK\r\n", b"junk", b"\r\n"]))
    data = b"".join([*heads, final, *fields, blank, payload, tail])
    return Stream(data=data, head_bytes=head_bytes, quirk=quirk)


# -- the comparison ----------------------------------------------------------------------------


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(streams(), st.data())
def test_circleback_reads_an_answer_as_h11_does_or_as_the_table_says(
    stream: Stream, data: st.DataObject
) -> None:
    raw = stream.data
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(raw) - 1)), max_size=6)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    pieces = [piece for piece in pieces if piece]
    ours, theirs = read_by_circleback(pieces), read_by_h11(pieces)
    note(f"{raw[:300]!r}... ({len(raw)} bytes, head {stream.head_bytes}, quirk {stream.quirk})")
    note(f"circleback: {ours}")
    note(f"h11: {theirs}")
    # The cap is exact, whatever the pieces: over it is refused, at it is not refused for it.
    if stream.head_bytes > MAX_HEAD_BYTES:
        assert ours.refused is not None
    elif ours.refused is not None:
        assert "head is over" not in ours.refused
    if ours.same_as(theirs):
        return
    assert stream.quirk in DISAGREEMENTS, "a disagreement the table does not list"
    refused_by = ("circleback" if ours.refused is not None
                  else "h11" if theirs.refused is not None else "neither")
    assert refused_by == DISAGREEMENTS[stream.quirk].refused_by
