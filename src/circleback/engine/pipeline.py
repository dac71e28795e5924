"""The loop shared by job checks and message deliveries.

Claim leased items in batches, work on them concurrently (bounded by a
capacity), record the results in batches as they arrive, and sleep until the
next item is due or until woken. A slow item never holds up the others: its
result is recorded whenever it arrives, while the rest flow past it.

Claims may reach ahead (``lookahead_seconds``): items due within that horizon
are leased early and wait in memory until they fall due (:mod:`.timers`), so
one claim serves every item falling due over the next stretch of time and an
item starts on time rather than after a claim's round trip. Workers take the
items as they fall due (:mod:`.workers`), and a recorder writes their results
in batches (:mod:`.recorder`). This module holds the claim loop and what it
shares with the others: which items are in flight, and when to look again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskStatus

from ..core.clock import Clock
from .recorder import Recorder
from .timers import DueTimers, wait_for
from .workers import Workers

__all__ = ["PipelineConfig", "WorkPipeline", "WorkSource"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

#: How long to wait before trying again after the store raised.
_ERROR_PAUSE_SECONDS = 0.5
#: The longest pause between two tries of a store that keeps failing.
_MAX_ERROR_PAUSE_SECONDS = 30.0


class WorkSource(Protocol[ItemT, ResultT]):
    """What a pipeline works on: the store's verbs for one kind of item, and the work."""

    async def claim(self, limit: int, ahead_seconds: float) -> Sequence[ItemT]:
        """Lease up to ``limit`` items due now or within ``ahead_seconds``."""
        ...

    async def run_one(self, item: ItemT) -> ResultT:
        """Work on one item (the pipeline cuts it off at its time limit)."""
        ...

    def timed_out(self, item: ItemT) -> ResultT:
        """The result of an item cut off at the time limit."""
        ...

    def due_at(self, item: ItemT) -> datetime | None:
        """When a claimed item is to start; None: at once."""
        ...

    def linger_for(self, item: ItemT, result: ResultT) -> float:
        """How long a result may wait to be recorded with others."""
        ...

    async def record(self, results: list[tuple[ItemT, ResultT]]) -> datetime | None:
        """Record results; returns when the earliest of these items is due again (or None)."""
        ...

    async def release(self, items: list[ItemT]) -> None:
        """Give back the leases of items that were not worked on."""
        ...

    async def next_due(self) -> datetime | None:
        """When the next item in the store falls due (None: nothing is waiting)."""
        ...


@attrs.frozen(kw_only=True)
class PipelineConfig:
    """How much a pipeline takes on at once, and how it paces itself."""

    #: Most items in flight (worked on or waiting to be recorded).
    capacity: int
    #: Most items per claim and per recording.
    batch_size: int
    #: Longest sleep between looks at the store.
    max_sleep_seconds: float
    #: How far ahead a claim reaches (see the module docstring).
    lookahead_seconds: float = 0.0
    #: How much later than its due moment an item may start (see :mod:`.timers`).
    timer_slack_seconds: float = 0.0
    dense_slack_seconds: float = 0.0
    #: The time limit on one item's work.
    timeout_seconds: float = math.inf


