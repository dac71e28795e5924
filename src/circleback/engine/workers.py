"""The tasks that work on claimed items: a dispatcher, workers, and one watchdog.

Queued items are drained by worker tasks, each taking items one after
another. A worker yields only while its item waits on something, so when the
dispatcher runs, every worker that has started is stuck in an item: it starts
another whenever items are queued and no worker is free. A batch of checks
that finish without waiting costs one task instead of one each (starting a
task costs more than a quick check), while slow items still each get a task
of their own. One worker stays, idle, for the next items.

Every item gets the same time limit. Each worker works inside one cancel
scope for as long as items keep coming, and a single watchdog cuts off the
one whose item overran: a cancel scope and a timer per item cost more than
the quick checks themselves.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from .timers import DueTimers

__all__ = ["Workers"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class _Slot:
    """A worker's item in progress: when its time is up, and the scope that cuts it off."""

    __slots__ = ("deadline", "scope")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.scope: anyio.CancelScope | None = None


class Workers(Generic[ItemT, ResultT]):
    """Works on queued items, at most ``capacity`` at once, each within ``timeout_seconds``.

    ``hand_over`` takes each result (or ``timed_out(item)`` for an item cut
    off); it answers False when results are no longer taken (stopping).
    """

    def __init__(
        self,
        *,
        timers: DueTimers[ItemT],
        run_one: Callable[[ItemT], Awaitable[ResultT]],
        timed_out: Callable[[ItemT], ResultT],
        hand_over: Callable[[int, ItemT, ResultT], bool],
        capacity: int,
        timeout_seconds: float,
    ) -> None:
        self._timers = timers
        self._run_one = run_one
        self._timed_out = timed_out
        self._hand_over = hand_over
        self._capacity = capacity
        self.timeout = timeout_seconds
        #: Claimed items due now that no worker has taken yet.
        self.queue: deque[tuple[int, ItemT]] = deque()
        self._starting = 0
        self._running = 0
        #: Set by the dispatcher to hand queued items to the worker waiting idle, if any.
        self._idle_worker: anyio.Event | None = None
        #: The workers' items in progress, watched by :meth:`watch_deadlines`.
        self._slots: set[_Slot] = set()
        self._stopping = False

    def stop(self) -> None:
        """Start nothing more: items not due yet stay where they are."""
        self._stopping = True

    async def dispatch(self, workers: TaskGroup) -> None:
        """Start a worker whenever items wait and no worker is free to take them.

        One worker at a time is started, and the next only once it has begun.
        When every queued item has a worker on its way (the usual case: one
        item falling due, one idle worker woken), or every worker is busy and
        the capacity reached (they take queued items as they finish), there
        is nothing to look at until more items are queued or fall due: the
        dispatcher naps instead of passing through the loop again.
        """
        self._starting = self._running = 0
        self._idle_worker = None
        while True:
            self._move_due()
            if not self.queue:
                await self._nap()
                continue
            if self._starting == 0:
                idle, self._idle_worker = self._idle_worker, None
                if idle is not None:
                    self._starting += 1
                    idle.set()
                elif self._running < self._capacity:
                    self._starting += 1
                    workers.start_soon(self._worker)
            if len(self.queue) <= self._starting or (
                self._starting == 0 and self._running >= self._capacity
            ):
                await self._nap()
            else:
                await anyio.lowlevel.checkpoint()

    def _move_due(self) -> None:
        """Queue the waiting items that have fallen due (each pass of the dispatcher)."""
        if not self._stopping:
            self._timers.move_due(self.queue)

    async def _nap(self) -> None:
        await self._timers.nap(None if self._stopping else self._timers.wake_at())

    async def _worker(self) -> None:
        """Work through queued items one by one; when none is left, end or wait for more.

        One worker stays, idle, for the next items the dispatcher queues: items
        falling due one after another then cost a wake-up each, not a new task.
        """
        self._starting -= 1
        self._running += 1
        slot = _Slot()
        self._slots.add(slot)
        try:
            while True:
                await self._work_through_queue(slot)
                if self._idle_worker is not None or self._stopping:
                    return
                idle = self._idle_worker = anyio.Event()
                try:
                    await idle.wait()
                finally:
                    if self._idle_worker is idle:
                        self._idle_worker = None
                self._starting -= 1  # the dispatcher counted this wake-up as a start
        finally:
            self._running -= 1
            self._slots.discard(slot)

    async def _work_through_queue(self, slot: _Slot) -> None:
        """Work through the queued items, each within the time limit.

        One cancel scope serves every item until one is cut off (see
        :meth:`watch_deadlines`); the next items then get a fresh scope.
        """
        timeout = self.timeout
        while self.queue:
            current: tuple[int, ItemT] | None = None
            with anyio.CancelScope() as scope:
                slot.scope = scope
                while self.queue:
                    current = serial, item = self.queue.popleft()
                    if timeout != math.inf:
                        slot.deadline = anyio.current_time() + timeout
                    result = await self._run_one(item)
                    slot.deadline = math.inf
                    current = None
                    if not self._hand_over(serial, item, result):
                        return  # the item stays in flight, and is released
                    if scope.cancel_called:
                        break  # cut off as the item ended anyway: a fresh scope for the next
            slot.scope = None
            if current is not None:
                serial, item = current
                if not self._hand_over(serial, item, self._timed_out(item)):
                    return

    async def watch_deadlines(self) -> None:
        """Cut off the items that overran the time limit, with one timer for all workers.

        Every item gets the same limit, so an item started later never ends
        its time sooner: sleeping until the earliest deadline among the items
        in progress (or a whole limit when none is) misses none.
        """
        timeout = self.timeout
        while True:
            now = anyio.current_time()
            wake = now + timeout
            for slot in self._slots:
                if slot.deadline <= now:
                    slot.deadline = math.inf
                    if slot.scope is not None:
                        slot.scope.cancel()
                elif slot.deadline < wake:
                    wake = slot.deadline
            await anyio.sleep(wake - now)
