"""Rows and records: how jobs and outbox entries are read from and written to their tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa

from ..core.models import DeliveryStatus, Job, JobStatus, Notification, OutboxEntry
from ..core.state import Transition

__all__ = [
    "entry_from_row",
    "job_from_row",
    "job_values",
    "jobs_from_rows",
    "outbox_row",
]

_PENDING = DeliveryStatus.PENDING.value


def job_from_row(row: sa.RowMapping) -> Job:
    values = dict(row)
    values["status"] = JobStatus(values["status"])
    return Job(**values)


_JOB_STATUSES = {status.value: status for status in JobStatus}
_JOB_FIELDS = tuple(field.name for field in attrs.fields(Job))


def jobs_from_rows(result: sa.CursorResult[Any]) -> list[Job]:
    """Jobs from a result of whole job rows, by position when the columns are in model order.

    The claim builds hundreds of jobs per batch; pairing names with row values
    skips building a row mapping per row (the table's columns are the fields of
    :class:`Job`, in order).
    """
    if tuple(result.keys()) != _JOB_FIELDS:
        return [job_from_row(row) for row in result.mappings()]
    claimed = []
    for row in result:
        values = dict(zip(_JOB_FIELDS, row, strict=True))
        values["status"] = _JOB_STATUSES[values["status"]]
        claimed.append(Job(**values))
    return claimed


def entry_from_row(row: sa.RowMapping) -> OutboxEntry:
    values = dict(row)
    for private in ("lease_owner", "lease_expires_at"):
        values.pop(private)
    values["status"] = DeliveryStatus(values["status"])
    values["notification"] = Notification.from_dict(values.pop("payload"))
    return OutboxEntry(**values)


def job_values(job: Job) -> dict[str, Any]:
    values = attrs.asdict(job, recurse=False)
    values["status"] = job.status.value
    return values


def outbox_row(
    transition: Transition, now: datetime, lease: tuple[str, datetime] | None
) -> tuple[dict[str, Any], OutboxEntry | None]:
    """The outbox row of a finishing transition; leased to ``lease`` (owner, expiry) if given,
    with the entry that row reads back as (``None`` when not leased: nobody holds it yet)."""
    job, message = transition.job, transition.message
    assert message is not None
    notification = Notification(
        notification_id=uuid.uuid4(),
        type=message.type,
        job_id=job.id,
        workflow_id=job.workflow_id,
        status=message.status,
        message=message.text,
        user_id=job.user_id,
        platform=job.platform,
        platform_channel_id=job.platform_channel_id,
        platform_thread_id=job.platform_thread_id,
        conversation_id=job.conversation_id,
        created_at=now,
    )
    values = {
        "id": notification.notification_id,
        "job_id": job.id,
        "on_complete": job.on_complete,
        "payload": notification.to_dict(),
        "result": message.result,
        "status": _PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "lease_owner": lease[0] if lease else None,
        "lease_expires_at": lease[1] if lease else None,
        "lease_token": 1 if lease else 0,
    }
    if lease is None:
        return values, None
    entry = OutboxEntry(
        id=notification.notification_id,
        job_id=job.id,
        on_complete=job.on_complete,
        notification=notification,
        result=message.result,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        lease_token=1,
    )
    return values, entry
