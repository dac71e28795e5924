"""The local HTTP server W4 polls, in a process of its own.

``python -m bench.http_server PORT_FILE`` listens on 127.0.0.1 (a free port,
written to ``PORT_FILE``), answers every request with ``202 Accepted`` (so a
poll waiting for 200 is never met) over keep-alive HTTP/1.1, and notes the
arrival time of each request. ``GET /__stats`` answers those arrivals as
JSON: ``{"arrivals": [[path, epoch seconds], ...]}``. Plain asyncio streams:
a few hundred requests a second cost it little, and it never shares a
process (or its CPU accounting) with the system under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

_ANSWER = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: text/plain\r\ncontent-length: 7\r\n\r\npending"
)


class _Server:
    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                request_line, _, rest = head.partition(b"\r\n")
                parts = request_line.split(b" ")
                path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
                length = 0
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or 0)
                if length:
                    await reader.readexactly(length)
                if path == "/__stats":
                    body = json.dumps({"arrivals": self.arrivals}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                else:
                    self.arrivals.append((path, arrived))
                    writer.write(_ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def _main(port_file: Path) -> None:
    parent = os.getppid()
    server = _Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=1024)
    port = listener.sockets[0].getsockname()[1]
    port_file.write_text(str(port))  # noqa: ASYNC240 - a few bytes, once, at start
    async with listener:
        serving = asyncio.ensure_future(listener.serve_forever())
        # A run killed without cleaning up (SIGKILL, a CI timeout) leaves this process
        # to init: it ends then rather than outlive the run.
        while os.getppid() == parent and not serving.done():  # noqa: ASYNC110 - no event says so
            await asyncio.sleep(0.5)
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


if __name__ == "__main__":
    asyncio.run(_main(Path(sys.argv[1])))
