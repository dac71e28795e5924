"""Claims that reach ahead, and results recorded in batches.

A worker leases the jobs falling due within its claim's reach and starts
each in memory the moment it falls due: a job is never checked early, a
cancel of a job claimed ahead means its check never runs, and a stopping
worker gives such jobs back at once. A steady trickle of due jobs is claimed
and recorded in a few statements instead of one each. Real store (SQLite,
then PostgreSQL), real engine loops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest

import circleback
from circleback import Caller, EngineTuning, JobStatus, Settings
from circleback.store.store import Store
from circleback.testing import ManualClock, TestingPlugin

from ..pacing import Pacing

POLL: dict[str, Any] = {"job_type": "scripted", "check_config": {}, "on_success_message": "ok",
                        "on_complete": "record", "interval_seconds": 5}


def _tuning(**overrides: Any) -> EngineTuning:
    values: dict[str, Any] = {
        "check_timeout_seconds": 5.0, "lease_seconds": 10.0, "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return EngineTuning(**values)


#: The store looked at every 50 ms; claims reach 1 s ahead.
_PACING = Pacing(max_sleep_seconds=0.05, claim_ahead_seconds=1.0)


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    with anyio.fail_after(10, shield=False):
        while not await condition():
            await anyio.sleep(0.01)
    assert await condition(), what


@contextlib.asynccontextmanager
async def _a_job_claimed_ahead(
    settings: Settings, caller: Caller
) -> AsyncIterator[tuple[circleback.Engine, TestingPlugin, ManualClock, circleback.Job]]:
    """A running engine holding a poll it checked once and then claimed ahead.

    The poll is checked at once when added and due again in 5 s; the clock is
    then set half a second before that, and the job is leased before it is due.
    """
    plugin = TestingPlugin()
    clock = ManualClock()
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=_PACING, clock=clock
    ) as engine:
        added = await engine.scheduler.add_job(caller, POLL)

        async def recorded() -> bool:
            return (await engine.scheduler.get_job(caller, added.id)).attempts == 1

        await _until(recorded, "the first check was recorded")
        job = await engine.scheduler.get_job(caller, added.id)
        clock.set(job.next_run_at - timedelta(seconds=0.5))

        async def leased() -> bool:
            stored = await engine.scheduler.get_job(caller, job.id)
            return stored.lease_owner == engine.worker_id

        await _until(leased, "the job was leased before it fell due")
        yield engine, plugin, clock, job


async def test_a_job_falling_due_soon_is_claimed_ahead_and_checked_only_when_due(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    async with _a_job_claimed_ahead(make_settings(tuning=_tuning()), caller) as (
        engine, plugin, clock, job
    ):
        await anyio.sleep(0.3)
        assert plugin.checker.checks == [job.id], "checked before it was due"
        clock.set(job.next_run_at)

        async def checked_again() -> bool:
            return (await engine.scheduler.get_job(caller, job.id)).attempts == 2

        await _until(checked_again, "the job was checked once due")
        stored = await engine.scheduler.get_job(caller, job.id)
    assert plugin.checker.checks == [job.id, job.id]
    assert stored.status is JobStatus.ACTIVE
    assert stored.next_run_at == job.next_run_at + timedelta(seconds=5)
    assert stored.lease_owner is None


async def test_a_job_cancelled_while_claimed_ahead_is_never_checked(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    async with _a_job_claimed_ahead(make_settings(tuning=_tuning()), caller) as (
        engine, plugin, clock, job
    ):
        cancelled = await engine.scheduler.cancel_job(caller, job.id)
        assert cancelled.status is JobStatus.CANCELLED
        clock.set(job.next_run_at + timedelta(seconds=1))
        await anyio.sleep(0.5)
        stored = await engine.scheduler.get_job(caller, job.id)
    assert plugin.checker.checks == [job.id], "a cancelled job was checked"
    assert stored.status is JobStatus.CANCELLED
    assert stored.attempts == 1


async def test_a_stopping_worker_gives_back_jobs_claimed_ahead_without_waiting_for_them(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    """The grace period is for checks in flight; a job not due yet is released at once."""
    settings = make_settings(tuning=_tuning(shutdown_grace_seconds=60.0, lease_seconds=90.0))
    with anyio.fail_after(20):
        async with _a_job_claimed_ahead(settings, caller) as (_, plugin, clock, job):
            pass
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=_PACING, worker=False,
        clock=clock,
    ) as facade:
        stored = await facade.scheduler.get_job(caller, job.id)
    assert stored.lease_owner is None and stored.lease_expires_at is None
    assert stored.status is JobStatus.ACTIVE and stored.attempts == 1
    assert plugin.checker.checks == [job.id]


class CountingStore(Store):
    """The real store, counting the claims that found jobs and the writes of results."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.claims = 0
        self.records = 0

    async def claim_due_jobs(self, *args: Any, **kwargs: Any) -> list[circleback.Job]:
        claimed = await super().claim_due_jobs(*args, **kwargs)
        self.claims += bool(claimed)
        return claimed

    async def record_outcomes(self, *args: Any, **kwargs: Any) -> Any:
        self.records += 1
        return await super().record_outcomes(*args, **kwargs)


@pytest.mark.parametrize(("ahead", "linger"), [(1.0, 0.25), (0.0, 0.0)], ids=["ahead", "due-only"])
async def test_a_steady_trickle_of_due_jobs_takes_few_claims_and_few_writes(
    make_settings: Callable[..., Settings],
    store_url: str,
    caller: Caller,
    ahead: float,
    linger: float,
) -> None:
    """60 timers falling due 25 ms apart: with a lookahead and a linger, a handful of
    claims and writes serve them all; claiming only what is due takes one claim per
    job or two (the second case shows that the counts tell the two apart)."""
    count = 60
    pacing = Pacing(max_sleep_seconds=1.0, claim_ahead_seconds=ahead,
                    record_linger_seconds=linger)
    store = CountingStore(store_url)
    plugin = TestingPlugin()
    specs = [{"job_type": "delay", "check_config": {"delay_seconds": 0.5 + 0.025 * index},
              "on_success_message": "done", "on_complete": "record"} for index in range(count)]
    try:
        async with circleback.Engine(
            make_settings(tuning=_tuning()), store=store, plugins=[plugin],
            load_entry_points=False, pacing=pacing,
        ) as engine:
            await engine.scheduler.add_jobs(caller, specs)
            with anyio.fail_after(30):
                while len(plugin.notifier.delivered) < count:
                    await anyio.sleep(0.05)
    finally:
        await store.aclose()
    assert len(plugin.notifier.delivered) == count
    if ahead:
        assert store.claims <= 8, f"{store.claims} claims"
        assert store.records <= 12, f"{store.records} writes of results"
    else:
        assert store.claims >= 20, f"only {store.claims} claims without a lookahead"
