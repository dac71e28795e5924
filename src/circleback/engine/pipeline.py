"""The loop shared by job checks and message deliveries.

Claim leased items in batches, work on them concurrently (bounded by a
capacity), record the results in batches as they arrive, and sleep until the
next item is due or until woken. A slow item never holds up the others: its
result is recorded whenever it arrives, while the rest flow past it.

Claimed items wait in a queue that worker tasks drain. A worker takes items
one after another; a dispatcher starts another worker whenever items are
waiting and every worker is stuck in an item that is waiting on something
(the only place a worker yields). So a batch of checks that finish without
waiting costs one task instead of one task each — starting a task costs
more than a quick check — while slow items still each get a task of their own.

Claims may reach ahead (``lookahead_seconds``): items due within that horizon
are leased early, wait in memory, and the dispatcher hands each to a worker
at the moment it falls due. One claim then serves every item falling due over
the next stretch of time, instead of one claim per item, and an item starts
on time rather than after a claim's round trip. Results are recorded in
batches: the recorder lingers after the first result for more to arrive, so
a steady trickle of results costs a few transactions a second rather than one
each. Each result says how long it may wait (``linger_for``; by default
``record_linger_seconds``): one that someone is waiting for goes out within
moments, one that nobody needs soon — a poll that answered "not yet" and is
not due again for a while — may wait much longer, in company. No result
waits for company that cannot come: when every item in flight is done and
the claim loop waits for the room that recording them frees, they are
recorded at once (a backlog larger than the capacity would otherwise idle
through a linger per batch). Likewise the
dispatcher, woken for the next item falling due, may sleep a little longer
(``timer_slack_seconds``) so that items falling due close together start on
one wake-up. In a dense stream (``DENSE_COMPANY`` items falling due within
``dense_slack_seconds``, and the stream goes on: ``DENSE_STREAM`` within
``DENSE_SPAN`` times that) it waits for that many to fall due and starts them
together: a wake-up of the process costs more than the quick checks it
starts. A sparse stream, or a short bunch of items in one, keeps its short
slack.

An item's work may be given a time limit (``timeout_seconds``). Each worker
works inside one cancel scope for as long as items keep coming, and a single
watchdog task cuts off the one whose item overran: a cancel scope and a
timer per item cost more than the quick checks themselves.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel
import sniffio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.clock import Clock, SystemClock

__all__ = ["WorkPipeline"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

#: How long to wait before trying again after the store raised.
_ERROR_PAUSE_SECONDS = 0.5

#: How many items falling due within the dense slack start together in a dense stream.
DENSE_COMPANY = 16
#: A stream is dense when this many items fall due within ``DENSE_SPAN`` dense slacks:
#: a lasting rate, not a bunch of items added at one moment.
DENSE_STREAM = 64
DENSE_SPAN = 4


def _loop_time() -> Callable[[], float]:
    """The running event loop's clock: :func:`anyio.current_time` without its backend lookup.

    The pipeline reads the time several times per item, and finding the
    backend anew each time cost more than reading the clock.
    """
    if sniffio.current_async_library() == "asyncio":
        return asyncio.get_running_loop().time
    return anyio.current_time


class _Slot:
    """A worker's item in progress: when its time is up, and the scope that cuts it off."""

    __slots__ = ("deadline", "scope")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.scope: anyio.CancelScope | None = None


