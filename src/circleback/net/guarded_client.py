"""The HTTP/1.1 client ``poll_url`` requests through: lean, pooled, bounded and guarded.

A poll is one small request every interval, thousands of them a minute on a
busy worker, so this client does only what such a request needs: HTTP/1.1
(:mod:`~circleback.net.http1`, answers parsed by llhttp) over anyio streams,
a keep-alive pool, timeouts for connecting and for each read (the caller
bounds the whole), and a body read up to a cap.
A request through it costs a fraction of the CPU of one through httpx's
client, whose layers (auth, cookies, redirect handling, request and response
models) a poll does not use.

Every connection goes through the :class:`~circleback.net.netguard.NetworkPolicy`:
the host is resolved once, every address it resolved to is checked, and only a
checked address is dialled, so the address that was checked is the address
that is reached. TLS verifies the certificate against the URL's host name
while dialling the checked address. There are no cookies, no proxies, no
compression (``accept-encoding: identity``; a server that compresses anyway
has gzip and deflate decoded within the cap) and no automatic redirects: the
caller follows them, checking each hop (:meth:`Response.redirect_target`).

URLs are :class:`httpx.URL` values, parsed by
:func:`~circleback.net.netguard.parse_http_url`.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

import anyio
import anyio.abc
import attrs
import httpx
import sniffio
from anyio.streams.tls import TLSStream

from ..core.errors import (
    ConnectTimedOut,
    HttpFailure,
    PoolTimedOut,
    ReadTimedOut,
    TimedOut,
)
from ..core.settings import HttpTuning
from . import asyncio_stream
from .http1 import AnswerParser, BrokenAnswer, UnsendableRequest, encode_request
from .httpclient import BodyDecoder, body_decoder, ssl_context
from .netguard import NetworkPolicy

__all__ = [
    "IDEMPOTENT_METHODS",
    "ConnectTimedOut",
    "GuardedClient",
    "HttpFailure",
    "PoolTimedOut",
    "ReadTimedOut",
    "Response",
    "TimedOut",
    "redirect_request",
]

_USER_AGENT: Final = b"circleback"
#: Sent with every request unless the request gives its own.
_DEFAULT_HEADERS: Final = ((b"user-agent", _USER_AGENT), (b"accept", b"*/*"),
                           (b"accept-encoding", b"identity"))
#: Methods a client may send again when a kept-alive connection turns out closed
#: (RFC 9110 §9.2.2); a POST or PATCH is never sent twice for one request.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Seconds an idle connection is kept for reuse.
KEEPALIVE_SECONDS: Final = 5.0
_READ_SIZE: Final = 65_536
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
#: Headers that are dropped when a redirect changes the method to GET (the body goes too).
_BODY_HEADERS: Final = frozenset({"content-length", "content-type", "transfer-encoding"})


# -- failures ----------------------------------------------------------------------------------


class _Stale(Exception):
    """A kept-alive connection the server had closed before this request reached it."""


# -- connections -------------------------------------------------------------------------------

_Key = tuple[str, str, int]


@attrs.define(eq=False)
class _Connection:
    key: _Key
    stream: anyio.abc.ByteStream
    #: Whether anything arrived while the connection sat idle (the server closed it, or
    #: sent something unasked): such a connection is not reused.
    has_news: Callable[[], bool]
    #: Whether an earlier request already went over it (so the server may have dropped it).
    reused: bool = False
    #: Whether it was closed (and its slot freed): closing it again does nothing.
    discarded: bool = False
    idle_since: float = 0.0

    def still_open(self, now: float) -> bool:
        """Whether a kept-alive connection may carry another request.

        Idle for too long, or readable while idle (the server closed it, or sent
        something unasked), means it may not.
        """
        if now - self.idle_since > KEEPALIVE_SECONDS:
            return False
        return not self.has_news()


def _news_of(stream: anyio.abc.ByteStream) -> Callable[[], bool]:
    """How to tell whether anything arrived on ``stream`` while it sat idle."""
    inner = stream.transport_stream if isinstance(stream, TLSStream) else stream
    if isinstance(inner, asyncio_stream.AsyncioTCPStream):
        return inner.has_news
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    if raw is None:
        return lambda: False
    return lambda: _readable(raw)


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read (or was closed) right now."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _message(exc: BaseException) -> str:
    text = str(exc)
    return text or type(exc).__name__


# -- responses ---------------------------------------------------------------------------------


class Response:
    """The head of an answer; the body is read with :meth:`read_capped`."""

    def __init__(
        self, url: httpx.URL, method: str, answer: AnswerParser, client: GuardedClient,
        connection: _Connection,
    ) -> None:
        self.url = url
        self.method = method
        assert answer.status is not None
        self.status: int = answer.status
        self._headers = answer.headers
        self._answer = answer
        self._client = client
        self._connection = connection
        self._cut = False

    @property
    def complete(self) -> bool:
        """Whether the whole answer arrived and was not cut (so the connection may be kept)."""
        return self._answer.complete and not self._cut

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (lower case), or None; repeated headers are joined."""
        values = [value.decode("latin-1") for key, value in self._headers if key == name]
        return ", ".join(values) if values else None

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter of the Content-Type, if there is one."""
        content_type = self.header("content-type") or ""
        for parameter in content_type.split(";")[1:]:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "charset":
                return value.strip().strip("'\"") or None
        return None

    @property
    def content_encoding(self) -> str:
        return (self.header("content-encoding") or "").strip().lower()

    def redirect_target(self) -> httpx.URL | None:
        """Where a redirect points (the Location, resolved against this URL), or None.

        Raises :class:`HttpFailure` for a Location that is not a URL. The target's
        address is not judged here: the caller checks it like the first URL.
        """
        location = self.header("location")
        if self.status not in _REDIRECT_STATUSES or location is None:
            return None
        try:
            target = httpx.URL(location)
            if target.scheme and not target.host:
                target = target.copy_with(host=self.url.host)
            if target.is_relative_url:
                target = self.url.join(target)
        except httpx.InvalidURL as exc:
            raise HttpFailure(f"the redirect's Location is not a valid URL: {exc}") from None
        return target

    async def read_capped(self, limit: int) -> tuple[bytes, bool]:
        """The body, decoded, up to ``limit`` bytes, and whether it was cut there.

        Reading stops as soon as the limit is passed, so an endless or huge (or
        decompressing) body costs no more memory than the cap. Where a compressed
        stream ends, so does the body: what follows is neither decoded nor read.
        """
        answer = self._answer
        decoder = body_decoder(self.content_encoding) or BodyDecoder()
        body = bytearray()
        while True:
            for data in answer.take_body():
                try:
                    body += decoder.decode(data, limit + 1 - len(body))
                except httpx.DecodingError as exc:
                    self._cut = True
                    raise HttpFailure(str(exc)) from None
                if len(body) > limit:
                    self._cut = True
                    del body[limit:]
                    return bytes(body), True
                if decoder.finished:
                    self._cut = not answer.complete  # the rest is not read: not reused
                    return bytes(body), False
            if answer.complete:
                return bytes(body), False
            await self._client.read_more(self._connection, answer)


# -- the client --------------------------------------------------------------------------------


class GuardedClient:
    """Requests URLs for checks; every connection dials only addresses the policy allows.

    One client per engine: connections to a host are kept alive and reused
    between checks, up to ``tuning.max_connections`` open at once and
    ``tuning.max_keepalive_connections`` idle.
    """

    def __init__(self, tuning: HttpTuning, policy: NetworkPolicy) -> None:
        self._tuning = tuning
        self._policy = policy
        self._ssl = ssl_context(tuning)
        self._slots = anyio.Semaphore(tuning.max_connections)
        self._idle: dict[_Key, list[_Connection]] = {}
        self._idle_count = 0
        self._closed = False

    # -- requests --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> AsyncIterator[Response]:
        """Send one request and yield the answer's head; its body is read from the response.

        The connection goes back to the pool when the body was read to its end,
        and is closed otherwise (a cut body, an error, a cancellation).
        """
        key = _key(url)
        try:
            data = encode_request(
                method, url.raw_path, _request_headers(url, headers or {}, content), content
            )
        except UnsendableRequest as exc:
            raise HttpFailure(f"the request cannot be sent: {exc}") from None
        bodiless = method == "HEAD"
        connection = await self._connection(key, url)
        try:
            try:
                answer = await self._exchange(connection, data, bodiless)
            except _Stale:
                if method not in IDEMPOTENT_METHODS:
                    # The server may have read it and acted: sending it again could act twice.
                    raise HttpFailure(
                        "the server closed the kept-alive connection without answering; a "
                        f"{method} is not sent again by itself"
                    ) from None
                await self._discard(connection)
                connection = await self._open(key, url)
                answer = await self._exchange(connection, data, bodiless)
        except BaseException:
            await self._discard(connection)
            raise
        response = Response(url, method, answer, self, connection)
        try:
            yield response
        finally:
            if response.complete and answer.keep_alive:
                await self._keep(connection)
            else:
                await self._discard(connection)

    async def read_more(self, connection: _Connection, answer: AnswerParser) -> None:
        """Read what arrives next on ``connection`` and parse it into ``answer``."""
        try:
            deadline = anyio.current_time() + self._tuning.read_timeout_seconds
            with anyio.CancelScope(deadline=deadline) as waited:
                data = await connection.stream.receive(_READ_SIZE)
            if waited.cancelled_caught:
                raise ReadTimedOut(ReadTimedOut.what)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            data = b""
        except (OSError, ssl.SSLError) as exc:
            raise HttpFailure(f"reading the answer failed: {_message(exc)}") from None
        try:
            if data:
                answer.feed(data)
            else:
                answer.end()
        except BrokenAnswer as exc:
            if data:
                raise HttpFailure(f"the server broke HTTP/1.1: {exc}") from None
            if not answer.received_any:
                raise HttpFailure("the server closed the connection without answering") from None
            raise HttpFailure(
                "the server closed the connection before its answer was complete"
            ) from None

    async def _exchange(
        self, connection: _Connection, data: bytes, bodiless: bool
    ) -> AnswerParser:
        """Send a request's bytes; return the answer once its head is in."""
        answer = AnswerParser(bodiless=bodiless)
        try:
            # A request is small: it is buffered at once, so sending has no timeout of
            # its own (the caller's total timeout bounds a server that never reads).
            await connection.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError) as exc:
            if connection.reused:
                raise _Stale from None
            raise HttpFailure(f"sending the request failed: {_message(exc)}") from None
        while answer.status is None:
            try:
                await self.read_more(connection, answer)
            except TimedOut:
                raise
            except HttpFailure:
                # The server closed a kept-alive connection before answering: try a new one.
                if connection.reused and not answer.received_any:
                    raise _Stale from None
                raise
        return answer

    # -- the pool --------------------------------------------------------------------------

    async def _connection(self, key: _Key, url: httpx.URL) -> _Connection:
        """A kept-alive connection to ``key`` that is still good, or a new one."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.still_open(now):
                connection.reused = True
                return connection
            await self._discard(connection)
        return await self._open(key, url)

    async def _open(self, key: _Key, url: httpx.URL) -> _Connection:
        if self._closed:
            raise HttpFailure("the HTTP client is closed")
        await self._take_slot()
        try:
            stream = await self._dial(key, url)
        except BaseException:
            self._slots.release()
            raise
        return _Connection(key=key, stream=stream, has_news=_news_of(stream))

    async def _take_slot(self) -> None:
        try:
            self._slots.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        if await self._close_oldest_idle():
            self._slots.acquire_nowait()
            return
        try:
            with anyio.fail_after(self._tuning.connect_timeout_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimedOut(PoolTimedOut.what) from None

    async def _dial(self, key: _Key, url: httpx.URL) -> anyio.abc.ByteStream:
        scheme, host, port = key
        try:
            with anyio.fail_after(self._tuning.connect_timeout_seconds):
                try:
                    addresses = await self._policy.resolve(host, port)
                except OSError as exc:
                    raise HttpFailure(f"could not resolve {host}: {_message(exc)}") from None
                stream: anyio.abc.ByteStream | None = None
                failure: OSError | None = None
                connect = (
                    asyncio_stream.connect_tcp
                    if sniffio.current_async_library() == "asyncio"
                    else anyio.connect_tcp
                )
                for address in addresses:
                    try:
                        stream = await connect(str(address), port)
                        break
                    except OSError as exc:
                        failure = exc
                if stream is None:
                    reason = _message(failure) if failure else "no address to try"
                    raise HttpFailure(f"could not connect to {host}:{port}: {reason}")
                if scheme == "https":
                    try:
                        stream = await TLSStream.wrap(
                            stream, hostname=url.host, ssl_context=self._ssl,
                            standard_compatible=False,
                        )
                    except BaseException as exc:
                        await anyio.aclose_forcefully(stream)
                        if isinstance(exc, (ssl.SSLError, OSError, anyio.BrokenResourceError,
                                            anyio.EndOfStream)):
                            raise HttpFailure(
                                f"TLS with {host}:{port} failed: {_message(exc)}"
                            ) from None
                        raise
                return stream
        except TimeoutError:
            raise ConnectTimedOut(ConnectTimedOut.what) from None

    async def _keep(self, connection: _Connection) -> None:
        if self._closed or self._idle_count >= self._tuning.max_keepalive_connections:
            await self._discard(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)
        self._idle_count += 1

    async def _discard(self, connection: _Connection) -> None:
        """Free ``connection``'s slot and close it at once (no goodbye on the wire).

        Only the first call for a connection does anything, so every path that
        gives up on one may call it without counting who did already.
        """
        if connection.discarded:
            return
        connection.discarded = True
        self._slots.release()
        await anyio.aclose_forcefully(connection.stream)

    async def _close_oldest_idle(self) -> bool:
        oldest: _Connection | None = None
        for connections in self._idle.values():
            if connections and (oldest is None or connections[0].idle_since < oldest.idle_since):
                oldest = connections[0]
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        self._idle_count -= 1
        await self._discard(oldest)
        return True

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close every kept-alive connection; requests in flight close theirs when they end."""
        self._closed = True
        idle = [connection for connections in self._idle.values() for connection in connections]
        self._idle.clear()
        self._idle_count = 0
        for connection in idle:
            await self._discard(connection)


