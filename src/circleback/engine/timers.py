"""Sleeping until claimed items fall due, and waking up for news.

A claim may reach ahead: the items it leased early wait here, by due time,
until the dispatcher hands them to a worker. Waking the process costs more
than the quick checks a wake-up starts, so the dispatcher may sleep a little
past an item's moment (the timer slack) to start the items falling due just
after it on the same wake-up. In a dense stream — ``DENSE_COMPANY`` items
falling due within the dense slack, and the stream goes on (``DENSE_STREAM``
within ``DENSE_SPAN`` times that) — it waits for that many to fall due and
starts them together. A lone item, or a short bunch in a sparse stream, keeps
the short slack. Items never start before they are due.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

import anyio

from ..core.clock import Clock, SystemClock

__all__ = ["DENSE_COMPANY", "DENSE_SPAN", "DENSE_STREAM", "DueTimers", "wait_for"]

ItemT = TypeVar("ItemT")

#: How many items falling due within the dense slack start together in a dense stream.
DENSE_COMPANY = 16
#: A stream is dense when this many items fall due within ``DENSE_SPAN`` dense slacks:
#: a lasting rate, not a bunch of items added at one moment.
DENSE_STREAM = 64
DENSE_SPAN = 4


class DueTimers(Generic[ItemT]):
    """Claimed items not due yet, by due time, and the dispatcher's nap until the next."""

    def __init__(self, clock: Clock, *, slack_seconds: float, dense_slack_seconds: float) -> None:
        self._clock = clock
        # Slack saves real wake-ups; a clock moved by hand wakes sleepers only when moved,
        # and whoever moves it to an item's due moment expects the item to start.
        by_hand = not isinstance(clock, SystemClock)
        self._slack = timedelta(seconds=0.0 if by_hand else slack_seconds)
        self._dense_slack = timedelta(seconds=0.0 if by_hand else dense_slack_seconds)
        #: The waiting items by due time (serials break ties; items never compare).
        self._waiting: list[tuple[datetime, int, ItemT]] = []
        #: Where the dispatcher sleeps while nothing is queued.
        self._nap: anyio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def first(self) -> datetime | None:
        """When the first waiting item falls due (None: none waits)."""
        return self._waiting[0][0] if self._waiting else None

    def push(self, due: datetime, serial: int, item: ItemT) -> None:
        heapq.heappush(self._waiting, (due, serial, item))

    def move_due(self, queue: deque[tuple[int, ItemT]]) -> None:
        """Move the waiting items that have fallen due to the workers' ``queue``."""
        waiting = self._waiting
        if not waiting:
            return
        now = self._clock.now()
        while waiting and waiting[0][0] <= now:
            _, serial, item = heapq.heappop(waiting)
            queue.append((serial, item))

    def discard(self, drop: Callable[[ItemT], bool]) -> list[int]:
        """Forget the waiting items for which ``drop`` is true; returns their serials."""
        kept = [entry for entry in self._waiting if not drop(entry[2])]
        if len(kept) == len(self._waiting):
            return []
        dropped = [serial for _, serial, item in self._waiting if drop(item)]
        heapq.heapify(kept)
        self._waiting = kept
        return dropped

    def clear(self) -> None:
        self._waiting.clear()

    def wake_at(self) -> datetime | None:
        """When the dispatcher should next look at the waiting items (None: nothing waits).

        When the next item is due and the one after it is due within the
        timer slack, the wake-up waits out the slack and starts both (and any
        in between) at once; a lone item is woken for on time. In a dense
        stream (see the module docstring) the wake-up waits for the
        ``DENSE_COMPANY``-th item to fall due.
        """
        waiting = self._waiting
        if not waiting:
            return None
        head = waiting[0][0]
        if len(waiting) < 2:
            return head
        gap = min(entry[0] for entry in waiting[1:3]) - head
        wake = head + self._slack if self._slack and gap <= self._slack else head
        # A cheap look first: in a dense stream the next item is seldom more than
        # twice the stream's mean gap away.
        if (
            self._dense_slack
            and len(waiting) >= DENSE_STREAM
            and gap * DENSE_COMPANY <= 2 * self._dense_slack
        ):
            ahead = self._first_due(DENSE_STREAM, head + DENSE_SPAN * self._dense_slack)
            if len(ahead) == DENSE_STREAM:
                company = ahead[DENSE_COMPANY - 1]
                if company - head <= self._dense_slack and company > wake:
                    wake = company
        return wake

    def _first_due(self, count: int, limit: datetime) -> list[datetime]:
        """When the first ``count`` waiting items fall due, in order, as far as ``limit``.

        Walks the heap from its root in order of due time, only as far as
        needed: a few dozen steps, not a sort of every waiting item.
        """
        waiting = self._waiting
        size = len(waiting)
        frontier = [(waiting[0][0], 0)]
        found: list[datetime] = []
        while frontier and len(found) < count:
            due, index = heapq.heappop(frontier)
            found.append(due)
            for child in (2 * index + 1, 2 * index + 2):
                if child < size and (after := waiting[child][0]) <= limit:
                    heapq.heappush(frontier, (after, child))
        return found

    async def nap(self, until: datetime | None) -> None:
        """Sleep until ``until`` (None: indefinitely) or until :meth:`interrupt`.

        A plain sleep, cut short only when items arrive that are due now or
        before the first waiting one: the usual end, the next item falling
        due, costs no cancellation (a timed-out wait costs one).
        """
        nap = self._nap = anyio.CancelScope()
        try:
            with nap:
                if until is None:
                    await anyio.sleep_forever()
                else:
                    await self._clock.sleep_until(until)
        finally:
            self._nap = None

    @property
    def napping(self) -> bool:
        return self._nap is not None

    def interrupt(self) -> None:
        """End the dispatcher's nap, if it naps."""
        if self._nap is not None:
            self._nap.cancel()


async def wait_for(
    event: anyio.Event, clock: Clock, *, until: datetime | None, seconds: float = math.inf
) -> None:
    """Wait for ``event``, at most ``seconds`` of real time and until ``until`` on ``clock``."""
    with anyio.move_on_after(seconds):
        if until is None:
            await event.wait()
            return
        async with anyio.create_task_group() as group:

            async def on_wake() -> None:
                await event.wait()
                group.cancel_scope.cancel()

            async def on_time(deadline: datetime) -> None:
                await clock.sleep_until(deadline)
                group.cancel_scope.cancel()

            group.start_soon(on_wake)
            group.start_soon(on_time, until)
