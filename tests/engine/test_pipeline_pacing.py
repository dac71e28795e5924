"""How the work pipeline paces its wake-ups and its claims.

Items falling due close together start on one wake-up (within the timer
slack), never before they are due, while a lone item is not held back by the
slack. When the capacity is what limits, the claim loop waits for room for
half a batch instead of claiming each item that trickles out on its own.
The pipeline runs for real on the wall clock; its store is a list.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import anyio

from circleback.core.clock import SystemClock
from circleback.engine.pipeline import PipelineConfig, WorkPipeline
from circleback.engine.timers import DENSE_COMPANY, DENSE_STREAM

Item = tuple[str, datetime]


class ListedItems:
    """Hands out a fixed list of items on the first claim, and notes when each started."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        self.started: dict[str, float] = {}
        self.recorded: list[str] = []
        self.batches: list[int] = []
        #: How long a result may wait to be recorded with others.
        self.linger = 0.0

    async def claim(self, wanted: int, lookahead: float) -> list[Item]:
        taken, self.items = self.items[:wanted], self.items[wanted:]
        return taken

    async def run_one(self, item: Item) -> None:
        self.started[item[0]] = time.time()

    def timed_out(self, item: Item) -> None:
        return None

    def due_at(self, item: Item) -> datetime:
        return item[1]

    def linger_for(self, item: Item, result: None) -> float:
        return self.linger

    async def record(self, results: list[tuple[Item, None]]) -> datetime | None:
        self.recorded.extend(item[0] for item, _ in results)
        self.batches.append(len(results))
        return None

    async def release(self, items: list[Item]) -> None:
        return None

    async def next_due(self) -> datetime | None:
        return None


def _pipeline(source: ListedItems, *, capacity: int, batch: int, slack: float = 0.0,
              dense_slack: float = 0.0, lookahead: float = 10.0,
              linger: float = 0.0) -> WorkPipeline[Item, None]:
    source.linger = linger
    config = PipelineConfig(
        capacity=capacity, batch_size=batch, max_sleep_seconds=0.05,
        lookahead_seconds=lookahead, timer_slack_seconds=slack, dense_slack_seconds=dense_slack,
    )
    logger = logging.getLogger("test")
    return WorkPipeline[Item, None]("test", source, config, SystemClock(), logger)


@contextlib.asynccontextmanager
async def _running(pipeline: WorkPipeline[Item, None]) -> AsyncIterator[None]:
    """Run the pipeline for the block, then stop it and wait for it to end."""
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            await group.start(functools.partial(pipeline.run, grace_seconds=1.0))
            yield
            pipeline.stop()


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await anyio.sleep(0.01)


async def _run_until_recorded(
    pipeline: WorkPipeline[Item, None], source: ListedItems, count: int
) -> None:
    """Run the pipeline until ``count`` items are recorded, then stop it."""
    async with _running(pipeline):
        await _until(lambda: len(source.recorded) >= count)


async def test_items_due_within_the_slack_start_together_and_a_lone_item_on_time() -> None:
    now = datetime.now(UTC)
    due = {"first": now + timedelta(seconds=0.2), "second": now + timedelta(seconds=0.6),
           "lone": now + timedelta(seconds=2.5)}
    source = ListedItems(list(due.items()))
    pipeline = _pipeline(source, capacity=10, batch=10, slack=1.0)
    await _run_until_recorded(pipeline, source, 3)
    started = {name: datetime.fromtimestamp(at, UTC) for name, at in source.started.items()}
    for name, moment in due.items():
        assert started[name] >= moment, f"{name} started before it was due"
    # The first waited for the second, due within the slack after it: one wake-up for both.
    assert started["first"] >= due["second"]
    # Nothing fell due within the slack after the lone item: it was not held back by it.
    assert started["lone"] - due["lone"] < timedelta(seconds=0.5)


def _wake_ups(started: dict[str, float], *, within: float) -> list[list[str]]:
    """The items grouped by start: those starting within ``within`` s of a group's first."""
    groups: list[list[str]] = []
    first = -math.inf
    for name, at in sorted(started.items(), key=lambda entry: entry[1]):
        if at - first > within:
            groups.append([])
            first = at
        groups[-1].append(name)
    return groups


