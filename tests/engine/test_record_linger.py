"""How long a check's result waits before it is recorded with others.

A result that finishes a job carries a message someone waits for: it goes out
within ``Pacing.record_linger_seconds``. A poll that answered "not yet" is not
due again for a while, so its result may wait longer (``not_yet_linger_seconds``)
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
from circleback.core.state import CheckResult, apply_event, ends_job, next_interval
from circleback.engine.engine import Engine
from circleback.engine.pacing import Pacing
from circleback.engine.pipeline import PipelineConfig, WorkPipeline

from ..core.test_state_machine import jobs

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

    async def run_one(self, item: Item) -> str:
        self.worked.append(item[0])
        return item[0]

    def timed_out(self, item: Item) -> str:
        return "timed out"

    def due_at(self, item: Item) -> None:
        return None

    def linger_for(self, item: Item, result: str) -> float:
        return 0.0 if result.startswith("urgent") else _CALM_SECONDS

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


def _pipeline(source: RecordedBatches) -> WorkPipeline[Item, str]:
    config = PipelineConfig(capacity=50, batch_size=50, max_sleep_seconds=0.05)
    return WorkPipeline[Item, str]("test", source, config, SystemClock(), logging.getLogger("test"))


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


def _engine(pacing: Pacing, now: datetime) -> Engine:
    return Engine(Settings(database_url="sqlite://"), clock=ManualClock(now),
                  load_entry_points=False, worker=False, pacing=pacing)


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
    pacing = Pacing(claim_ahead_seconds=ahead, not_yet_linger_seconds=not_yet_linger)
    now = job.next_run_at + timedelta(seconds=late)
    outcome = CheckOutcome(status=status)
    engine = _engine(pacing, now)
    linger = engine._checks.linger_for(job, outcome)
    assert linger >= pacing.record_linger_seconds
    # ``ends_job`` says what the state machine does with the result.
    transition = apply_event(job, CheckResult(outcome), now)
    assert ends_job(job, outcome) is transition.job.status.is_final
    if ends_job(job, outcome):
        assert linger == pacing.record_linger_seconds  # someone waits for its message
        return
    assert linger <= max(pacing.record_linger_seconds, not_yet_linger)
    if linger > pacing.record_linger_seconds:
        # Written before the claim reaching ahead for the job's next check is due.
        step = next_interval(job, job.attempts + 1)
        ahead_by = pacing.claim_ahead(engine.settings.tuning)
        next_claim = job.next_run_at + timedelta(seconds=step - ahead_by)
        assert now + timedelta(seconds=linger) <= next_claim + timedelta(microseconds=1)
