"""Batching results into write transactions.

Results arrive one by one from the workers; the recorder writes them in
batches. After the first result it lingers for company, so a steady trickle
costs a few transactions a second instead of one each. Each result says how
long it may wait: one someone waits for goes out within moments, one nobody
needs soon (a poll that answered "not yet") may wait much longer, in company.
A full batch goes at once, and so does everything when nothing more can
come (:meth:`Recorder.record_now`) or when stopping.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Recorder"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

Entry = tuple[int, ItemT, ResultT]


class Recorder(Generic[ItemT, ResultT]):
    """Writes results in batches of up to ``batch_size``, each batch in one call of ``record``.

    ``record`` returns when the earliest recorded item is due again (or None);
    ``recorded`` then hears the serials of the batch and that moment.
    """

    def __init__(
        self,
        *,
        name: str,
        record: Callable[[list[tuple[ItemT, ResultT]]], Awaitable[datetime | None]],
        recorded: Callable[[list[int], datetime | None], None],
        batch_size: int,
        logger: logging.Logger,
    ) -> None:
        self._name = name
        self._record = record
        self._recorded = recorded
        self._batch_size = batch_size
        self._log = logger
        self._send: MemoryObjectSendStream[Entry[ItemT, ResultT]] | None = None
        self._receive: MemoryObjectReceiveStream[Entry[ItemT, ResultT]] | None = None
        #: Results handed over and not yet recorded.
        self.waiting = 0
        #: Set when a full batch of results waits for the recorder (or when stopping).
        self._batch_full: anyio.Event | None = None
        #: When the results waiting must be recorded (``anyio.current_time``).
        self._record_by: float | None = None
        #: The wait for more results; cancelled when ``_record_by`` moves earlier.
        self._record_wait: anyio.CancelScope | None = None
        self._stopping = False

    def add(self, serial: int, item: ItemT, result: ResultT, linger: float) -> bool:
        """Take a result that may wait ``linger`` seconds; False when not running (stopping)."""
        if self._send is None:
            return False
        try:
            self._send.send_nowait((serial, item, result))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        self.waiting += 1
        by = anyio.current_time() + linger
        if self._record_by is None or by < self._record_by:
            self._record_by = by
            if self._record_wait is not None:
                self._record_wait.cancel()
        full = self._batch_full
        if full is not None and self._send.statistics().current_buffer_used >= self._batch_size:
            full.set()
        return True

    def record_now(self) -> None:
        """End the wait for company: nothing more can come until these are recorded."""
        self._record_by = anyio.current_time()
        if self._record_wait is not None:
            self._record_wait.cancel()

    def stop(self) -> None:
        """Record what waits at once; a result arriving later is recorded at once too."""
        self._stopping = True
        if self._batch_full is not None:
            self._batch_full.set()

    def open(self) -> None:
        """Make ready to take results (before the workers start)."""
        send, receive = anyio.create_memory_object_stream[Entry[ItemT, ResultT]](math.inf)
        self._send, self._receive = send, receive
        self.waiting = 0

    def finish(self) -> None:
        """Take no more results: :meth:`run` returns once it has recorded those it holds."""
        if self._send is not None:
            self._send.close()

    def close(self) -> None:
        """Take no more results and drop those not recorded yet."""
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()

    async def run(self) -> None:
        """Record results as they come, until :meth:`finish` (after :meth:`open`)."""
        if self._receive is not None:
            await self._record_loop(self._receive)

    async def _record_loop(self, receive: MemoryObjectReceiveStream[Entry[ItemT, ResultT]]) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                await self._wait_for_company(receive)
                while len(batch) < self._batch_size:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                # Results that did not fit in this batch go in the next one at once.
                left = receive.statistics().current_buffer_used
                self._record_by = anyio.current_time() if left else None
                due: datetime | None = None
                with anyio.CancelScope(shield=True):
                    try:
                        due = await self._record([(item, result) for _, item, result in batch])
                    except Exception:
                        # The leases stay and expire; the items are taken up again then.
                        self._log.exception(
                            "%s: recording %d results failed", self._name, len(batch)
                        )
                self.waiting -= len(batch)
                self._recorded([serial for serial, _, _ in batch], due)

    async def _wait_for_company(
        self, receive: MemoryObjectReceiveStream[Entry[ItemT, ResultT]]
    ) -> None:
        """Wait for more results until one waiting must be recorded, or a batch is full."""
        full = self._batch_full = anyio.Event()
        try:
            while not full.is_set() and not self._stopping:
                if receive.statistics().current_buffer_used + 1 >= self._batch_size:
                    return
                by = self._record_by
                left = 0.0 if by is None else by - anyio.current_time()
                if left <= 0:
                    return
                with anyio.move_on_after(left) as wait:
                    self._record_wait = wait
                    await full.wait()
        finally:
            self._record_wait = None
            self._batch_full = None