async def test_a_dense_stream_starts_its_items_in_company_and_never_early() -> None:
    # 100 items 10 ms apart, on and on: a dense stream for a dense slack of 0.3 s.
    now = datetime.now(UTC) + timedelta(seconds=0.3)
    due = {f"dense-{index:03}": now + timedelta(seconds=0.01 * index) for index in range(100)}
    source = ListedItems(list(due.items()))
    pipeline = _pipeline(source, capacity=200, batch=200, slack=0.001, dense_slack=0.3)
    await _run_until_recorded(pipeline, source, len(due))
    started = {name: datetime.fromtimestamp(at, UTC) for name, at in source.started.items()}
    for name, moment in due.items():
        assert started[name] >= moment, f"{name} started before it was due"
        assert started[name] - moment < timedelta(seconds=0.3 + 0.25), f"{name} held back"
    # A hundred wake-ups without the dense slack. With it, one per DENSE_COMPANY items
    # while the stream goes on; its last stretch is a sparse stream, started one by one.
    groups = _wake_ups(source.started, within=0.005)
    in_company = sum(len(group) for group in groups if len(group) >= DENSE_COMPANY)
    assert in_company >= len(due) - DENSE_STREAM, groups


async def test_a_bunch_of_items_in_a_sparse_stream_is_not_held_back() -> None:
    # Twenty items 20 ms apart: DENSE_COMPANY of them within the dense slack, but the
    # stream does not go on. Each starts on time, not when the sixteenth falls due.
    now = datetime.now(UTC) + timedelta(seconds=0.3)
    due = {f"bunch-{index:02}": now + timedelta(seconds=0.02 * index) for index in range(20)}
    source = ListedItems(list(due.items()))
    pipeline = _pipeline(source, capacity=100, batch=100, slack=0.001, dense_slack=0.5)
    assert len(due) < DENSE_STREAM
    assert (DENSE_COMPANY - 1) * 0.02 <= 0.5
    await _run_until_recorded(pipeline, source, len(due))
    for name, moment in due.items():
        lateness = datetime.fromtimestamp(source.started[name], UTC) - moment
        assert timedelta(0) <= lateness < timedelta(seconds=0.15), f"{name}: {lateness}"


class TrickleItems(ListedItems):
    """An endless supply of due items whose work waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__([])
        self.claims: list[int] = []
        self.finish: dict[str, anyio.Event] = {}
        self.serial = 0

    async def claim(self, wanted: int, lookahead: float) -> list[Item]:
        self.claims.append(wanted)
        items = []
        for _ in range(wanted):
            self.serial += 1
            name = f"item-{self.serial}"
            self.finish[name] = anyio.Event()
            items.append((name, datetime.now(UTC)))
        return items

    async def run_one(self, item: Item) -> None:
        await self.finish[item[0]].wait()
        await super().run_one(item)


async def test_a_full_pipeline_claims_again_only_when_half_a_batch_has_room() -> None:
    source = TrickleItems()
    pipeline = _pipeline(source, capacity=4, batch=4, lookahead=0.0)

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():
            await anyio.sleep(0.02)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(functools.partial(pipeline.run, grace_seconds=1.0))
            await until(lambda: source.claims == [4])
            source.finish["item-1"].set()
            await until(lambda: source.recorded == ["item-1"])
            await anyio.sleep(0.3)  # several of the claim loop's longest sleeps
            claims_with_one_free = list(source.claims)
            source.finish["item-2"].set()
            await until(lambda: len(source.claims) == 2)
            for event in source.finish.values():
                event.set()
            pipeline.stop()
    assert claims_with_one_free == [4], "claimed again for a single free place"
    assert source.claims[1] == 2, "did not claim once half a batch had room"


def _count_dispatcher_passes(pipeline: WorkPipeline[Item, None]) -> list[int]:
    """Count the dispatcher's passes: each begins by moving due items to the queue."""
    passes = [0]
    workers = pipeline._workers
    move_due = workers._move_due

    def counted() -> None:
        passes[0] += 1
        move_due()

    workers._move_due = counted  # type: ignore[method-assign]
    return passes