class WorkPipeline(Generic[ItemT, ResultT]):
    """Claim → work → record, concurrently, with wake-ups (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        claim: Callable[[int, float], Awaitable[Sequence[ItemT]]],
        work: Callable[[ItemT], Awaitable[ResultT]],
        record: Callable[[list[tuple[ItemT, ResultT]]], Awaitable[datetime | None]],
        release: Callable[[list[ItemT]], Awaitable[None]],
        next_due: Callable[[], Awaitable[datetime | None]],
        clock: Clock,
        capacity: int,
        batch_size: int,
        max_sleep_seconds: float,
        logger: logging.Logger,
        due_at: Callable[[ItemT], datetime] | None = None,
        lookahead_seconds: float = 0.0,
        record_linger_seconds: float = 0.0,
        linger_for: Callable[[ItemT, ResultT], float] | None = None,
        timer_slack_seconds: float = 0.0,
        dense_slack_seconds: float = 0.0,
        timeout_seconds: float = math.inf,
        timed_out: Callable[[ItemT], ResultT] | None = None,
    ) -> None:
        self._name = name
        self._claim = claim
        self._work = work
        self._record = record
        self._release = release
        self._next_due = next_due
        self._clock = clock
        self._capacity = capacity
        self._batch_size = batch_size
        self._max_sleep = max_sleep_seconds
        self._log = logger
        self._due_at = due_at
        self._lookahead = lookahead_seconds if due_at is not None else 0.0
        self._linger = record_linger_seconds
        self._linger_for = linger_for
        if timed_out is None and timeout_seconds != math.inf:
            raise ValueError("a time limit needs timed_out, the result of an item cut off")
        self._timeout = timeout_seconds
        self._timed_out = timed_out
        #: The workers' items in progress, watched by :meth:`_watch_deadlines`.
        self._slots: set[_Slot] = set()
        self._now: Callable[[], float] = anyio.current_time
        # Slack saves real wake-ups; a clock moved by hand wakes sleepers only when moved,
        # and whoever moves it to an item's due moment expects the item to start.
        by_hand = not isinstance(clock, SystemClock)
        self._slack = timedelta(seconds=0.0 if by_hand else timer_slack_seconds)
        self._dense_slack = timedelta(seconds=0.0 if by_hand else dense_slack_seconds)
        #: A claim waits for room for this many items (unless none is in flight): when
        #: the capacity is what limits, items trickling out would each cost a claim.
        self._least_claim = max(1, min(batch_size, capacity) // 2)
        self._in_flight: dict[int, ItemT] = {}
        #: Claimed items not due yet, by due time (serials break ties; items never compare).
        self._waiting: list[tuple[datetime, int, ItemT]] = []
        #: Set when a full batch of results waits for the recorder (or when stopping).
        self._batch_full: anyio.Event | None = None
        #: When the results waiting for the recorder must be recorded (``current_time``).
        self._record_by: float | None = None
        #: The recorder's wait for more results; cancelled when ``_record_by`` moves earlier.
        self._record_wait: anyio.CancelScope | None = None
        #: Claimed items no worker has taken yet, and the tasks working through them.
        self._queue: deque[tuple[int, ItemT]] = deque()
        self._workers_starting = 0
        self._workers = 0
        #: Set by the dispatcher to hand queued items to the worker waiting idle, if any.
        self._idle_worker: anyio.Event | None = None
        #: Where the dispatcher sleeps while nothing is queued.
        self._nap: anyio.CancelScope | None = None
        self._wake_event: anyio.Event | None = None
        self._woken = False
        #: Where the claim loop sleeps: until this moment, or for capacity to free up.
        self._deadline: datetime | None = None
        self._waiting_for_capacity = False
        self._stopping = False
        self._running = False
        self._serial = 0
        #: Results handed to the recorder and not yet recorded.
        self._results_waiting = 0

    @property
    def in_flight(self) -> int:
        """How many items are being worked on or waiting to be recorded."""
        return len(self._in_flight)

    def held(self) -> list[ItemT]:
        """The items in flight; safe to call from another thread."""
        return list(self._in_flight.copy().values())

    def _room(self) -> int:
        """How many more items may be claimed before the capacity is reached."""
        return self._capacity - len(self._in_flight)

    def room(self) -> int:
        """How many more items :meth:`offer` may hand over now (0 unless :meth:`run` runs).

        Up to two batches beyond the capacity — one being recorded while the
        next arrives: offered items wait their turn in the queue (no more than
        ``capacity`` are worked on at once), so a burst handed over by the
        recorder does not fall back to claims.
        """
        if not self._running or self._stopping:
            return 0
        return max(0, self._room() + 2 * self._batch_size)

    def offer(self, items: Sequence[ItemT]) -> bool:
        """Work on items claimed elsewhere (already leased to this worker), as if claimed here.

        Returns False, taking nothing, when the pipeline is not running: the
        caller then gives the leases back.
        """
        if not self._running or self._stopping:
            return False
        self._enqueue(items)
        return True

    def _enqueue(self, items: Sequence[ItemT]) -> None:
        """Count items as in flight; queue them for the workers, or to wait until due."""
        due_at = self._due_at
        now = self._clock.now() if due_at is not None else None
        first = self._waiting[0][0] if self._waiting else None
        for item in items:
            self._serial += 1
            self._in_flight[self._serial] = item
            if due_at is not None and now is not None and (due := due_at(item)) > now:
                heapq.heappush(self._waiting, (due, self._serial, item))
            else:
                self._queue.append((self._serial, item))
        if items and self._nap is not None:
            # Wake the dispatcher if there is work now or a new first item to wait for.
            head = self._waiting[0][0] if self._waiting else None
            if self._queue or (head is not None and (first is None or head < first)):
                self._nap.cancel()

    def discard_waiting(self, drop: Callable[[ItemT], bool]) -> int:
        """Forget claimed items not yet due for which ``drop`` is true; returns how many.

        For items whose lease the store has already given up (a cancelled
        job): they are neither worked on nor released.
        """
        kept = [entry for entry in self._waiting if not drop(entry[2])]
        dropped = len(self._waiting) - len(kept)
        if dropped:
            for _, serial, item in self._waiting:
                if drop(item):
                    self._in_flight.pop(serial, None)
            heapq.heapify(kept)
            self._waiting = kept
            if self._waiting_for_capacity:
                self.wake()
        return dropped

    def _release_due(self) -> None:
        """Move the waiting items that have fallen due to the workers' queue."""
        waiting = self._waiting
        if not waiting or self._stopping:
            return
        now = self._clock.now()
        while waiting and waiting[0][0] <= now:
            _, serial, item = heapq.heappop(waiting)
            self._queue.append((serial, item))

    def wake(self) -> None:
        """Look for due items now instead of at the end of the current sleep."""
        self._woken = True
        if self._wake_event is not None:
            self._wake_event.set()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once the items in flight are settled."""
        self._stopping = True
        if self._batch_full is not None:
            self._batch_full.set()
        self.wake()

    async def run_once(self) -> int:
        """Claim everything due now, work on it, record it; return how many items were done.

        For tests and tools that step the engine by hand; not to be mixed with :meth:`run`.
        """
        done = 0
        while True:
            items = await self._claim(min(self._batch_size, self._capacity), 0.0)
            if not items:
                return done
            results: list[tuple[ItemT, ResultT]] = []

            async def work_one(item: ItemT, into: list[tuple[ItemT, ResultT]]) -> None:
                with anyio.move_on_after(self._timeout) as scope:
                    into.append((item, await self._work(item)))
                if scope.cancelled_caught and self._timed_out is not None:
                    into.append((item, self._timed_out(item)))

            async with anyio.create_task_group() as group:
                for item in items:
                    group.start_soon(work_one, item, results)
            await self._record(results)
            done += len(items)

    async def run(
        self, *, grace_seconds: float, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Work until :meth:`stop`.

        Then wait up to ``grace_seconds`` for the items in flight, and release the rest.
        """
        send, receive = anyio.create_memory_object_stream[tuple[int, ItemT, ResultT]](math.inf)
        self._workers_starting = self._workers = 0
        self._results_waiting = 0
        self._idle_worker = None
        self._now = _loop_time()
        self._running = True
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._record_loop, receive)
                async with anyio.create_task_group() as workers:
                    workers.start_soon(self._dispatch_loop, workers, send)
                    if self._timeout != math.inf:
                        workers.start_soon(self._watch_deadlines)
                    task_status.started()
                    await self._claim_loop()
                    with anyio.move_on_after(grace_seconds, shield=True):
                        # Items not due yet are not started now: they are released below.
                        while len(self._in_flight) > len(self._waiting):
                            self._woken = False
                            self._wake_event = anyio.Event()
                            await self._wait_for_wake(self._max_sleep)
                    workers.cancel_scope.cancel()
                send.close()
        finally:
            self._running = False
            send.close()
            receive.close()
            leftovers = list(self._in_flight.values())
            self._in_flight.clear()
            self._queue.clear()
            self._waiting.clear()
            if leftovers:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._release(leftovers)
                    except Exception:
                        self._log.exception(
                            "%s: could not release %d items", self._name, len(leftovers)
                        )

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._woken = False
            self._wake_event = anyio.Event()
            wanted = min(self._batch_size, self._room())
            if wanted >= self._least_claim or (wanted > 0 and not self._in_flight):
                claimed_at = self._clock.now()
                try:
                    items = await self._claim(wanted, self._lookahead)
                except Exception:
                    self._log.exception("%s: claiming failed; trying again shortly", self._name)
                    await self._wait_for_wake(_ERROR_PAUSE_SECONDS)
                    continue
                self._enqueue(items)
                if len(items) == wanted:
                    await anyio.lowlevel.checkpoint()
                    continue  # there may be more due right now
                await self._sleep_until_due(claimed_at)
            else:
                self._waiting_for_capacity = True
                if self._results_waiting >= len(self._in_flight):
                    self._record_now()
                try:
                    await self._wait_for_wake(self._max_sleep)
                finally:
                    self._waiting_for_capacity = False

    async def _dispatch_loop(
        self,
        workers: TaskGroup,
        send: MemoryObjectSendStream[tuple[int, ItemT, ResultT]],
    ) -> None:
        """Start a worker whenever items wait and no worker is free to take them.

        A worker yields only while its item waits, so when this task runs, every
        worker that has started is stuck in an item: queued items need a new one.
        One worker at a time is started, and the next only once it has begun.

        When every queued item has a worker on its way (the usual case: one
        item falling due, one idle worker woken), or every worker is busy and
        the capacity reached (they take queued items as they finish), there
        is nothing to look at until more items are queued or fall due: the
        dispatcher naps instead of passing through the loop again.
        """
        while True:
            self._release_due()
            if not self._queue:
                await self._nap_until_due(None if self._stopping else self._wake_at())
                continue
            if self._workers_starting == 0:
                idle, self._idle_worker = self._idle_worker, None
                if idle is not None:
                    self._workers_starting += 1
                    idle.set()
                elif self._workers < self._capacity:
                    self._workers_starting += 1
                    workers.start_soon(self._worker, send)
            if len(self._queue) <= self._workers_starting or (
                self._workers_starting == 0 and self._workers >= self._capacity
            ):
                await self._nap_until_due(None if self._stopping else self._wake_at())
            else:
                await anyio.lowlevel.checkpoint()

    def _wake_at(self) -> datetime | None:
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

    async def _nap_until_due(self, until: datetime | None) -> None:
        """Sleep until ``until`` (None: indefinitely) or until :meth:`_enqueue` has news.

        A plain sleep, cut short by cancelling it only when items arrive that
        are due now or before the first waiting one: the usual end, the next
        item falling due, costs no cancellation (a timed-out wait costs one).
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

    async def _worker(self, send: MemoryObjectSendStream[tuple[int, ItemT, ResultT]]) -> None:
        """Work through queued items one by one; when none is left, end or wait for more.

        One worker stays, idle, for the next items the dispatcher queues: items
        falling due one after another then cost a wake-up each, not a new task.
        """
        self._workers_starting -= 1
        self._workers += 1
        slot = _Slot()
        self._slots.add(slot)
        try:
            while True:
                await self._work_through_queue(send, slot)
                if self._idle_worker is not None or self._stopping:
                    return
                idle = self._idle_worker = anyio.Event()
                try:
                    await idle.wait()
                finally:
                    if self._idle_worker is idle:
                        self._idle_worker = None
                self._workers_starting -= 1  # the dispatcher counted this wake-up as a start
        finally:
            self._workers -= 1
            self._slots.discard(slot)

    async def _work_through_queue(
        self, send: MemoryObjectSendStream[tuple[int, ItemT, ResultT]], slot: _Slot
    ) -> None:
        """Work through the queued items, each within the time limit (see :meth:`_watch_deadlines`).

        One cancel scope serves every item until one is cut off; the next
        items then get a fresh scope.
        """
        timeout = self._timeout
        while self._queue:
            current: tuple[int, ItemT] | None = None
            with anyio.CancelScope() as scope:
                slot.scope = scope
                while self._queue:
                    current = serial, item = self._queue.popleft()
                    if timeout != math.inf:
                        slot.deadline = self._now() + timeout
                    result = await self._work(item)
                    slot.deadline = math.inf
                    current = None
                    if not self._hand_over(send, serial, item, result):
                        return
                    if scope.cancel_called:
                        break  # cut off as the item ended anyway: a fresh scope for the next
            slot.scope = None
            if current is not None and self._timed_out is not None:
                serial, item = current
                if not self._hand_over(send, serial, item, self._timed_out(item)):
                    return

    def _hand_over(
        self,
        send: MemoryObjectSendStream[tuple[int, ItemT, ResultT]],
        serial: int,
        item: ItemT,
        result: ResultT,
    ) -> bool:
        """Pass a result to the recorder; False when the recorder is gone (stopping)."""
        try:
            send.send_nowait((serial, item, result))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False  # the item stays in flight, and is released
        self._results_waiting += 1
        self._note_result(item, result)
        if self._waiting_for_capacity and self._results_waiting >= len(self._in_flight):
            self._record_now()
        full = self._batch_full
        if full is not None and send.statistics().current_buffer_used >= self._batch_size:
            full.set()
        return True

    async def _watch_deadlines(self) -> None:
        """Cut off the items that overran the time limit, with one timer for all workers.

        Every item gets the same limit, so an item started later never ends
        its time sooner: sleeping until the earliest deadline among the items
        in progress (or a whole limit when none is) misses none.
        """
        timeout = self._timeout
        while True:
            now = self._now()
            wake = now + timeout
            for slot in self._slots:
                if slot.deadline <= now:
                    slot.deadline = math.inf
                    if slot.scope is not None:
                        slot.scope.cancel()
                elif slot.deadline < wake:
                    wake = slot.deadline
            await anyio.sleep(wake - now)

    def _record_now(self) -> None:
        """End the recorder's wait for company: nothing more can come until it records.

        Every item in flight has its result waiting, and the claim loop waits
        for the room that recording them frees — lingering would only idle.
        """
        self._record_by = self._now()
        if self._record_wait is not None:
            self._record_wait.cancel()

    def _note_result(self, item: ItemT, result: ResultT) -> None:
        """Move the recorder's deadline earlier if this result may not wait as long."""
        linger = self._linger if self._linger_for is None else self._linger_for(item, result)
        by = self._now() + linger
        if self._record_by is None or by < self._record_by:
            self._record_by = by
            if self._record_wait is not None:
                self._record_wait.cancel()

    async def _record_loop(
        self, receive: MemoryObjectReceiveStream[tuple[int, ItemT, ResultT]]
    ) -> None:
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
                self._record_by = self._now() if left else None
                due: datetime | None = None
                with anyio.CancelScope(shield=True):
                    try:
                        due = await self._record([(item, result) for _, item, result in batch])
                    except Exception:
                        # The leases stay and expire; the items are taken up again then.
                        self._log.exception(
                            "%s: recording %d results failed", self._name, len(batch)
                        )
                self._results_waiting -= len(batch)
                for serial, _, _ in batch:
                    self._in_flight.pop(serial, None)
                # Wake the claim loop only when this changes what it waits for: capacity
                # came free, or a recorded item falls due again before the loop would look.
                # (Waking it after every batch cost a claim and a look at the store each.)
                if due is not None:
                    due -= timedelta(seconds=self._lookahead / 2)
                if (
                    self._stopping
                    or (self._waiting_for_capacity and self._room() >= self._least_claim)
                    or (due is not None and (self._deadline is None or due < self._deadline))
                ):
                    self.wake()

    async def _wait_for_company(
        self, receive: MemoryObjectReceiveStream[tuple[int, ItemT, ResultT]]
    ) -> None:
        """Wait for more results until one waiting must be recorded, or a batch is full."""
        full = self._batch_full = anyio.Event()
        try:
            while not full.is_set() and not self._stopping:
                if receive.statistics().current_buffer_used + 1 >= self._batch_size:
                    return
                by = self._record_by
                left = 0.0 if by is None else by - self._now()
                if left <= 0:
                    return
                with anyio.move_on_after(left) as wait:
                    self._record_wait = wait
                    await full.wait()
        finally:
            self._record_wait = None
            self._batch_full = None

    async def _sleep_until_due(self, claimed_at: datetime) -> None:
        """Sleep until the next item falls due, a wake-up, or the longest sleep.

        An item the store reports due within the claim's reach (``claimed_at``
        plus the lookahead) was in reach when the claim that just came back
        short ran: it is in flight here (recording it wakes this loop when that
        matters) or leased by another worker. Looking again at once would only
        find it again, so this waits instead. With a lookahead, the next claim
        comes when the next item is half the lookahead away: it then gathers
        everything falling due over the following half.
        """
        try:
            due = await self._next_due()
        except Exception:
            self._log.exception("%s: reading the next due time failed", self._name)
            due = None
        ahead = timedelta(seconds=self._lookahead)
        if due is not None and due - ahead <= claimed_at:
            due = None
        if due is not None:
            due -= ahead / 2
        now = self._clock.now()
        deadline = now + timedelta(seconds=self._max_sleep)
        if due is not None and due < deadline:
            deadline = due
        if deadline <= now or self._woken:
            return
        self._deadline = deadline
        try:
            await self._wait_for_wake(self._max_sleep, until=deadline)
        finally:
            self._deadline = None

    async def _wait_for_wake(self, seconds: float, until: datetime | None = None) -> None:
        """Sleep up to ``seconds`` of real time, or until ``until`` on the clock, or a wake-up."""
        if self._woken:
            return
        event = self._wake_event
        if event is None:
            event = self._wake_event = anyio.Event()
        await _wait(event, self._clock, until=until, seconds=seconds)


async def _wait(
    event: anyio.Event, clock: Clock, *, until: datetime | None, seconds: float = math.inf
) -> None:
    """Wait for ``event``, at most ``seconds`` of real time and until ``until`` on ``clock``."""
    if until is not None and isinstance(clock, SystemClock):
        # Real time: one timeout does it, without two tasks racing each other.
        seconds = min(seconds, max(0.0, (until - clock.now()).total_seconds()))
        until = None
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


