"""A real HTTP server on 127.0.0.1 that plays the core's ``/continue`` endpoint.

It runs in threads (the standard library's ``ThreadingHTTPServer``), so the
same server serves tests under asyncio and trio. Each request is recorded, and
answered by the next scripted behaviour: an HTTP status, or ``HANG`` (accept the
request and never answer).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import attrs

#: Accept the request and never answer it.
HANG = "hang"

Behaviour = int | str


@attrs.frozen
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ContinueServer:
    """Answers POSTs with the scripted behaviours in order, then with ``default``."""

    def __init__(self, script: Iterable[Behaviour] = (), *, default: Behaviour = 200) -> None:
        self._script = list(script)
        self._default = default
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                behaviour = server._record(
                    RecordedRequest(
                        method="POST",
                        path=self.path,
                        headers={name.lower(): value for name, value in self.headers.items()},
                        body=body,
                    )
                )
                if behaviour == HANG:
                    server._release.wait(timeout=60)
                    return
                answer = b'{"ok": true}'
                self.send_response(int(behaviour))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _record(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self._requests.append(request)
            return self._script.pop(0) if self._script else self._default

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def __enter__(self) -> ContinueServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
