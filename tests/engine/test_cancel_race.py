"""Cancel against a check in flight: once cancel says "cancelled", nothing is ever sent.

The real engine runs its worker loops; a checker holds each check until the test
lets it finish at a random moment around the cancel, so the check's result and
the cancel race to the database. Whichever the cancel reports is the truth: a
cancelled job never sends a message, a job that finished first sends exactly one.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import anyio

import circleback
from circleback import (
    Caller,
    Checker,
    CheckOutcome,
    Job,
    JobStatus,
    Runtime,
    Settings,
    ValidationContext,
    hookimpl,
)
from circleback.core.models import DeliveryStatus
from circleback.store.store import Store
from circleback.testing import RecordingNotifier

from ..pacing import QUICK

TRIALS = 200
AT_ONCE = 10


class RaceChecker(Checker):
    """Each check reports that it started, then waits for the test to let it finish (met)."""

    job_type = "race"

    def __init__(self) -> None:
        self.started: defaultdict[uuid.UUID, anyio.Event] = defaultdict(anyio.Event)
        self.release: defaultdict[uuid.UUID, anyio.Event] = defaultdict(anyio.Event)
        self.finished: set[uuid.UUID] = set()

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        return {"type": "object"}

    def refine_config(
        self, config: dict[str, Any], context: ValidationContext
    ) -> dict[str, Any]:
        return {}

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        self.started[job.id].set()
        await self.release[job.id].wait()
        self.finished.add(job.id)
        return CheckOutcome.met({"job": str(job.id)})


class RacePlugin:
    def __init__(self) -> None:
        self.checker = RaceChecker()
        self.notifier = RecordingNotifier()

    @hookimpl
    def circleback_register_checkers(self, register: Callable[[Checker], None]) -> None:
        register(self.checker)

    @hookimpl
    def circleback_register_notifiers(self, register: Callable[[Any], None]) -> None:
        register(self.notifier)


async def test_no_message_is_ever_sent_for_a_job_whose_cancel_won(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    plugin = RacePlugin()
    checker = plugin.checker
    rng = random.Random(4)
    reported: dict[uuid.UUID, JobStatus] = {}
    in_flight_at_cancel = 0

    async def trial(engine: circleback.Engine) -> None:
        nonlocal in_flight_at_cancel
        job = await engine.scheduler.add_job(caller, {
            "job_type": "race", "check_config": {}, "on_success_message": "done {result}",
            "on_complete": "record", "interval_seconds": 60})
        with anyio.fail_after(10):
            await checker.started[job.id].wait()  # the check is in flight now

        async def let_the_check_finish(delay: float) -> None:
            await anyio.sleep(delay)
            checker.release[job.id].set()

        async with anyio.create_task_group() as group:
            group.start_soon(let_the_check_finish, rng.uniform(0, 0.004))
            await anyio.sleep(rng.uniform(0, 0.004))
            if job.id not in checker.finished:
                in_flight_at_cancel += 1
            cancelled = await engine.scheduler.cancel_job(caller, job.id)
        reported[job.id] = cancelled.status

    async with circleback.Engine(make_settings(), plugins=[plugin],
                                 load_entry_points=False, pacing=QUICK) as engine:
        for _ in range(TRIALS // AT_ONCE):
            async with anyio.create_task_group() as group:
                for _ in range(AT_ONCE):
                    group.start_soon(trial, engine)
        with anyio.fail_after(20):
            while len(checker.finished) < TRIALS:
                await anyio.sleep(0.01)
            await engine.wait_until_idle(poll_seconds=0.02)
    # The engine has stopped: every check result is recorded or dropped, every message sent.

    store = Store(store_url)
    await store.open()
    try:
        outbox = await store.list_outbox(limit=10 * TRIALS)
    finally:
        await store.aclose()

    assert len(reported) == TRIALS
    assert in_flight_at_cancel > 0
    cancelled = {job_id for job_id, status in reported.items() if status is JobStatus.CANCELLED}
    completed = {job_id for job_id, status in reported.items() if status is JobStatus.COMPLETED}
    assert cancelled | completed == set(reported)
    sent = Counter(notification.job_id for notification in plugin.notifier.delivered)
    assert not cancelled & set(sent), "a message went out for a job whose cancel had won"
    assert not cancelled & {entry.job_id for entry in outbox}, "a cancelled job queued a message"
    assert sent == dict.fromkeys(completed, 1)
    assert all(entry.status is DeliveryStatus.SENT for entry in outbox)
