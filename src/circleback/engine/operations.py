"""What operators ask of a database: its schema, its workers, its outbox, whether it answers.

The CLI and the tool service reach the store only through here (or the
:class:`~circleback.Scheduler` facade), so the store's verbs and its runner stay
behind the engine layer.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..core.clock import SystemClock
from ..core.errors import JobNotFound, ValidationError, WorkflowNotFound
from ..core.models import DeliveryStatus, Job, JobStatus, OutboxEntry, WorkerInfo
from ..core.validation import parse_uuid
from ..store.store import Store

__all__ = ["Operations", "open_operations", "upgrade_database"]


_HEX = re.compile(r"[0-9a-f]+")
#: Fewest hex digits an id prefix has: 8 make a collision unlikely below some 10,000 jobs.
_MIN_PREFIX = 8


def _now() -> datetime:
    return SystemClock().now()


def _ping(conn: sa.Connection) -> None:
    conn.execute(sa.select(1)).scalar_one()


class Operations:
    """Operator verbs on one open store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def database_url(self) -> str:
        """The database URL with any password hidden, for logs and status lines."""
        return self._store.url.render_as_string(hide_password=True)

    async def ping(self) -> None:
        """Run one trivial read; raises when the database does not answer."""
        await self._store.run(_ping, readonly=True)

    async def resolve_job_id(self, ref: str, *, user_id: str | None = None) -> uuid.UUID:
        """The job a full id or a prefix of 8 or more hex digits names.

        Raises :class:`~circleback.errors.JobNotFound` when none matches and a
        :class:`~circleback.ValidationError` (field ``job_id``) for a malformed
        or ambiguous prefix.
        """
        digits = ref.strip().lower().replace("-", "")
        if len(digits) == 32:
            return parse_uuid(ref.strip(), "job_id")
        if not _HEX.fullmatch(digits) or len(digits) < _MIN_PREFIX:
            raise ValidationError(
                "job_id", f"must be a job id or its first {_MIN_PREFIX} or more hex digits"
            )
        found = await self._store.find_job_ids(digits, user_id)
        if not found:
            raise JobNotFound(ref)
        if len(found) > 1:
            raise ValidationError(
                "job_id", f"{ref} is the start of several job ids; give more digits"
            )
        return found[0]

    async def get_job(self, ref: str, *, user_id: str | None = None) -> Job:
        """One job of any user (of ``user_id`` when given), by id or id prefix."""
        job_id = await self.resolve_job_id(ref, user_id=user_id)
        job = await self._store.get_job(user_id, job_id)
        if job is None:
            raise JobNotFound(ref)
        return job

    async def list_jobs(
        self,
        *,
        user_id: str | None = None,
        status: JobStatus | None = None,
        workflow_id: str | None = None,
        job_type: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs of every user (or of ``user_id``), newest first, filtered as asked."""
        workflow = parse_uuid(workflow_id, "workflow_id") if workflow_id is not None else None
        return await self._store.list_jobs(
            user_id, status=status, workflow_id=workflow, job_type=job_type, limit=limit
        )

    async def cancel_job(self, ref: str, *, user_id: str | None = None) -> tuple[Job, bool]:
        """Cancel one job; returns it and whether it was active (a finished one is left as is)."""
        job_id = await self.resolve_job_id(ref, user_id=user_id)
        cancelled, untouched = await self._store.cancel_jobs(user_id, _now(), job_id=job_id)
        if cancelled:
            return cancelled[0], True
        if untouched:
            return untouched[0], False
        raise JobNotFound(ref)

    async def cancel_workflow(
        self, workflow_id: str, *, user_id: str | None = None
    ) -> tuple[list[Job], list[Job]]:
        """Cancel every active job of a workflow; returns (cancelled, already finished)."""
        workflow = parse_uuid(workflow_id, "workflow_id")
        cancelled, untouched = await self._store.cancel_jobs(
            user_id, _now(), workflow_id=workflow
        )
        if not cancelled and not untouched:
            raise WorkflowNotFound(workflow)
        return cancelled, untouched

    async def backlog(self) -> tuple[int, int, datetime | None]:
        """(active jobs, messages waiting to go out, when the next job is due)."""
        active, pending = await self._store.count_unfinished()
        return active, pending, await self._store.next_due_time()

    async def requeue_outbox(
        self, refs: list[str], *, all_dead: bool = False
    ) -> list[uuid.UUID]:
        """Make dead messages due again (those named, or every one); returns the ids requeued."""
        ids = [parse_uuid(ref, "notification_id") for ref in refs]
        return await self._store.requeue_deliveries(_now(), ids=ids, all_dead=all_dead)

    async def purge_sent(self, older_than_seconds: float) -> int:
        """Delete messages sent longer ago than ``older_than_seconds``; returns how many."""
        return await self._store.purge_sent(_now() - timedelta(seconds=older_than_seconds))

    async def prune_workers(self, silent_seconds: float) -> int:
        """Forget stopped workers and those silent for longer than ``silent_seconds``."""
        return await self._store.prune_workers(_now() - timedelta(seconds=silent_seconds))

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker that has reported, latest heartbeat first."""
        return await self._store.list_workers()

    async def list_outbox(
        self, *, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        """Outbox entries, newest first (``status=DEAD`` is the dead-letter list)."""
        return await self._store.list_outbox(status=status, limit=limit)


@asynccontextmanager
async def open_operations(database_url: str) -> AsyncIterator[Operations]:
    """Operations on ``database_url`` without starting an engine (creates a missing schema)."""
    store = Store(database_url)
    try:
        await store.open()
        yield Operations(store)
    finally:
        await store.aclose()


async def upgrade_database(database_url: str) -> tuple[str | None, str]:
    """Migrate the schema to this version's; returns (revision before, revision after).

    Raises :class:`~circleback.errors.StoreError` for a schema this version cannot
    migrate (one made by a newer circleback), and changes nothing then.
    """
    store = Store(database_url)
    try:
        return await store.upgrade()
    finally:
        await store.aclose()
