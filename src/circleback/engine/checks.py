"""The check loop's work: claim due jobs, run their checks, record the outcomes.

A finished job's message is written in the same transaction as its outcome,
already leased to this worker, and handed straight to the delivery loop
while it has room (no claim, no second read of what was just written).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from ..core.abc import Runtime
from ..core.clock import Clock
from ..core.models import CheckOutcome, CheckStatus, DeliveryUpdate, Job, JobStatus, OutboxEntry
from ..core.settings import Settings
from ..core.state import CheckResult, apply_event, ends_job, next_interval
from ..store.store import Store
from .pacing import Pacing
from .pipeline import WorkPipeline


def job_fields(job: Job) -> dict[str, str | None]:
    """A job's ids as a log record's extra fields (``--log-format json`` writes them out)."""
    return {
        "job_id": str(job.id),
        "workflow_id": str(job.workflow_id) if job.workflow_id else None,
        "user_id": job.user_id,
    }

__all__ = ["Checks"]

#: Largest JSON text of a check result kept with the job and its message.
_MAX_STORED_RESULT_CHARS = 16_384
#: Strings this short fit the limit however JSON escapes them (12 characters at most each).
_SHORT_TEXT_CHARS = (_MAX_STORED_RESULT_CHARS - 2) // 12
_EXACT_INT = 10**15
#: Check results turned into transitions between two turns given to other tasks.
_TRANSITIONS_BETWEEN_TURNS = 64


def _storable(value: Any) -> Any:
    """``value`` as JSON data of bounded size (opaque objects become their type name)."""
    kind = type(value)
    if value is None or kind is bool or (kind is int and -_EXACT_INT < value < _EXACT_INT):
        return value  # already its own JSON form: skip the round trip
    if kind is str and len(value) <= _SHORT_TEXT_CHARS:
        return value
    try:
        text = json.dumps(value, default=lambda obj: f"<{type(obj).__name__}>")
    except (TypeError, ValueError, RecursionError):
        return f"<unserialisable {type(value).__name__}>"
    if len(text) > _MAX_STORED_RESULT_CHARS:
        return text[:_MAX_STORED_RESULT_CHARS] + "…[cut]"
    return json.loads(text)


class Checks:
    """Due jobs as the check pipeline's work (a :class:`~.pipeline.WorkSource`)."""

    def __init__(
        self,
        *,
        store: Store,
        worker_id: str,
        clock: Clock,
        settings: Settings,
        pacing: Pacing,
        runtime: Callable[[], Runtime],
        deliveries: WorkPipeline[OutboxEntry, DeliveryUpdate],
        delivery_lease_seconds: float,
        logger: logging.Logger,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._clock = clock
        self._runtime = runtime
        self._deliveries = deliveries
        self._delivery_lease = delivery_lease_seconds
        self._log = logger
        tuning = settings.tuning
        self._lease = tuning.lease_seconds
        self._timeout = tuning.check_timeout_seconds
        self._result_limit = settings.limits.max_result_chars
        self._linger = pacing.record_linger_seconds
        self._not_yet_linger = pacing.not_yet_linger_seconds
        self._claim_ahead = pacing.claim_ahead(tuning)

    async def claim(self, limit: int, ahead_seconds: float) -> list[Job]:
        now = self._clock.now()
        return await self._store.claim_due_jobs(
            self._worker_id, now, limit=limit, lease_seconds=self._lease,
            due_by=now + timedelta(seconds=ahead_seconds),
        )

    def due_at(self, job: Job) -> datetime:
        return job.next_run_at

    async def run_one(self, job: Job) -> CheckOutcome:
        """Run the job's check (the pipeline cuts it off at its time limit)."""
        runtime = self._runtime()
        checker = runtime.plugins.checkers.get(job.job_type)
        if checker is None:
            return CheckOutcome.not_yet(f"no checker is installed for job type {job.job_type!r}")
        try:
            outcome = await checker.check(job, runtime)
        except Exception as exc:
            self._log.debug("check of job %s raised", job.id, exc_info=True)
            return CheckOutcome.not_yet(f"the check failed: {type(exc).__name__}: {exc}"[:1000])
        if not isinstance(outcome, CheckOutcome):
            return CheckOutcome.not_yet(
                f"checker {job.job_type!r} returned {type(outcome).__name__}, not a CheckOutcome"
            )
        self._log.debug("check of job %s (%s), attempt %d: %s", job.id, job.job_type,
                        job.attempts + 1, outcome.status.value, extra=job_fields(job))
        result = _storable(outcome.result)
        error = outcome.error[:2000] if outcome.error else None
        if result is outcome.result and error is outcome.error:
            return outcome
        return attrs.evolve(outcome, result=result, error=error)

    def timed_out(self, job: Job) -> CheckOutcome:
        """The outcome of a check cut off at its time limit."""
        return CheckOutcome.not_yet(f"the check took longer than {self._timeout:g} s")

    def linger_for(self, job: Job, outcome: CheckOutcome) -> float:
        """How long a check's result may wait to be recorded with others.

        A result that finishes the job has a message someone waits for. One that
        leaves the job waiting may wait longer, but must be written before the
        claim that would take the job's next check: until then the job is still
        leased here, and that claim would miss it.
        """
        if ends_job(job, outcome) or self._not_yet_linger <= self._linger:
            return self._linger
        step = next_interval(job, job.attempts + 1)
        until_claim = (job.next_run_at - self._clock.now()).total_seconds() + step
        until_claim -= self._claim_ahead
        return max(self._linger, min(self._not_yet_linger, until_claim))

    async def record(self, results: list[tuple[Job, CheckOutcome]]) -> datetime | None:
        """Record check outcomes; returns when the earliest job still waiting is due again."""
        now = self._clock.now()
        checkers = self._runtime().plugins.checkers
        transitions = []
        for done, (job, outcome) in enumerate(results, 1):
            if done % _TRANSITIONS_BETWEEN_TURNS == 0:
                # Let checks falling due meanwhile start: a large batch takes milliseconds.
                await anyio.lowlevel.checkpoint()
            description = None
            # What the job watches, for a default failure message: only a failure needs it.
            if outcome.status is not CheckStatus.MET and ends_job(job, outcome):
                checker = checkers.get(job.job_type)
                description = checker.describe(job.check_config) if checker else None
            transitions.append(
                (job, apply_event(job, CheckResult(outcome), now, description=description,
                                  result_limit=self._result_limit))
            )
        # Messages go straight to this worker's deliverer, leased to it, while it has room;
        # the rest wait in the outbox for a claim.
        deliveries = self._deliveries
        applied, leased = await self._store.record_outcomes(
            self._worker_id, transitions, now,
            lease_limit=deliveries.room(), lease_seconds=self._delivery_lease,
        )
        if leased and not deliveries.offer(leased):
            await self._store.release_deliveries(self._worker_id, leased)
        messages = sum(1 for job, t in transitions if t.message is not None and job.id in applied)
        if messages > len(leased):
            deliveries.wake()
        for job, transition in transitions:
            if job.id in applied and transition.job.status is not JobStatus.ACTIVE:
                self._log_finished(transition.job)
        lost = len(results) - len(applied)
        if lost:
            self._log.info("%d check results were dropped: cancelled or lease lost meanwhile", lost)
        waiting = [
            t.job.next_run_at
            for job, t in transitions
            if job.id in applied and t.job.status is JobStatus.ACTIVE
        ]
        return min(waiting, default=None)

    def _log_finished(self, job: Job) -> None:
        """One INFO line per finished job: what it was, how it ended, how long it ran."""
        ran = ((job.completed_at or self._clock.now()) - job.created_at).total_seconds()
        self._log.info(
            "job %s (%s) %s after %d of %d attempts, %.1f s after it was added%s",
            job.id, job.job_type, job.status.value, job.attempts, job.max_attempts, ran,
            f": {job.last_error[:200]}" if job.status is not JobStatus.COMPLETED
            and job.last_error else "",
            extra=job_fields(job),
        )

    async def release(self, jobs: list[Job]) -> None:
        if jobs:
            await self._store.release_jobs(self._worker_id, jobs)

    async def next_due(self) -> datetime | None:
        return await self._store.next_due_time()
