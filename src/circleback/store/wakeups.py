"""Cross-process wake-ups on PostgreSQL: LISTEN for new and cancelled jobs.

A job added or cancelled in any process sends ``NOTIFY circleback_wakeup``
when its transaction commits; every worker listening wakes and looks at the
store at once instead of at the end of its sleep. The listener holds one
connection in a thread of its own (psycopg, on both async backends) and
reconnects by itself after the database restarts; meanwhile the engine
falls back to its bounded sleep, so nothing is missed, only seen later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import sqlalchemy as sa

from .store import WAKEUP_CHANNEL

__all__ = ["PostgresWakeups"]

_POLL_SECONDS = 0.25
_MAX_RECONNECT_DELAY = 5.0


class PostgresWakeups:
    """Calls ``on_wake`` (in the event loop) whenever another process changed the jobs."""

    def __init__(
        self, url: str | sa.URL, on_wake: Callable[[], None], logger: logging.Logger
    ) -> None:
        parsed = sa.make_url(url).set(drivername="postgresql")
        self._conninfo = parsed.render_as_string(hide_password=False)
        self._on_wake = on_wake
        self._log = logger
        self._stop = threading.Event()
        #: Set while a LISTEN connection is up (tests and health checks read it).
        self.listening = threading.Event()

    async def run(self) -> None:
        """Listen until cancelled."""
        token = anyio.lowlevel.current_token()
        try:
            await anyio.to_thread.run_sync(self._listen_forever, token, abandon_on_cancel=True)
        finally:
            self._stop.set()

    def _wake(self, token: anyio.lowlevel.EventLoopToken) -> None:
        try:
            anyio.from_thread.run_sync(self._on_wake, token=token)
        except anyio.RunFinishedError:
            self._stop.set()

    def _listen_forever(self, token: anyio.lowlevel.EventLoopToken) -> None:
        import psycopg

        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {WAKEUP_CHANNEL}")
                    self.listening.set()
                    self._wake(token)  # anything may have changed while we were away
                    delay = 0.1
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=_POLL_SECONDS, stop_after=1):
                            self._wake(token)
            except psycopg.Error as exc:
                self.listening.clear()
                if self._stop.is_set():
                    return
                self._log.warning("wake-up listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, _MAX_RECONNECT_DELAY)
        self.listening.clear()
