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
from collections.abc import AsyncIterator, Callable

import httpx

from ..core.errors import ConfigurationError
from ..core.settings import HttpTuning

__all__ = ["body_decoder", "make_http_client", "read_capped", "ssl_context"]

_USER_AGENT = "circleback"
_KEEPALIVE_SECONDS = 5.0
#: Bound on reads after closing a cut body (each returns data already buffered, or fails).
_MAX_DRAIN_STEPS = 10_000


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


def body_decoder(encoding: str) -> Callable[[bytes, int], bytes] | None:
    """A bounded decoder for a Content-Encoding: ``decode(data, most)`` yields ≤ ``most`` bytes.

    Bounded so that a small compressed body cannot expand into a huge one in memory.
    None for an encoding that is not decoded.
    """
    if encoding in ("", "identity"):
        return lambda data, most: data[:most]
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, from the header

        def inflate(data: bytes, most: int) -> bytes:
            try:
                return inflater.decompress(data, most)
            except zlib.error as exc:
                raise httpx.DecodingError(f"the {encoding} body is corrupt: {exc}") from None

        return inflate
    return None


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read ``response``'s body, decoded, up to ``limit`` bytes; return it and whether it was cut.

    Reading stops as soon as the limit is passed, so an endless body costs no
    more than the limit. A body in an encoding that is not decoded is returned raw.
    """
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decode = body_decoder(encoding) or (lambda data, most: data[:most])
    body = bytearray()
    chunks = response.aiter_raw()
    async for chunk in chunks:
        body += decode(chunk, limit + 1 - len(body))
        if len(body) > limit:
            break
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
