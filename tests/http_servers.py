"""Real HTTP servers on 127.0.0.1 (or ::1) for the tests, each in threads of its own.

A server answers every request through a plain function ``app(request) -> Reply``
that the test writes, so a test states how the service behaves ("503 three
times, then 200") in a few lines. The server counts TCP connections and keeps
every request, so a test can prove that nothing reached it.

The servers run on the standard library's threading HTTP server, outside the
event loop under test, so they serve asyncio and trio tests alike. Given a
server-side ``ssl.SSLContext`` they speak https.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import attrs

#: A block of bytes reused for big bodies, so serving them allocates nothing per block.
BLOCK = b"x" * 65_536


@attrs.frozen(kw_only=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.frozen(kw_only=True)
class Reply:
    """What to answer: a status, headers and a body (bytes, JSON, or a stream of blocks).

    ``stream`` with ``length`` sends that Content-Length; ``stream`` without it
    sends chunked transfer encoding. ``hang`` never answers (until the server stops).
    """

    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    json: Any = attrs.field(default=None)
    stream: Callable[[], Iterable[bytes]] | None = None
    length: int | None = None
    hang: bool = False


App = Callable[[Request], Reply]


def json_reply(data: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status=status, headers=dict(headers), json=data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urllib.parse.urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path,
            query=dict(urllib.parse.parse_qsl(split.query)),
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
        )
        owner = self.server.owner
        owner.record(request)
        reply = owner.app(request)
        if reply.hang:
            owner.stopping.wait()
            self.close_connection = True
            return
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _send(self, reply: Reply) -> None:
        owner = self.server.owner
        payload = reply.body
        headers = dict(reply.headers)
        if reply.json is not None:
            payload = json.dumps(reply.json).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(reply.status)
        for name, value in headers.items():
            self.send_header(name, value)
        if reply.stream is None:
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
                owner.count_bytes(len(payload))
            return
        chunked = reply.length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(reply.length))
        self.end_headers()
        for block in reply.stream():
            if owner.stopping.is_set():
                self.close_connection = True
                return
            if chunked:
                self.wfile.write(f"{len(block):x}\r\n".encode())
                self.wfile.write(block)
                self.wfile.write(b"\r\n")
            else:
                self.wfile.write(block)
            owner.count_bytes(len(block))
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: HttpServer, address: tuple[str, int], family: int) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner.connected(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.owner.disconnected(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early are part of the tests


class HttpServer:
    """A real HTTP server on a free port of 127.0.0.1 (or ``host``), answering through ``app``."""

    def __init__(
        self, app: App, *, host: str = "127.0.0.1", port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.tls = tls
        self._requested_port = port
        self.requests: list[Request] = []
        self.connections = 0
        self.bytes_sent = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._server: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # -- bookkeeping, called from the server's threads --------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def connected(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(sock)

    def disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._port is not None, "the server was never started"
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> HttpServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._server = _Server(self, (self.host, self._requested_port), family)
        self._port = int(self._server.server_address[1])
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"http-server-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def paths(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.requests]


def sequence(*replies: Reply) -> App:
    """An app that answers with ``replies`` in turn, then repeats the last one."""
    lock = threading.Lock()
    position = [0]

    def app(request: Request) -> Reply:
        with lock:
            index = min(position[0], len(replies) - 1)
            position[0] += 1
        return replies[index]

    return app


def blocks(total: int | None) -> Callable[[], Iterator[bytes]]:
    """A stream of :data:`BLOCK` blocks, ``total`` bytes in all (None: endless)."""

    def generate() -> Iterator[bytes]:
        sent = 0
        while total is None or sent < total:
            block = BLOCK if total is None or total - sent >= len(BLOCK) else BLOCK[: total - sent]
            sent += len(block)
            yield block

    return generate


class RawServer:
    """A TCP server on 127.0.0.1 that serves each connection in a thread of its own.

    For answers no real server would give: subclasses write the bytes themselves
    in :meth:`serve`. ``connections`` counts the connections accepted.
    """

    def __init__(self) -> None:
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.02)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Accept connections for the block; then stop and wait for every thread."""
        acceptor = threading.Thread(target=self._accept, daemon=True)
        acceptor.start()
        try:
            yield self
        finally:
            self._stopping.set()
            acceptor.join(5)
            self._listener.close()
            for thread in self._threads:
                thread.join(5)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def serve(self, connection: socket.socket) -> None:
        """Talk to one client; the connection is closed afterwards."""
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):  # the client may hang up first
            self.serve(connection)


#: What the server does with one request: the bytes it sends back (one ``sendall``
#: each, so a generator may stream them), and whether it then closes the connection.
Script = Callable[[bytes], tuple[Iterable[bytes], bool]]


def answer(*parts: bytes, close: bool = False) -> Script:
    """A script that sends ``parts`` (one ``send`` each) whatever the request."""
    return lambda request: (parts, close)


class ScriptedServer(RawServer):
    """Answers the n-th request it reads with the n-th script (the last one repeats)."""

    def __init__(self, *scripts: Script) -> None:
        super().__init__()
        self.scripts = scripts
        self.requests: list[bytes] = []
        #: Bytes handed to the kernel so far, over every connection.
        self.bytes_sent = 0

    def serve(self, connection: socket.socket) -> None:
        connection.settimeout(0.02)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = self._receive(connection)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += self._receive(connection)
            request, buffer = head + b"\r\n\r\n" + buffer[:length], buffer[length:]
            self.requests.append(request)
            script = self.scripts[min(len(self.requests), len(self.scripts)) - 1]
            parts, close = script(request)
            for part in parts:
                connection.sendall(part)
                self.bytes_sent += len(part)
            if close:
                return

    def _receive(self, connection: socket.socket) -> bytes:
        """The next bytes from the client; none once it hung up or the server stops."""
        while not self.stopping:
            try:
                return connection.recv(65_536)
            except TimeoutError:
                continue
        return b""
