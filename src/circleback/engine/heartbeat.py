"""The worker's heartbeat: keeps its leases and its row in the workers table fresh.

It runs in a thread of its own with its own database connection, so a busy
event loop (thousands of checks, a CPU-heavy plugin) cannot starve lease
renewal. A worker that is paused or killed stops beating: its leases expire
and another worker takes its jobs over; the fencing token then refuses any
late write of the paused one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

import anyio
import anyio.to_thread
import sqlalchemy as sa

from ..core.clock import Clock
from ..store.database import create_sync_engine
from ..store.workers import record_heartbeat, renew_leases

__all__ = ["HEARTBEAT_PAGE_CACHE_KIB", "Heartbeat"]

Held = Callable[[], list[uuid.UUID]]

#: The page cache of the heartbeat's SQLite connection, in KiB. SQLite empties
#: a connection's cache when another connection wrote since its last
#: transaction, and a worker holding leases (the only time a beat reads much)
#: writes between two beats: a bigger cache would only hold what one beat read
#: (a burst's worth of leased rows, up to SQLite's default of 2,000 KiB) until
#: the next beat drops it.
HEARTBEAT_PAGE_CACHE_KIB = 64


class Heartbeat:
    """Renews this worker's leases every ``period`` seconds from a background thread."""

    def __init__(
        self,
        *,
        url: str | sa.URL,
        worker_id: str,
        clock: Clock,
        period: float,
        lease_seconds: float,
        held_jobs: Held,
        held_deliveries: Held,
        logger: logging.Logger,
    ) -> None:
        self._url = url
        self._worker_id = worker_id
        self._clock = clock
        self._period = period
        self._lease_seconds = lease_seconds
        self._held_jobs = held_jobs
        self._held_deliveries = held_deliveries
        self._log = logger
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: sa.Engine | None = None
        self._hostname = socket.gethostname()
        self._pid = os.getpid()

    async def start(self) -> None:
        """Beat once (so the worker shows up at once), then keep beating in a thread.

        The first beat is a write: a store this worker cannot write to fails the
        start here, instead of every loop failing afterwards.
        """
        self._engine = create_sync_engine(
            self._url, pool_size=1, max_overflow=0, sqlite_cache_kib=HEARTBEAT_PAGE_CACHE_KIB
        )
        try:
            await anyio.to_thread.run_sync(self.beat)
        except BaseException:
            engine, self._engine = self._engine, None
            await anyio.to_thread.run_sync(engine.dispose)
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"circleback-heartbeat-{self._worker_id}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop beating and record that the worker stopped cleanly."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join)
        if self._engine is not None:
            await anyio.to_thread.run_sync(self._beat_safely, True)
            engine, self._engine = self._engine, None
            await anyio.to_thread.run_sync(engine.dispose)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._beat_safely()

    def _beat_safely(self, stopped: bool = False) -> None:
        try:
            self.beat(stopped=stopped)
        except Exception as exc:
            self._log.warning("heartbeat of worker %s failed: %s", self._worker_id, exc)

    def beat(self, *, stopped: bool = False) -> None:
        """Renew held leases and report liveness, in one transaction (blocking)."""
        if self._engine is None:
            return
        jobs = self._held_jobs()
        deliveries = self._held_deliveries()
        now = self._clock.now()
        with self._engine.begin() as conn:
            taken = renew_leases(
                conn, self._worker_id, jobs, deliveries, now, self._lease_seconds
            )
            record_heartbeat(
                conn,
                self._worker_id,
                self._hostname,
                self._pid,
                now,
                len(jobs),
                len(deliveries),
                stopped=stopped,
            )
        if taken:
            self._log.warning(
                "worker %s stalled past its leases: %d jobs or messages were taken over by "
                "other workers; its results for them will be refused",
                self._worker_id, len(taken),
            )
