"""The facade every front end shares: add, list, show and cancel jobs for one caller.

Every verb is scoped to the caller's ``user_id``: another user's job does not
exist for the caller (listing shows none, cancelling answers "not found").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..core.clock import Clock
from ..core.errors import JobNotFound, ValidationError, WorkflowNotFound
from ..core.models import Caller, Job, JobSpec, JobStatus
from ..core.registry import PluginRegistry
from ..core.rulebook import Rulebook
from ..core.settings import Settings
from ..core.validation import parse_uuid, validate_caller
from ..store.store import Store

__all__ = ["Scheduler"]


class Scheduler:
    """Add, list and cancel jobs on behalf of a caller (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        plugins: PluginRegistry,
        settings: Settings,
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
        on_cancel: Callable[[list[Job]], None] = lambda jobs: None,
    ) -> None:
        self._store = store
        self._plugins = plugins
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._on_cancel = on_cancel
        self._rulebook = Rulebook(plugins, settings)

    @property
    def rulebook(self) -> Rulebook:
        """The rules every verb's arguments are checked by (and the schemas they publish)."""
        return self._rulebook

    def validate(self, spec: JobSpec | Mapping[str, Any]) -> JobSpec:
        """Check a job request without storing it; raises :class:`~circleback.ValidationError`."""
        if isinstance(spec, JobSpec):
            spec = _as_arguments(spec)
        return self._rulebook.job_spec(spec)

    async def add_job(self, caller: Caller, spec: JobSpec | Mapping[str, Any]) -> Job:
        """Validate ``spec``, store it as a new active job of ``caller`` and return it.

        Nothing is written when validation fails. The first check is due at
        once for polls, after ``delay_seconds`` for a delay.
        """
        [job] = await self.add_jobs(caller, [spec])
        return job

    async def add_jobs(
        self, caller: Caller, specs: Sequence[JobSpec | Mapping[str, Any]]
    ) -> list[Job]:
        """Add several jobs of ``caller`` in one transaction: all of them, or none.

        Every spec is validated first; the first bad one raises
        :class:`~circleback.ValidationError` (its field prefixed with the spec's
        index, as in ``2.interval_seconds``, when there are several) and nothing is written.
        """
        validate_caller(caller)
        valid_specs = []
        for index, spec in enumerate(specs):
            try:
                valid_specs.append(self.validate(spec))
            except ValidationError as exc:
                if len(specs) == 1:
                    raise
                raise ValidationError(f"{index}.{exc.field}", exc.reason) from None
        now = self._clock.now()
        new_jobs = [self._new_job(caller, valid, now) for valid in valid_specs]
        if new_jobs:
            await self._store.insert_jobs(
                new_jobs, max_active_per_user=self._settings.limits.max_active_jobs_per_user
            )
            self._on_change()
        return new_jobs

    def _new_job(self, caller: Caller, valid: JobSpec, now: datetime) -> Job:
        delay = self._plugins.checker(valid.job_type).first_check_delay(valid.check_config)
        return Job(
            id=uuid.uuid4(),
            user_id=caller.user_id,
            platform=caller.platform,
            platform_channel_id=caller.platform_channel_id,
            platform_thread_id=caller.platform_thread_id,
            conversation_id=caller.conversation_id,
            job_type=valid.job_type,
            check_config=valid.check_config,
            on_complete=valid.on_complete,
            workflow_id=valid.workflow_id,
            interval_seconds=valid.interval_seconds,
            max_attempts=valid.max_attempts,
            backoff=valid.backoff,
            max_interval_seconds=valid.max_interval_seconds,
            on_success_message=valid.on_success_message,
            on_failure_message=valid.on_failure_message,
            status=JobStatus.ACTIVE,
            attempts=0,
            next_run_at=now + timedelta(seconds=delay),
            created_at=now,
            updated_at=now,
        )

    async def list_jobs(
        self,
        caller: Caller,
        *,
        status: JobStatus | str | None = None,
        workflow_id: uuid.UUID | str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """The caller's jobs, newest first, optionally only those with ``status``."""
        validate_caller(caller)
        if status is not None and not isinstance(status, JobStatus):
            try:
                status = JobStatus(status)
            except ValueError:
                known = ", ".join(member.value for member in JobStatus)
                raise ValidationError("status_filter", f"must be one of {known}") from None
        workflow = parse_uuid(workflow_id, "workflow_id") if workflow_id is not None else None
        most = self._settings.limits.max_list_results
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValidationError("limit", "must be a positive integer")
        return await self._store.list_jobs(
            caller.user_id, status=status, workflow_id=workflow, limit=min(limit or most, most)
        )

    async def get_job(self, caller: Caller, job_id: uuid.UUID | str) -> Job:
        """The caller's job ``job_id``; :class:`~circleback.errors.JobNotFound` otherwise."""
        validate_caller(caller)
        parsed = parse_uuid(job_id, "job_id")
        job = await self._store.get_job(caller.user_id, parsed)
        if job is None:
            raise JobNotFound(parsed)
        return job

    async def cancel_job(self, caller: Caller, job_id: uuid.UUID | str) -> Job:
        """Cancel the caller's job and return it.

        A job that had already finished is returned unchanged (its status tells);
        cancelling twice changes nothing. Another user's job raises
        :class:`~circleback.errors.JobNotFound`, like a job that never existed.
        """
        validate_caller(caller)
        parsed = parse_uuid(job_id, "job_id")
        cancelled, untouched = await self._store.cancel_jobs(
            caller.user_id, self._clock.now(), job_id=parsed
        )
        if cancelled:
            self._on_cancel(cancelled)
            self._on_change()
            return cancelled[0]
        if untouched:
            return untouched[0]
        raise JobNotFound(parsed)

    async def cancel_workflow(self, caller: Caller, workflow_id: uuid.UUID | str) -> list[Job]:
        """Cancel every active job of the caller in ``workflow_id``; returns those cancelled.

        Raises :class:`~circleback.errors.WorkflowNotFound` when the caller has no job in it at all.
        """
        validate_caller(caller)
        parsed = parse_uuid(workflow_id, "workflow_id")
        cancelled, untouched = await self._store.cancel_jobs(
            caller.user_id, self._clock.now(), workflow_id=parsed
        )
        if cancelled:
            self._on_cancel(cancelled)
            self._on_change()
        elif not untouched:
            raise WorkflowNotFound(parsed)
        return cancelled


def _as_arguments(spec: JobSpec) -> dict[str, Any]:
    """A :class:`JobSpec` as add_job's arguments, so it is checked like any other."""
    return {
        "job_type": spec.job_type,
        "check_config": spec.check_config,
        "on_success_message": spec.on_success_message,
        "on_failure_message": spec.on_failure_message,
        "on_complete": spec.on_complete,
        "workflow_id": str(spec.workflow_id) if spec.workflow_id else None,
        "interval_seconds": spec.interval_seconds,
        "max_attempts": spec.max_attempts,
        "backoff": spec.backoff,
        "max_interval_seconds": spec.max_interval_seconds,
    }
