"""The real engine on a real SQLite file, driven step by step and compared with a plain model.

Hypothesis's ``RuleBasedStateMachine`` adds jobs, cancels jobs and workflows,
scripts check outcomes, moves a :class:`~circleback.testing.ManualClock`, runs the due
checks and deliveries (sometimes with a failing delivery), and after every step
compares the store and the delivered messages with a model written in plain
Python. The machine runs once on asyncio and once on trio: every async call
goes through an anyio blocking portal of that backend.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

import circleback
from circleback import Caller, CheckOutcome, JobStatus, Limits, Settings
from circleback.core.models import CheckStatus, DeliveryStatus, NotificationType, OutboxEntry
from circleback.errors import JobNotFound, WorkflowNotFound
from circleback.testing import ManualClock, TestingPlugin

from ..pacing import Pacing
from ..services import drop_postgres_schema, postgres_schema

DELIVERY_BACKOFF = 1.0
DELIVERY_BACKOFF_MAX = 8.0


@dataclass
class ModelJob:
    """What the model expects of one job and its message."""

    id: uuid.UUID
    workflow_id: uuid.UUID | None
    interval: float
    max_attempts: int
    failure_message: str | None
    status: JobStatus = JobStatus.ACTIVE
    attempts: int = 0
    next_run_at: datetime = field(default_factory=lambda: datetime.min)
    queued: deque[CheckStatus] = field(default_factory=deque)
    #: None until the job completes or fails; then "pending" until delivered, then "sent".
    outbox: str | None = None
    delivery_attempts: int = 0
    next_delivery_at: datetime | None = None
    last_check_status: CheckStatus | None = None


class EngineMachine(RuleBasedStateMachine):
    """Drives one engine; the backend is set by the subclass."""

    backend = "asyncio"
    database = "sqlite"
    job_ids = Bundle("job_ids")

    def __init__(self) -> None:
        super().__init__()
        self._stack = ExitStack()
        self._dir = Path(tempfile.mkdtemp(prefix="circleback-stateful-"))
        self._stack.callback(shutil.rmtree, self._dir, ignore_errors=True)
        self.portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self.clock = ManualClock()
        self.plugin = TestingPlugin()
        config = Settings(
            database_url=self._database_url(),
            limits=Limits(min_interval_seconds=0.01),
        )
        pacing = Pacing(
            delivery_backoff_seconds=DELIVERY_BACKOFF,
            delivery_backoff_max_seconds=DELIVERY_BACKOFF_MAX,
            delivery_max_attempts=1_000,
        )
        engine = circleback.Engine(
            config, worker=False, clock=self.clock, plugins=[self.plugin],
            load_entry_points=False, pacing=pacing,
        )
        self.engine = self._stack.enter_context(self.portal.wrap_async_context_manager(engine))
        self.caller = Caller(user_id="alice", platform="test", platform_channel_id="C1")
        self.stranger = Caller(user_id="mallory", platform="test")
        self.now = self.clock.now()
        self.model: dict[uuid.UUID, ModelJob] = {}
        self.workflows = [uuid.uuid4(), uuid.uuid4()]
        self.failures_left = 0

    def _database_url(self) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self._dir / 'circleback.db'}"
        schema, url = postgres_schema()
        self._stack.callback(drop_postgres_schema, schema)
        return url

    def teardown(self) -> None:
        self._stack.close()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an async function of the engine on the machine's event loop."""
        return self.portal.call(lambda: fn(*args, **kwargs))

    # -- rules ---------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        note(f"backend {self.backend}, clock at {self.now.isoformat()}")

    @rule(
        target=job_ids,
        interval=st.integers(min_value=1, max_value=300) | st.sampled_from([0.25, 0.5]),
        max_attempts=st.integers(min_value=1, max_value=4),
        workflow=st.sampled_from([None, 0, 1]),
        failure_message=st.none() | st.just("gave up on {job_id}: {result}"),
    )
    def add_job(
        self, interval: float, max_attempts: int, workflow: int | None,
        failure_message: str | None,
    ) -> uuid.UUID:
        workflow_id = self.workflows[workflow] if workflow is not None else None
        spec: dict[str, Any] = {
            "job_type": "scripted",
            "check_config": {"label": "stateful"},
            "on_success_message": "done {job_id}: {result}",
            "on_complete": "record",
            "interval_seconds": interval,
            "max_attempts": max_attempts,
        }
        if workflow_id is not None:
            spec["workflow_id"] = str(workflow_id)
        if failure_message is not None:
            spec["on_failure_message"] = failure_message
        job = self.call(self.engine.scheduler.add_job, self.caller, spec)
        note(f"added {job.id} every {interval} s, {max_attempts} attempts, workflow {workflow}")
        assert job.status is JobStatus.ACTIVE
        assert job.next_run_at == self.now  # a poll is checked at once
        self.model[job.id] = ModelJob(
            id=job.id, workflow_id=workflow_id, interval=float(interval),
            max_attempts=max_attempts, failure_message=failure_message, next_run_at=self.now,
        )
        return job.id  # type: ignore[no-any-return]

    @rule(job_id=job_ids, outcome=st.sampled_from(CheckStatus))
    def script_check(self, job_id: uuid.UUID, outcome: CheckStatus) -> None:
        note(f"next check of {job_id} will be {outcome.value}")
        self.plugin.checker.push(job_id, _outcome(outcome))
        self.model[job_id].queued.append(outcome)

    @rule(job_id=job_ids)
    def cancel_job(self, job_id: uuid.UUID) -> None:
        expected = self.model[job_id]
        returned = self.call(self.engine.scheduler.cancel_job, self.caller, job_id)
        note(f"cancel {job_id}: was {expected.status.value}, now {returned.status.value}")
        if expected.status is JobStatus.ACTIVE:
            expected.status = JobStatus.CANCELLED
        assert returned.status is expected.status

    @rule(job_id=job_ids)
    def stranger_cannot_cancel(self, job_id: uuid.UUID) -> None:
        note(f"another user tries to cancel {job_id}")
        with pytest.raises(JobNotFound):
            self.call(self.engine.scheduler.cancel_job, self.stranger, job_id)

    @rule(workflow=st.sampled_from([0, 1]))
    def cancel_workflow(self, workflow: int) -> None:
        workflow_id = self.workflows[workflow]
        members = [job for job in self.model.values() if job.workflow_id == workflow_id]
        note(f"cancel workflow {workflow}: {len(members)} jobs in it")
        if not members:
            with pytest.raises(WorkflowNotFound):
                self.call(self.engine.scheduler.cancel_workflow, self.caller, workflow_id)
            return
        cancelled = self.call(self.engine.scheduler.cancel_workflow, self.caller, workflow_id)
        expected = {job.id for job in members if job.status is JobStatus.ACTIVE}
        assert {job.id for job in cancelled} == expected
        for job_id in expected:
            self.model[job_id].status = JobStatus.CANCELLED

    @rule(seconds=st.integers(min_value=0, max_value=400) | st.floats(min_value=0, max_value=3))
    def advance_clock(self, seconds: float) -> None:
        note(f"advance the clock by {seconds} s")
        self.portal.call(self.clock.advance, seconds)
        self.now += timedelta(seconds=seconds)
        assert self.clock.now() == self.now

    @rule()
    def run_due_jobs(self) -> None:
        due = [
            job for job in self.model.values()
            if job.status is JobStatus.ACTIVE and job.next_run_at <= self.now
        ]
        checked = self.call(self.engine.run_due_jobs)
        note(f"run due jobs: {checked} checked, model expected {len(due)}")
        assert checked == len(due)
        for job in due:
            outcome = job.queued.popleft() if job.queued else CheckStatus.NOT_YET
            job.last_check_status = outcome
            job.attempts = min(job.attempts + 1, job.max_attempts)
            if outcome is CheckStatus.MET:
                self._finish(job, JobStatus.COMPLETED)
            elif outcome is CheckStatus.FAILED or job.attempts >= job.max_attempts:
                self._finish(job, JobStatus.FAILED)
            else:
                step = timedelta(seconds=job.interval)
                following = job.next_run_at + step
                job.next_run_at = following if following > self.now else self.now + step

    def _finish(self, job: ModelJob, status: JobStatus) -> None:
        job.status = status
        job.outbox = "pending"
        job.next_delivery_at = self.now

    @rule(failures=st.integers(min_value=1, max_value=2))
    def fail_next_deliveries(self, failures: int) -> None:
        note(f"the next {failures} deliveries will fail")
        self.plugin.notifier.failures_left += failures
        self.failures_left += failures

    @rule()
    def deliver_due(self) -> None:
        due = [
            job for job in self.model.values()
            if job.outbox == "pending"
            and job.next_delivery_at is not None
            and job.next_delivery_at <= self.now
        ]
        before = {job_id: len(sent) for job_id, sent in self.plugin.notifier.by_job().items()}
        attempted = self.call(self.engine.deliver_due)
        after = {job_id: len(sent) for job_id, sent in self.plugin.notifier.by_job().items()}
        delivered = {job_id for job_id, count in after.items() if count > before.get(job_id, 0)}
        failing = min(self.failures_left, len(due))
        note(f"deliver: {attempted} attempted, {len(delivered)} delivered, {failing} to fail")
        assert attempted == len(due)
        # Which of the due messages the failures hit depends on task order; how many does not.
        assert delivered <= {job.id for job in due}
        assert len(delivered) == len(due) - failing
        self.failures_left -= failing
        assert self.plugin.notifier.failures_left == self.failures_left
        for job in due:
            job.delivery_attempts += 1
            if job.id in delivered:
                job.outbox = "sent"
            else:
                delay = min(DELIVERY_BACKOFF_MAX,
                            DELIVERY_BACKOFF * 2 ** (job.delivery_attempts - 1))
                job.next_delivery_at = self.now + timedelta(seconds=delay)

    # -- the comparison after every step -------------------------------------------------------

    async def _observe(self) -> dict[str, Any]:
        store = self.engine.store
        return {
            "jobs": await self.engine.scheduler.list_jobs(self.caller),
            "strangers_jobs": await self.engine.scheduler.list_jobs(self.stranger),
            "outbox": await store.list_outbox(limit=10_000),
            "unfinished": await store.count_unfinished(),
            "next_due": await store.next_due_time(),
        }

    @invariant()
    def store_matches_the_model(self) -> None:
        seen = self.portal.call(self._observe)
        self._check_jobs(seen["jobs"])
        assert seen["strangers_jobs"] == []
        self._check_messages(seen["outbox"])
        active = [job for job in self.model.values() if job.status is JobStatus.ACTIVE]
        pending = sum(job.outbox == "pending" for job in self.model.values())
        assert seen["unfinished"] == (len(active), pending)
        earliest = min((job.next_run_at for job in active), default=None)
        assert seen["next_due"] == earliest

    def _check_jobs(self, jobs: list[circleback.Job]) -> None:
        stored = {job.id: job for job in jobs}
        assert set(stored) == set(self.model)
        for job_id, expected in self.model.items():
            job = stored[job_id]
            assert job.status is expected.status, job_id
            assert job.attempts == expected.attempts, job_id
            assert job.attempts <= job.max_attempts
            assert job.lease_owner is None and job.lease_expires_at is None
            if expected.status is JobStatus.ACTIVE:
                assert job.next_run_at == expected.next_run_at, job_id
                assert job.completed_at is None
            else:
                assert job.completed_at is not None

    def _check_messages(self, entries: list[OutboxEntry]) -> None:
        """Exactly one message per completed or failed job, delivered once; none otherwise."""
        by_job = {entry.job_id: entry for entry in entries}
        assert len(by_job) == len(entries)  # never two messages for one job
        delivered = self.plugin.notifier.by_job()
        assert set(delivered) <= set(self.model)
        for job_id, expected in self.model.items():
            sent = delivered.get(job_id, [])
            if expected.outbox is None:
                assert job_id not in by_job, job_id
                assert sent == [], job_id
                continue
            entry = by_job[job_id]
            assert entry.attempts == expected.delivery_attempts
            if expected.outbox == "pending":
                assert entry.status is DeliveryStatus.PENDING
                assert entry.next_attempt_at == expected.next_delivery_at
                assert sent == []
                continue
            assert entry.status is DeliveryStatus.SENT
            [notification] = sent
            assert notification.notification_id == entry.id
            assert notification.status is expected.status
            assert notification.user_id == "alice"
            assert notification.platform_channel_id == "C1"
            if expected.status is JobStatus.COMPLETED:
                assert notification.type is NotificationType.JOB_COMPLETED
                assert notification.message.startswith(f"done {job_id}: ")
            else:
                assert notification.type is NotificationType.JOB_FAILED
                if expected.failure_message:
                    assert notification.message.startswith(f"gave up on {job_id}: ")
                else:
                    assert "Stopped watching" in notification.message


