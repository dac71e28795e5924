"""The time limit on an item's work: a check or a delivery that hangs is cut off.

Workers share one watchdog instead of a timer per item. An item that overruns
is cut off at its limit and recorded with its source's ``timed_out``
result, while the items beside it and behind it on the same worker go on as
usual. The pipeline tests run for real on the wall clock; their store is a
list. The engine test hangs a real delivery.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import anyio

import circleback
from circleback import (
    Caller,
    DeliveryContext,
    DeliveryReceipt,
    Engine,
    EngineTuning,
    Notification,
    Notifier,
    Settings,
)
from circleback.core.clock import SystemClock
from circleback.core.models import DeliveryStatus
from circleback.engine.pipeline import PipelineConfig, WorkPipeline
from circleback.testing import TestingPlugin

from ..pacing import Pacing

Item = tuple[str, datetime]

_LIMIT = 0.3
_CUT_OFF = "cut off"


class HangingItems:
    """Hands out named items; an item named ``hang…`` waits until the test lets it go."""

    def __init__(self, names: list[str]) -> None:
        self.items: list[Item] = [(name, datetime.now(UTC)) for name in names]
        self.started: dict[str, float] = {}
        self.results: dict[str, str] = {}
        self.let_go = anyio.Event()

    async def claim(self, wanted: int, lookahead: float) -> list[Item]:
        taken, self.items = self.items[:wanted], self.items[wanted:]
        return taken

    async def run_one(self, item: Item) -> str:
        self.started[item[0]] = anyio.current_time()
        if item[0].startswith("hang"):
            await self.let_go.wait()
        else:
            await anyio.sleep(0.01)  # a checkpoint: a quick item waits too
        return "done"

    def timed_out(self, item: Item) -> str:
        return _CUT_OFF

    def due_at(self, item: Item) -> None:
        return None

    def linger_for(self, item: Item, result: str) -> float:
        return 0.0

    async def record(self, results: list[tuple[Item, str]]) -> datetime | None:
        for (name, _), result in results:
            self.results[name] = result
        return None

    async def release(self, items: list[Item]) -> None:
        return None

    async def next_due(self) -> datetime | None:
        return None


def _pipeline(source: HangingItems, *, capacity: int) -> WorkPipeline[Item, str]:
    config = PipelineConfig(capacity=capacity, batch_size=10, max_sleep_seconds=0.05,
                            timeout_seconds=_LIMIT)
    return WorkPipeline[Item, str]("test", source, config, SystemClock(), logging.getLogger("test"))


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await anyio.sleep(0.01)


async def _run_until_recorded(pipeline: WorkPipeline[Item, str], source: HangingItems,
                              count: int) -> float:
    """Run the pipeline until ``count`` results are recorded; returns when the last one was."""
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            await group.start(functools.partial(pipeline.run, grace_seconds=1.0))
            await _until(lambda: len(source.results) >= count)
            finished = anyio.current_time()
            source.let_go.set()
            pipeline.stop()
    return finished


async def test_a_hanging_item_is_cut_off_at_the_limit_and_its_worker_goes_on() -> None:
    # One worker: the items behind the hanging one wait for it, then run on the same worker.
    source = HangingItems(["hang-1", "quick-1", "quick-2"])
    pipeline = _pipeline(source, capacity=1)
    await _run_until_recorded(pipeline, source, 3)
    assert source.results == {"hang-1": _CUT_OFF, "quick-1": "done", "quick-2": "done"}
    waited = source.started["quick-1"] - source.started["hang-1"]
    assert _LIMIT <= waited < _LIMIT + 1.0


async def test_items_beside_a_hanging_one_are_not_cut_off() -> None:
    source = HangingItems(["hang-1", *(f"quick-{index}" for index in range(20))])
    pipeline = _pipeline(source, capacity=5)
    finished = await _run_until_recorded(pipeline, source, 21)
    assert source.results.pop("hang-1") == _CUT_OFF
    assert set(source.results.values()) == {"done"}
    assert finished - source.started["hang-1"] >= _LIMIT


async def test_items_that_keep_a_worker_busy_past_the_limit_in_total_are_not_cut_off() -> None:
    # Each item is quick, but one worker takes them all, for longer than the limit in all.
    names = [f"quick-{index}" for index in range(int(3 * _LIMIT / 0.01))]
    source = HangingItems(names)
    pipeline = _pipeline(source, capacity=1)
    await _run_until_recorded(pipeline, source, len(names))
    assert set(source.results.values()) == {"done"}
    assert source.started[names[-1]] - source.started[names[0]] > _LIMIT


async def test_stepping_by_hand_cuts_off_a_hanging_item_too() -> None:
    source = HangingItems(["hang-1", "quick-1"])
    pipeline = _pipeline(source, capacity=5)
    with anyio.fail_after(20):
        assert await pipeline.run_once() == 2
    assert source.results == {"hang-1": _CUT_OFF, "quick-1": "done"}


class HangingNotifier(Notifier):
    """A notifier whose first delivery never answers; later ones go through."""

    name = "hanging"
    description = "Hangs on its first delivery."

    def __init__(self) -> None:
        self.attempts = 0

    async def deliver(self, notification: Notification, context: DeliveryContext
                      ) -> DeliveryReceipt:
        self.attempts += 1
        if self.attempts == 1:
            await anyio.sleep_forever()
        return DeliveryReceipt(via="hanging")


class HangingNotifierPlugin:
    def __init__(self, notifier: HangingNotifier) -> None:
        self.notifier = notifier

    @circleback.hookimpl
    def circleback_register_notifiers(self, register: Callable[[Notifier], None]) -> None:
        register(self.notifier)


async def test_a_hanging_delivery_is_cut_off_and_tried_again(caller: Caller) -> None:
    notifier = HangingNotifier()
    settings = Settings(database_url="sqlite://",
                        tuning=EngineTuning(delivery_timeout_seconds=_LIMIT))
    pacing = Pacing(delivery_backoff_seconds=0.05, max_sleep_seconds=0.05)
    async with Engine(settings, plugins=[TestingPlugin(), HangingNotifierPlugin(notifier)],
                      load_entry_points=False, pacing=pacing) as engine:
        job = await engine.scheduler.add_job(caller, {
            "job_type": "delay", "check_config": {"delay_seconds": 0.01},
            "on_success_message": "done", "on_complete": "hanging",
        })
        with anyio.fail_after(20):
            while not (entries := await engine.store.list_outbox()) or (
                entries[0].status is not DeliveryStatus.SENT
            ):
                await anyio.sleep(0.02)
    [entry] = entries
    assert entry.job_id == job.id
    assert entry.attempts == 2
    assert entry.last_error == f"delivery took longer than {_LIMIT:g} s"
    assert notifier.attempts == 2
