"""How long a check's result waits before it is recorded with others.

A result that finishes a job carries a message someone waits for: it goes out
within ``record_linger_seconds``. A poll that answered "not yet" is not due
again for a while, so its result may wait longer (``not_yet_linger_seconds``)
and share a transaction with many others — but it must be written before the
claim that would take the job's next check, or that claim would find the job
still leased and miss it. The pipeline tests run for real on the wall clock;
their store is a list.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circleback import CheckOutcome, Job, Settings
from circleback.core.clock import ManualClock, SystemClock
from circleback.core.models import CheckStatus
from circleback.core.settings import EngineTuning
from circleback.core.state import CheckResult, apply_event, ends_job, next_interval
from circleback.engine.engine import Engine
from circleback.engine.pipeline import WorkPipeline

from .test_state_machine import jobs

Item = tuple[str, datetime]

#: Longer than any test waits: a result lingering this long was never cut short.
_CALM_SECONDS = 600.0


class RecordedBatches:
    """Hands out the items it is given on the next claim; notes each recorded batch."""

    def __init__(self, names: list[str]) -> None:
        self.items: list[Item] = [(name, datetime.now(UTC)) for name in names]
        self.worked: list[str] = []
        self.batches: list[list[str]] = []

    async def claim(self, wanted: int, lookahead: float) -> list[Item]:
        taken, self.items = self.items[:wanted], self.items[wanted:]
        return taken

    async def work(self, item: Item) -> str:
        self.worked.append(item[0])
        return item[0]

    async def record(self, results: list[tuple[Item, str]]) -> datetime | None:
        self.batches.append([name for (name, _), _ in results])
        return None

    async def release(self, items: list[Item]) -> None:
        return None

    async def next_due(self) -> datetime | None:
        return None

    @property
    def recorded(self) -> list[str]:
        return [name for batch in self.batches for name in batch]


def _calm_unless_urgent(item: Item, result: str) -> float:
    return 0.0 if result.startswith("urgent") else _CALM_SECONDS


def _pipeline(source: RecordedBatches) -> WorkPipeline[Item, str]:
    return WorkPipeline[Item, str](
        name="test", claim=source.claim, work=source.work, record=source.record,
        release=source.release, next_due=source.next_due, clock=SystemClock(),
        capacity=50, batch_size=50, max_sleep_seconds=0.05,
        logger=logging.getLogger("test"), record_linger_seconds=0.0,
        linger_for=_calm_unless_urgent,
    )


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await anyio.sleep(0.01)


@pytest.mark.slow
async def test_results_that_may_wait_go_together_and_an_urgent_one_takes_them_along() -> None:
    calm = [f"calm-{index}" for index in range(5)]
    source = RecordedBatches(calm)
    pipeline = _pipeline(source)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(functools.partial(pipeline.run, grace_seconds=1.0))
            await _until(lambda: len(source.worked) == len(calm))
            await anyio.sleep(0.3)
            assert source.batches == [], "calm results were recorded without waiting"
            assert pipeline.offer([("urgent-1", datetime.now(UTC))])
            await _until(lambda: len(source.recorded) == len(calm) + 1)
            pipeline.stop()
    # One transaction for all six, as soon as the urgent result arrived.
    assert source.batches == [[*calm, "urgent-1"]]


@pytest.mark.slow
async def test_stopping_records_lingering_results_at_once() -> None:
    source = RecordedBatches(["calm-1", "calm-2"])
    pipeline = _pipeline(source)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(functools.partial(pipeline.run, grace_seconds=5.0))
            await _until(lambda: len(source.worked) == 2)
            pipeline.stop()
    assert source.batches == [["calm-1", "calm-2"]]


def _engine(tuning: EngineTuning, now: datetime) -> Engine:
    return Engine(Settings(database_url="sqlite://", tuning=tuning), clock=ManualClock(now),
                  load_entry_points=False, worker=False)


@settings(max_examples=200)
@given(
    job=jobs(),
    status=st.sampled_from(CheckStatus),
    late=st.floats(min_value=-5, max_value=100),
    ahead=st.floats(min_value=0, max_value=5),
    not_yet_linger=st.floats(min_value=0, max_value=10),
)
def test_a_not_yet_result_never_waits_past_the_claim_of_the_next_check(
    job: Job, status: CheckStatus, late: float, ahead: float, not_yet_linger: float
) -> None:
    tuning = EngineTuning(claim_ahead_seconds=ahead, not_yet_linger_seconds=not_yet_linger)
    now = job.next_run_at + timedelta(seconds=late)
    outcome = CheckOutcome(status=status)
    linger = _engine(tuning, now)._linger_for_check(job, outcome)
    assert linger >= tuning.record_linger_seconds
    # ``ends_job`` says what the state machine does with the result.
    transition = apply_event(job, CheckResult(outcome), now)
    assert ends_job(job, outcome) is transition.job.status.is_final
    if ends_job(job, outcome):
        assert linger == tuning.record_linger_seconds  # someone waits for its message
        return
    assert linger <= max(tuning.record_linger_seconds, not_yet_linger)
    if linger > tuning.record_linger_seconds:
        # Written before the claim reaching ahead for the job's next check is due.
        step = next_interval(job, job.attempts + 1)
        next_claim = job.next_run_at + timedelta(seconds=step - tuning.claim_ahead)
        assert now + timedelta(seconds=linger) <= next_claim + timedelta(microseconds=1)