def _outcome(status: CheckStatus) -> CheckOutcome:
    if status is CheckStatus.MET:
        return CheckOutcome.met({"build": "green"})
    if status is CheckStatus.FAILED:
        return CheckOutcome.failed("build broke", {"build": "red"})
    return CheckOutcome.not_yet("still running")


_SETTINGS = settings(
    max_examples=8,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class AsyncioEngineMachine(EngineMachine):
    backend = "asyncio"


class TrioEngineMachine(EngineMachine):
    backend = "trio"


class AsyncioPostgresEngineMachine(EngineMachine):
    backend = "asyncio"
    database = "postgresql"


class TrioPostgresEngineMachine(EngineMachine):
    backend = "trio"
    database = "postgresql"


TestEngineOnAsyncio = AsyncioEngineMachine.TestCase
TestEngineOnAsyncio.settings = _SETTINGS
TestEngineOnTrio = TrioEngineMachine.TestCase
TestEngineOnTrio.settings = _SETTINGS
TestEngineOnAsyncioPostgres = pytest.mark.postgres(AsyncioPostgresEngineMachine.TestCase)
TestEngineOnAsyncioPostgres.settings = _SETTINGS
TestEngineOnTrioPostgres = pytest.mark.postgres(TrioPostgresEngineMachine.TestCase)
TestEngineOnTrioPostgres.settings = _SETTINGS
