"""The records circleback deals in: callers, job specs, jobs, check outcomes, notifications.

All of them are frozen attrs classes: a change is a new value, which keeps the
state machine a pure function and makes sharing between tasks safe.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "Caller",
    "CheckOutcome",
    "CheckStatus",
    "DeliveryStatus",
    "DeliveryUpdate",
    "Job",
    "JobSpec",
    "JobStatus",
    "Notification",
    "NotificationType",
    "OutboxEntry",
    "WorkerInfo",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its life. ``active`` is the only state that can change."""

    #: Waiting for its next check, or being checked right now.
    ACTIVE = "active"
    #: The condition was met; the success message was queued.
    COMPLETED = "completed"
    #: Attempts ran out, or the check reported a definite failure; the failure message was queued.
    FAILED = "failed"
    #: Cancelled by its user; nothing was queued.
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for the three end states, which nothing leaves."""
        return self is not JobStatus.ACTIVE


class CheckStatus(enum.StrEnum):
    """What one check of a job's condition found."""

    #: The condition holds: the job completes.
    MET = "met"
    #: Not yet (or the check could not tell): try again after the interval.
    NOT_YET = "not_yet"
    #: The watched thing failed for good (for example a build that failed): the job fails now.
    FAILED = "failed"


class NotificationType(enum.StrEnum):
    """The ``type`` field of a notification."""

    JOB_COMPLETED = "scheduler.job_completed"
    JOB_FAILED = "scheduler.job_failed"


class DeliveryStatus(enum.StrEnum):
    """Where an outbox entry is in its delivery."""

    #: Not delivered yet; the deliverer will (re)try it at ``next_attempt_at``.
    PENDING = "pending"
    #: Handed over to its completion mode.
    SENT = "sent"
    #: The retry budget ran out; kept for operators to inspect.
    DEAD = "dead"


@attrs.frozen(kw_only=True)
class Caller:
    """Who asked: injected by the orchestrator, never taken from an LLM's arguments."""

    user_id: str
    platform: str
    platform_channel_id: str | None = None
    platform_thread_id: str | None = None
    conversation_id: str | None = None


@attrs.frozen(kw_only=True)
class JobSpec:
    """A validated request for a new job (made by ``Rulebook.job_spec``)."""

    job_type: str
    check_config: dict[str, Any]
    on_success_message: str
    on_failure_message: str | None = None
    on_complete: str = "notify"
    workflow_id: uuid.UUID | None = None
    interval_seconds: float = 30.0
    max_attempts: int = 120
    #: Multiply the interval by this after every unmet check (1.0: fixed interval).
    backoff: float = 1.0
    #: Upper bound of the backed-off interval; ``None``: no bound beyond the engine's limit.
    max_interval_seconds: float | None = None


