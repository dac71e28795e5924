"""The httpx client for destinations the operator configured, bounded in time and size.

:func:`make_http_client` builds the client ``poll_module`` calls module tools
with; :func:`read_capped` reads a body up to a size cap and stops there, so an
endless or huge (or decompressing) body costs no more memory than the cap.
URLs written by an LLM never go through it: ``poll_url`` requests through
:mod:`circleback.net.guarded_client`, which checks every address it dials.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import ssl
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Final

import httpx

from ..core.errors import ConfigurationError
from ..core.settings import HttpTuning

__all__ = [
    "MAX_CODINGS", "BodyDecoder", "body_decoder", "decodes", "make_http_client", "read_capped",
    "ssl_context",
]

_USER_AGENT = "circleback"
_KEEPALIVE_SECONDS = 5.0
#: Bound on reads after closing a cut body (each returns data already buffered, or fails).
_MAX_DRAIN_STEPS = 10_000
#: Content codings that are undone: gzip, and deflate in its zlib wrapping (told apart by header).
_INFLATED: Final = frozenset({"gzip", "x-gzip", "deflate"})
#: The most content codings undone on one body; a body with more is returned as sent.
MAX_CODINGS: Final = 3
#: How far past the caller's bound an inner coding may expand one piece of the body.
_STAGE_SLACK: Final = 65_536


# -- the client ------------------------------------------------------------------------------


def ssl_context(tuning: HttpTuning) -> ssl.SSLContext:
    """The usual certificate authorities, plus the operator's ``ca_file`` when there is one."""
    context = httpx.create_ssl_context(trust_env=False)
    if tuning.ca_file:
        try:
            context.load_verify_locations(cafile=tuning.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"the HTTP CA file {tuning.ca_file!r} cannot be used: {exc}"
            ) from None
    return context


def make_http_client(tuning: HttpTuning) -> httpx.AsyncClient:
    """An httpx client for checks: timeouts, a pool, no redirects, no cookies, no proxies.

    It reaches any address: it is for destinations the operator configured,
    such as module URLs. Cookies are never kept, so nothing one server sets
    reaches another request.
    """
    timeout = httpx.Timeout(
        connect=tuning.connect_timeout_seconds,
        read=tuning.read_timeout_seconds,
        write=tuning.read_timeout_seconds,
        pool=tuning.connect_timeout_seconds,
    )
    limits = httpx.Limits(
        max_connections=tuning.max_connections,
        max_keepalive_connections=tuning.max_keepalive_connections,
        keepalive_expiry=_KEEPALIVE_SECONDS,
    )
    transport = httpx.AsyncHTTPTransport(
        verify=ssl_context(tuning), limits=limits, trust_env=False
    )
    no_cookies = http.cookiejar.CookieJar(
        policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        cookies=no_cookies,
        headers={"user-agent": _USER_AGENT, "accept-encoding": "identity"},
    )


# -- reading bodies ----------------------------------------------------------------------------


class BodyDecoder:
    """Undoes a body's content codings as its bytes arrive, every stage bounded.

    Stacked codings are undone last first (RFC 9110 §8.4). ``decode(data, most)``
    yields at most ``most`` bytes, so a small compressed body cannot expand into
    a huge one in memory; an inner stage yields at most 64 KiB more, and one that
    would yield more while the body stays under ``most`` is refused (a stream that
    expands without end between codings). A gzip or zlib stream ends where its
    member ends: bytes after it are ignored, neither inflated nor kept, and
    :attr:`finished` tells the reader it may stop reading. No codings: the bytes
    as they are.
    """

    def __init__(self, codings: Sequence[str] = ()) -> None:
        """``codings`` as the Content-Encoding lists them: in the order they were applied."""
        self._name = ", ".join(codings)
        #: One inflater per coding, in the order they are undone.
        self._stages = [zlib.decompressobj(zlib.MAX_WBITS | 32) for _ in codings]

    @property
    def finished(self) -> bool:
        """Whether a coded stream ended: nothing after it belongs to the body."""
        return any(stage.eof for stage in self._stages)

    def decode(self, data: bytes, most: int) -> bytes:
        """The next decoded bytes of the body, at most ``most`` of them."""
        if not self._stages:
            return data[:most]
        if most <= 0 or self.finished:
            return b""
        spilled = -1  # the last inner stage that could not take all its input
        for position, stage in enumerate(self._stages):
            last = position == len(self._stages) - 1
            data = self._inflate(position, data, most if last else most + _STAGE_SLACK)
            if stage.unconsumed_tail and not last:
                spilled = position
        if spilled >= 0 and len(data) < most and not any(
            stage.eof for stage in self._stages[spilled + 1 :]
        ):
            raise httpx.DecodingError(f"the {self._name} body expands without end between codings")
        return data

    def _inflate(self, position: int, data: bytes, most: int) -> bytes:
        stage = self._stages[position]
        if stage.eof:
            return b""  # the stream ended: what follows is not inflated
        try:
            return stage.decompress(data, most)
        except zlib.error as exc:
            raise httpx.DecodingError(f"the {self._name} body is corrupt: {exc}") from None


def body_decoder(encoding: str) -> BodyDecoder | None:
    """A :class:`BodyDecoder` for a Content-Encoding (codings as listed, comma-separated).

    None when the body is not decoded: a coding other than gzip or deflate, or
    more than :data:`MAX_CODINGS` of them. ``identity`` codings are skipped.
    """
    codings = [coding.strip().lower() for coding in encoding.split(",")]
    codings = [coding for coding in codings if coding not in ("", "identity")]
    if len(codings) > MAX_CODINGS or not _INFLATED.issuperset(codings):
        return None
    return BodyDecoder(codings)


def decodes(encoding: str) -> bool:
    """Whether a body in this Content-Encoding is decoded (else it is returned as sent)."""
    return body_decoder(encoding) is not None


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read ``response``'s body, decoded, up to ``limit`` bytes; return it and whether it was cut.

    Reading stops as soon as the limit is passed, so an endless body costs no
    more than the limit. A body in an encoding that is not decoded is returned raw;
    reading stops where a compressed stream ends (see :class:`BodyDecoder`).
    """
    decoder = body_decoder(response.headers.get("content-encoding", "")) or BodyDecoder()
    body = bytearray()
    chunks = response.aiter_raw()
    async for chunk in chunks:
        body += decoder.decode(chunk, limit + 1 - len(body))
        if len(body) > limit:
            break
        if decoder.finished:
            await _abandon(response, chunks)
            return bytes(body), False
    else:
        return bytes(body), False
    del body[limit:]
    await _abandon(response, chunks)
    return bytes(body), True


async def _abandon(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Stop reading a body midway: close the connection, then let the readers run out.

    The body is read through a chain of async generators (httpx's and
    httpcore's); closing only the outermost would leave the inner ones suspended
    until garbage collection. With the connection closed, the next read fails
    at the bottom of the chain and the failure unwinds every generator in it.
    """
    await response.aclose()
    with contextlib.suppress(Exception):
        for _ in range(_MAX_DRAIN_STEPS):
            await chunks.__anext__()