async def test_a_dispatcher_with_every_worker_busy_waits_instead_of_spinning() -> None:
    # Two places, both taken; a third item handed over waits in the queue for one to free up.
    source = TrickleItems()
    pipeline = _pipeline(source, capacity=2, batch=2, lookahead=0.0)
    passes = _count_dispatcher_passes(pipeline)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(functools.partial(pipeline.run, grace_seconds=1.0))
            while len(source.finish) < 2 or pipeline.in_flight < 2:
                await anyio.sleep(0.02)
            source.finish["offered"] = anyio.Event()
            assert pipeline.offer([("offered", datetime.now(UTC))])
            await anyio.sleep(0.1)
            before = passes[0]
            await anyio.sleep(0.3)
            while_full = passes[0] - before
            for event in list(source.finish.values()):
                event.set()
            while "offered" not in source.recorded:
                await anyio.sleep(0.02)
            pipeline.stop()
            for event in list(source.finish.values()):
                event.set()
    assert while_full <= 2, f"the dispatcher passed {while_full} times with nothing to do"


class SlowItems(ListedItems):
    """Items whose work waits a moment (a worker is stuck in each while it runs)."""

    async def run_one(self, item: Item) -> None:
        await anyio.sleep(0.01)
        await super().run_one(item)


async def test_an_item_falling_due_costs_the_dispatcher_one_pass() -> None:
    now = datetime.now(UTC)
    due = [(f"item-{i}", now + timedelta(seconds=0.2 + 0.1 * i)) for i in range(5)]
    source = SlowItems(due)
    pipeline = _pipeline(source, capacity=10, batch=10)
    passes = _count_dispatcher_passes(pipeline)
    await _run_until_recorded(pipeline, source, len(due))
    assert set(source.started) == {name for name, _ in due}
    # A pass when the claim queues the items, then one per item falling due.
    assert passes[0] <= 1 + len(due) + 1, f"{passes[0]} passes for {len(due)} items"


class HeldItems(ListedItems):
    """Items whose work waits until the test lets it go, by name."""

    def __init__(self, items: Sequence[Item]) -> None:
        super().__init__(items)
        self.hold: dict[str, anyio.Event] = {}

    async def run_one(self, item: Item) -> None:
        await super().run_one(item)
        if item[0] in self.hold:
            await self.hold[item[0]].wait()


async def test_an_item_outlasting_the_gap_does_not_hold_up_the_next() -> None:
    # The only worker is stuck in the first item when the second falls due:
    # another worker starts it, and the one after it.
    now = datetime.now(UTC)
    due = [("stuck", now + timedelta(seconds=0.1)), ("next", now + timedelta(seconds=0.3)),
           ("after", now + timedelta(seconds=0.5))]
    source = HeldItems(due)
    source.hold["stuck"] = anyio.Event()
    pipeline = _pipeline(source, capacity=10, batch=10)
    async with _running(pipeline):
        await _until(lambda: "after" in source.recorded)
        assert "stuck" not in source.recorded
        source.hold["stuck"].set()
        await _until(lambda: len(source.recorded) == len(due))
    assert source.recorded == ["next", "after", "stuck"]
    assert all(source.started[name] >= at.timestamp() for name, at in due)


async def test_an_item_handed_over_due_before_the_waiting_ones_starts_on_time() -> None:
    # The pipeline waits for an item a second away; an item handed over due sooner
    # must not wait for it.
    now = datetime.now(UTC)
    source = SlowItems([("late", now + timedelta(seconds=1.0)),
                        ("warm-up", now + timedelta(seconds=0.05))])
    pipeline = _pipeline(source, capacity=10, batch=10)
    async with _running(pipeline):
        await _until(lambda: "warm-up" in source.recorded)
        early = now + timedelta(seconds=0.3)
        assert pipeline.offer([("early", early)])
        await _until(lambda: "early" in source.recorded)
        assert "late" not in source.started
        await _until(lambda: "late" in source.recorded)
    assert source.started["early"] >= early.timestamp()


async def test_results_are_recorded_at_once_when_nothing_more_can_come_until_they_are() -> None:
    """At capacity, with every item in flight done, lingering for company would only idle.

    Results may wait an hour for company here, and a batch holds more than the
    capacity, so no batch ever fills: only the rule that nothing more can
    arrive (the claim loop waits for the room that recording frees) lets the
    backlog drain before the test's time limit.
    """
    now = datetime.now(UTC)
    source = ListedItems([(f"item {n}", now) for n in range(12)])
    pipeline = _pipeline(source, capacity=4, batch=10, linger=3600.0)
    await _run_until_recorded(pipeline, source, 12)
    assert sorted(source.recorded) == sorted(f"item {n}" for n in range(12))
    assert source.batches == [4, 4, 4]