class WorkPipeline(Generic[ItemT, ResultT]):
    """Claim → work → record, concurrently, with wake-ups (see the module docstring)."""

    def __init__(
        self,
        name: str,
        source: WorkSource[ItemT, ResultT],
        config: PipelineConfig,
        clock: Clock,
        logger: logging.Logger,
    ) -> None:
        self._name = name
        self._source = source
        self._config = config
        self._clock = clock
        self._log = logger
        self._lookahead = config.lookahead_seconds
        self._timers = DueTimers[ItemT](
            clock,
            slack_seconds=config.timer_slack_seconds,
            dense_slack_seconds=config.dense_slack_seconds,
        )
        self._workers = Workers[ItemT, ResultT](
            timers=self._timers,
            run_one=source.run_one,
            timed_out=source.timed_out,
            hand_over=self._hand_over,
            capacity=config.capacity,
            timeout_seconds=config.timeout_seconds,
        )
        self._recorder = Recorder[ItemT, ResultT](
            name=name,
            record=source.record,
            recorded=self._recorded,
            batch_size=config.batch_size,
            logger=logger,
        )
        #: A claim waits for room for this many items (unless none is in flight): when
        #: the capacity is what limits, items trickling out would each cost a claim.
        self._least_claim = max(1, min(config.batch_size, config.capacity) // 2)
        #: Every item claimed and not yet recorded or released, by serial.
        self._in_flight: dict[int, ItemT] = {}
        self._serial = 0
        self._wake_event: anyio.Event | None = None
        self._woken = False
        #: Where the claim loop sleeps: until this moment, or for capacity to free up.
        self._deadline: datetime | None = None
        self._waiting_for_capacity = False
        self._stopping = False
        self._running = False

    @property
    def in_flight(self) -> int:
        """How many items are being worked on or waiting to be recorded."""
        return len(self._in_flight)

    def held(self) -> list[ItemT]:
        """The items in flight; safe to call from another thread."""
        return list(self._in_flight.copy().values())

    def _room(self) -> int:
        """How many more items may be claimed before the capacity is reached."""
        return self._config.capacity - len(self._in_flight)

    def room(self) -> int:
        """How many more items :meth:`offer` may hand over now (0 unless :meth:`run` runs).

        Up to two batches beyond the capacity — one being recorded while the
        next arrives: offered items wait their turn in the queue (no more than
        ``capacity`` are worked on at once), so a burst handed over by the
        recorder does not fall back to claims.
        """
        if not self._running or self._stopping:
            return 0
        return max(0, self._room() + 2 * self._config.batch_size)

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
        timers, queue, due_at = self._timers, self._workers.queue, self._source.due_at
        now = self._clock.now()
        first = timers.first
        for item in items:
            self._serial += 1
            self._in_flight[self._serial] = item
            due = due_at(item)
            if due is not None and due > now:
                timers.push(due, self._serial, item)
            else:
                queue.append((self._serial, item))
        if items and timers.napping:
            # Wake the dispatcher if there is work now or a new first item to wait for.
            head = timers.first
            if queue or (head is not None and (first is None or head < first)):
                timers.interrupt()

    def discard_waiting(self, drop: Callable[[ItemT], bool]) -> int:
        """Forget claimed items not yet due for which ``drop`` is true; returns how many.

        For items whose lease the store has already given up (a cancelled
        job): they are neither worked on nor released.
        """
        dropped = self._timers.discard(drop)
        for serial in dropped:
            self._in_flight.pop(serial, None)
        if dropped and self._waiting_for_capacity:
            self.wake()
        return len(dropped)

    def wake(self) -> None:
        """Look for due items now instead of at the end of the current sleep."""
        self._woken = True
        if self._wake_event is not None:
            self._wake_event.set()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once the items in flight are settled."""
        self._stopping = True
        self._workers.stop()
        self._recorder.stop()
        self.wake()

    async def run_once(self) -> int:
        """Claim everything due now, work on it, record it; return how many items were done.

        For tests and tools that step the engine by hand; not to be mixed with :meth:`run`.
        """
        source, config = self._source, self._config
        done = 0
        while True:
            items = await source.claim(min(config.batch_size, config.capacity), 0.0)
            if not items:
                return done
            results: list[tuple[ItemT, ResultT]] = []

            async def work_one(item: ItemT, into: list[tuple[ItemT, ResultT]]) -> None:
                with anyio.move_on_after(config.timeout_seconds) as scope:
                    into.append((item, await source.run_one(item)))
                if scope.cancelled_caught:
                    into.append((item, source.timed_out(item)))

            async with anyio.create_task_group() as group:
                for item in items:
                    group.start_soon(work_one, item, results)
            await source.record(results)
            done += len(items)

    async def run(
        self, *, grace_seconds: float, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Work until :meth:`stop`.

        Then wait up to ``grace_seconds`` for the items in flight, and release the rest.
        """
        recorder = self._recorder
        recorder.open()
        self._running = True
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(recorder.run)
                async with anyio.create_task_group() as workers:
                    workers.start_soon(self._workers.dispatch, workers)
                    if self._config.timeout_seconds != math.inf:
                        workers.start_soon(self._workers.watch_deadlines)
                    task_status.started()
                    await self._claim_loop()
                    with anyio.move_on_after(grace_seconds, shield=True):
                        # Items not due yet are not started now: they are released below.
                        while len(self._in_flight) > len(self._timers):
                            self._woken = False
                            self._wake_event = anyio.Event()
                            await self._wait_for_wake(self._config.max_sleep_seconds)
                    workers.cancel_scope.cancel()
                recorder.finish()
        finally:
            self._running = False
            recorder.close()
            leftovers = list(self._in_flight.values())
            self._in_flight.clear()
            self._workers.queue.clear()
            self._timers.clear()
            if leftovers:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._source.release(leftovers)
                    except Exception:
                        self._log.exception(
                            "%s: could not release %d items", self._name, len(leftovers)
                        )

    async def _claim_loop(self) -> None:
        batch_size = self._config.batch_size
        failures = 0
        while not self._stopping:
            self._woken = False
            self._wake_event = anyio.Event()
            wanted = min(batch_size, self._room())
            if wanted >= self._least_claim or (wanted > 0 and not self._in_flight):
                claimed_at = self._clock.now()
                try:
                    items = await self._source.claim(wanted, self._lookahead)
                except Exception as exc:
                    # A store that keeps failing is asked again after growing pauses,
                    # one line each (the traceback at DEBUG), not once per loop.
                    pause = min(_MAX_ERROR_PAUSE_SECONDS, _ERROR_PAUSE_SECONDS * 2 ** failures)
                    failures += 1
                    self._log.error(
                        "%s: claiming failed (%d in a row), trying again in %.1f s: %s: %s",
                        self._name, failures, pause, type(exc).__name__,
                        " ".join(str(exc).split())[:300],
                        exc_info=self._log.isEnabledFor(logging.DEBUG),
                    )
                    await self._wait_for_wake(pause)
                    continue
                if failures:
                    self._log.warning("%s: claiming works again after %d failures",
                                      self._name, failures)
                    failures = 0
                self._enqueue(items)
                if len(items) == wanted:
                    await anyio.lowlevel.checkpoint()
                    continue  # there may be more due right now
                await self._sleep_until_due(claimed_at)
            else:
                self._waiting_for_capacity = True
                if self._recorder.waiting >= len(self._in_flight):
                    # Every item in flight is done: nothing more can come until they are
                    # recorded, so lingering for company would only idle.
                    self._recorder.record_now()
                try:
                    await self._wait_for_wake(self._config.max_sleep_seconds)
                finally:
                    self._waiting_for_capacity = False

    def _hand_over(self, serial: int, item: ItemT, result: ResultT) -> bool:
        """Pass a worker's result to the recorder; False when the recorder is gone (stopping)."""
        if not self._recorder.add(serial, item, result, self._source.linger_for(item, result)):
            return False
        if self._waiting_for_capacity and self._recorder.waiting >= len(self._in_flight):
            self._recorder.record_now()
        return True

    def _recorded(self, serials: list[int], due: datetime | None) -> None:
        """Forget recorded items; wake the claim loop if that changes what it waits for.

        That is: capacity came free, or a recorded item falls due again before
        the loop would look. Waking it after every batch would cost a claim
        and a look at the store each time.
        """
        for serial in serials:
            self._in_flight.pop(serial, None)
        if due is not None:
            due -= timedelta(seconds=self._lookahead / 2)
        if (
            self._stopping
            or (self._waiting_for_capacity and self._room() >= self._least_claim)
            or (due is not None and (self._deadline is None or due < self._deadline))
        ):
            self.wake()

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
            due = await self._source.next_due()
        except Exception:
            self._log.exception("%s: reading the next due time failed", self._name)
            due = None
        ahead = timedelta(seconds=self._lookahead)
        if due is not None and due - ahead <= claimed_at:
            due = None
        if due is not None:
            due -= ahead / 2
        now = self._clock.now()
        max_sleep = self._config.max_sleep_seconds
        deadline = now + timedelta(seconds=max_sleep)
        if due is not None and due < deadline:
            deadline = due
        if deadline <= now or self._woken:
            return
        self._deadline = deadline
        try:
            await self._wait_for_wake(max_sleep, until=deadline)
        finally:
            self._deadline = None

    async def _wait_for_wake(self, seconds: float, until: datetime | None = None) -> None:
        """Sleep up to ``seconds`` of real time, or until ``until`` on the clock, or a wake-up."""
        if self._woken:
            return
        event = self._wake_event
        if event is None:
            event = self._wake_event = anyio.Event()
        await wait_for(event, self._clock, until=until, seconds=seconds)