def _key(url: httpx.URL) -> _Key:
    scheme = url.scheme.lower()
    return scheme, url.host, url.port or _DEFAULT_PORTS.get(scheme, 0)


def _request_headers(
    url: httpx.URL, headers: Mapping[str, str], content: bytes | None
) -> list[tuple[bytes, bytes]]:
    given = {name.lower() for name in headers}
    head: list[tuple[bytes, bytes]] = [(b"host", url.netloc)]
    # The request's own User-Agent or Accept replaces the default (one line each).
    head += [(name, value) for name, value in _DEFAULT_HEADERS if name.decode() not in given]
    if (url.username or url.password) and "authorization" not in given:
        token = base64.b64encode(f"{url.username}:{url.password}".encode()).decode("ascii")
        head.append((b"authorization", f"Basic {token}".encode("ascii")))
    head += [(name.encode("ascii"), value.encode()) for name, value in headers.items()]
    if content:
        head.append((b"content-length", str(len(content)).encode("ascii")))
    return head


def redirect_request(
    response: Response, target: httpx.URL, headers: Mapping[str, str], content: bytes | None,
) -> tuple[str, dict[str, str], bytes | None]:
    """The method, headers and body of the request that follows ``response`` to ``target``.

    As browsers (and httpx) do: a 302 or 303 becomes GET (but for HEAD), so
    does a 301 after a POST; a GET drops the body and its headers; Authorization is dropped when
    the redirect leaves the origin.
    """
    method = response.method
    turns_to_get = (
        (response.status in (302, 303) and method != "HEAD")
        or (response.status == 301 and method == "POST")
    )
    if turns_to_get:
        method = "GET"
    kept = dict(headers)
    if method != response.method:
        kept = {name: value for name, value in kept.items() if name.lower() not in _BODY_HEADERS}
        content = None
    if _key(target) != _key(response.url):
        kept = {name: value for name, value in kept.items() if name.lower() != "authorization"}
    return method, kept, content