@attrs.frozen(kw_only=True)
class Job:
    """A stored job as the store and the engine see it."""

    id: uuid.UUID
    user_id: str
    platform: str
    platform_channel_id: str | None
    platform_thread_id: str | None
    conversation_id: str | None
    job_type: str
    check_config: dict[str, Any]
    on_complete: str
    workflow_id: uuid.UUID | None
    interval_seconds: float
    max_attempts: int
    backoff: float
    max_interval_seconds: float | None
    on_success_message: str
    on_failure_message: str | None
    status: JobStatus
    attempts: int
    next_run_at: datetime
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    last_result: Any = None
    last_error: str | None = None
    last_checked_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    #: Fencing token: bumped by every claim, checked by every write of the claimant.
    lease_token: int = 0

    @property
    def caller(self) -> Caller:
        """The context the job was created in; checks and messages act as this caller."""
        return Caller(
            user_id=self.user_id,
            platform=self.platform,
            platform_channel_id=self.platform_channel_id,
            platform_thread_id=self.platform_thread_id,
            conversation_id=self.conversation_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """The job as plain JSON-able data (ids and times as strings, no lease internals)."""
        return {
            "id": str(self.id),
            "job_type": self.job_type,
            "status": self.status.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "interval_seconds": self.interval_seconds,
            "check_config": self.check_config,
            "on_complete": self.on_complete,
            "workflow_id": str(self.workflow_id) if self.workflow_id else None,
            "on_success_message": self.on_success_message,
            "on_failure_message": self.on_failure_message,
            "next_run_at": self.next_run_at.isoformat() if self.status.value == "active" else None,
            "created_at": self.created_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "last_checked_at": self.last_checked_at.isoformat() if self.last_checked_at else None,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "user_id": self.user_id,
            "platform": self.platform,
            "platform_channel_id": self.platform_channel_id,
            "platform_thread_id": self.platform_thread_id,
            "conversation_id": self.conversation_id,
        }


@attrs.frozen(kw_only=True)
class CheckOutcome:
    """What a checker reports for one check.

    ``result`` is JSON-able data shown to the user through ``{result}``;
    ``error`` says why a check was not met (kept as the job's ``last_error``).
    """

    status: CheckStatus
    result: Any = None
    error: str | None = None

    @classmethod
    def met(cls, result: Any = None) -> CheckOutcome:
        """The condition holds."""
        return cls(status=CheckStatus.MET, result=result)

    @classmethod
    def not_yet(cls, error: str | None = None, result: Any = None) -> CheckOutcome:
        """Not yet; ``error`` says what was seen instead."""
        return cls(status=CheckStatus.NOT_YET, result=result, error=error)

    @classmethod
    def failed(cls, error: str, result: Any = None) -> CheckOutcome:
        """The watched thing failed for good: end the job now."""
        return cls(status=CheckStatus.FAILED, result=result, error=error)


@attrs.frozen(kw_only=True)
class Notification:
    """The message a finished job sends; its JSON form is the wire format."""

    notification_id: uuid.UUID
    type: NotificationType
    job_id: uuid.UUID
    workflow_id: uuid.UUID | None
    status: JobStatus
    message: str
    user_id: str
    platform: str
    platform_channel_id: str | None
    platform_thread_id: str | None
    conversation_id: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON object (see the README, "Notification payload")."""
        return {
            "type": self.type.value,
            "notification_id": str(self.notification_id),
            "job_id": str(self.job_id),
            "workflow_id": str(self.workflow_id) if self.workflow_id else None,
            "status": self.status.value,
            "message": self.message,
            "user_id": self.user_id,
            "platform": self.platform,
            "platform_channel_id": self.platform_channel_id,
            "platform_thread_id": self.platform_thread_id,
            "conversation_id": self.conversation_id,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        """Rebuild a notification from :meth:`to_dict` output."""
        workflow = data.get("workflow_id")
        return cls(
            notification_id=uuid.UUID(data["notification_id"]),
            type=NotificationType(data["type"]),
            job_id=uuid.UUID(data["job_id"]),
            workflow_id=uuid.UUID(workflow) if workflow else None,
            status=JobStatus(data["status"]),
            message=data["message"],
            user_id=data["user_id"],
            platform=data["platform"],
            platform_channel_id=data.get("platform_channel_id"),
            platform_thread_id=data.get("platform_thread_id"),
            conversation_id=data.get("conversation_id"),
            created_at=datetime.fromisoformat(data["created_at"]),
        )


@attrs.frozen(kw_only=True)
class OutboxEntry:
    """A queued message of a finished job, one per job."""

    id: uuid.UUID
    job_id: uuid.UUID
    on_complete: str
    notification: Notification
    #: The check result, for completion modes that pass it on in a structured form.
    result: Any
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None = None
    last_error: str | None = None
    #: Which completion mode finally carried it (differs from ``on_complete`` after a fallback).
    delivered_via: str | None = None
    #: Free text from the completion mode, for example why it fell back.
    delivery_note: str | None = None
    lease_token: int = 0


@attrs.frozen(kw_only=True)
class DeliveryUpdate:
    """What became of one delivery attempt of an outbox entry."""

    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    sent_at: datetime | None = None
    last_error: str | None = None
    delivered_via: str | None = None
    delivery_note: str | None = None


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """A worker process as operators see it."""

    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    jobs_held: int
    deliveries_held: int
