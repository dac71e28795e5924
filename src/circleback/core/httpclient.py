"""The HTTP client of the checkers: pooled, bounded in time and size, and guarded.

:func:`make_http_client` builds the one httpx client an engine's checker uses.
With a :class:`~circleback.core.netguard.NetworkPolicy` every connection goes
through :class:`GuardedBackend`, an httpcore network backend that resolves the
host once, checks every address it resolved to, and dials only those: so the
address that was checked is the address that is reached, on every redirect hop
too. :func:`read_capped` reads a body up to a size cap and stops there, so an
endless or huge (or decompressing) body costs no more memory than the cap.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Final

import anyio
import httpcore
import httpx

from .errors import ConfigurationError
from .netguard import AddressRefused, NetworkPolicy
from .settings import HttpTuning

__all__ = ["GuardedBackend", "GuardedTransport", "make_http_client", "read_capped"]

_USER_AGENT = "circleback"
_KEEPALIVE_SECONDS = 5.0
#: Bound on reads after closing a cut body (each returns data already buffered, or fails).
_MAX_DRAIN_STEPS = 10_000


# -- the guarded connection ------------------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host once, checks every address, and dials only checked addresses."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy
        self._dialer = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._policy.resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._dialer.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} resolved to no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("Unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


_EXCEPTIONS: Final[tuple[tuple[type[Exception], type[httpx.HTTPError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as the matching httpx errors; anything else passes unchanged."""
    try:
        yield
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport on a connection pool whose every connection is guarded."""

    def __init__(self, policy: NetworkPolicy, tuning: HttpTuning) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(tuning),
            max_connections=tuning.max_connections,
            max_keepalive_connections=tuning.max_keepalive_connections,
            keepalive_expiry=_KEEPALIVE_SECONDS,
            network_backend=GuardedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _ssl_context(tuning: HttpTuning) -> ssl.SSLContext:
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


def make_http_client(
    tuning: HttpTuning, *, policy: NetworkPolicy | None = None
) -> httpx.AsyncClient:
    """An httpx client for checks: timeouts, a pool, no redirects, no cookies, no proxies.

    With ``policy`` every connection goes through the address checks of
    :mod:`~circleback.core.netguard`; without, it reaches any address (for
    destinations the operator configured, such as module URLs). Cookies are
    never kept, so nothing one job's server sets reaches another job's request.
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
    transport: httpx.AsyncBaseTransport = (
        GuardedTransport(policy, tuning)
        if policy is not None
        else httpx.AsyncHTTPTransport(verify=_ssl_context(tuning), limits=limits, trust_env=False)
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


def _decoder(encoding: str) -> Callable[[bytes, int], bytes] | None:
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
    decode = _decoder(encoding) or (lambda data, most: data[:most])
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
