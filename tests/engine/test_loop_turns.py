"""A large batch of results is recorded without holding the event loop for its whole length.

Turning hundreds of check results into transitions and writing them takes
milliseconds of Python; checks falling due meanwhile must get their turn. The
engine gives other tasks a turn between groups of transitions, and the store
writes a batch's rows in slices, each slice a call to the driver (while the
driver works, other tasks run).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy as sa

import circleback
from circleback import Caller, CheckOutcome, Job, Limits, Runtime, Settings
from circleback.core.state import Transition
from circleback.engine.checks import _TRANSITIONS_BETWEEN_TURNS
from circleback.store.sql import _MANY_SLICE
from circleback.store.store import Store
from circleback.testing import ScriptedChecker, TestingPlugin

from ..pacing import QUICK

_OUTBOX_INSERT = "insert into circleback_outbox"
#: Enough jobs for several turns and several slices.
_JOBS = max(3 * _TRANSITIONS_BETWEEN_TURNS, 2 * _MANY_SLICE) + 7


@pytest.fixture(autouse=True)
def quick_gil_handoffs() -> Iterator[None]:
    """Let the store's worker threads (trio's driver) take the GIL from a spinning loop quickly.

    SQLite and psycopg give up the GIL around each step of a statement; taking
    it back from the ticker's busy loop waits out the switch interval (5 ms by
    default) every time, which made the trio runs take seconds.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class Ticker:
    """A task that counts its own turns on the event loop, from the first check on.

    Spinning from the start would only slow the test (see :func:`quick_gil_handoffs`).
    """

    def __init__(self) -> None:
        self.turns = 0
        self.checks_started = anyio.Event()

    async def run(self) -> None:
        await self.checks_started.wait()
        while True:
            self.turns += 1
            await anyio.lowlevel.checkpoint()


class TickingChecker(ScriptedChecker):
    """Met at once; notes the ticker's turns when the last check ran."""

    def __init__(self, ticker: Ticker) -> None:
        super().__init__()
        self.ticker = ticker
        self.default = CheckOutcome.met("ready")
        self.turns_at_last_check = 0

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        self.ticker.checks_started.set()
        self.turns_at_last_check = self.ticker.turns
        return await super().check(job, runtime)


class NotingStore(Store):
    """The store, noting the ticker's turns when a recording reaches it."""

    def __init__(self, url: str, ticker: Ticker) -> None:
        super().__init__(url)
        self.ticker = ticker
        self.turns_at_record: int | None = None

    async def record_outcomes(
        self,
        worker_id: str,
        transitions: Sequence[tuple[Job, Transition]],
        now: datetime,
        *,
        lease_limit: int = 0,
        lease_seconds: float = 0.0,
    ) -> tuple[set[Any], list[Any]]:
        self.turns_at_record = self.ticker.turns
        return await super().record_outcomes(
            worker_id, transitions, now, lease_limit=lease_limit, lease_seconds=lease_seconds
        )


async def _add(engine: circleback.Engine, caller: Caller, count: int) -> None:
    spec = {"job_type": "scripted", "check_config": {}, "on_success_message": "ok",
            "on_complete": "record"}
    await engine.scheduler.add_jobs(caller, [spec] * count)


def _settings(make_settings: Callable[..., Settings], store_url: str) -> Settings:
    return make_settings(database_url=store_url,
                         limits=Limits(max_active_jobs_per_user=10 * _JOBS))


async def test_turning_many_results_into_transitions_lets_other_tasks_run(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    ticker = Ticker()
    plugin = TestingPlugin()
    checker = plugin.checker = TickingChecker(ticker)
    store = NotingStore(store_url, ticker)
    settings = _settings(make_settings, store_url)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(ticker.run)
            async with circleback.Engine(
                settings, store=store, plugins=[plugin], load_entry_points=False,
                pacing=QUICK, worker=False,
            ) as engine:
                await _add(engine, caller, _JOBS)
                with anyio.fail_after(30):
                    assert await engine.run_due_jobs() == _JOBS
            group.cancel_scope.cancel()
    finally:
        await store.aclose()
    assert store.turns_at_record is not None
    turns = store.turns_at_record - checker.turns_at_last_check
    # Without the turns, the ticker got none from the last check to the store.
    assert turns >= _JOBS // _TRANSITIONS_BETWEEN_TURNS, turns


async def test_a_large_batch_of_rows_reaches_the_driver_in_slices(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    plugin = TestingPlugin()
    plugin.checker.default = CheckOutcome.met("ready")
    settings = _settings(make_settings, store_url)
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=QUICK, worker=False
    ) as engine:
        await _add(engine, caller, _JOBS)
        calls: list[int] = []

        def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
                 executemany: bool) -> None:
            if executemany and statement.lower().lstrip().startswith(_OUTBOX_INSERT):
                calls.append(len(params))

        sync_engine = engine.store.runner.sync_engine
        sa.event.listen(sync_engine, "before_cursor_execute", note)
        try:
            with anyio.fail_after(30):
                assert await engine.run_due_jobs() == _JOBS
        finally:
            sa.event.remove(sync_engine, "before_cursor_execute", note)
    assert sum(calls) == _JOBS  # every message written, in slices of at most _MANY_SLICE
    assert max(calls) <= _MANY_SLICE
    assert len(calls) == -(-_JOBS // _MANY_SLICE)
