"""The store's job verbs: what the facade and the engine's check loop ask of the jobs table."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.errors import LimitExceeded
from ..core.models import Job, JobStatus, OutboxEntry
from ..core.state import Transition
from .database import Runner, transaction
from .rows import job_from_row, job_values, jobs_from_rows, outbox_row
from .schema import UTCDateTime, jobs, outbox
from .sql import (
    among,
    changes,
    executemany,
    expired_leases,
    fence,
    lock_rows,
    log_takeovers,
    release_leases,
    update_grouped,
    wake_other_workers,
)

__all__ = ["JobVerbs"]


def _of_user(user_id: str | None) -> list[sa.ColumnElement[bool]]:
    """The condition scoping a query to one user's jobs; none for ``None`` (every user)."""
    return [] if user_id is None else [jobs.c.user_id == user_id]

_ACTIVE = JobStatus.ACTIVE.value
_UPDATED_JOB_FIELDS = (
    "status",
    "attempts",
    "next_run_at",
    "updated_at",
    "completed_at",
    "last_result",
    "last_error",
    "last_checked_at",
)


class JobVerbs:
    """Jobs: insert, read and cancel (the facade); claim, record and release (the engine)."""

    if TYPE_CHECKING:

        @property
        def runner(self) -> Runner: ...
    dialect_name: str

    # -- the facade's verbs ---------------------------------------------------------------

    @transaction()
    def insert_jobs(
        self, conn: Connection, new_jobs: Sequence[Job], *, max_active_per_user: int
    ) -> None:
        """Store new jobs of one user in one transaction: all of them or, over the limit, none."""
        users = {job.user_id for job in new_jobs}
        if len(users) != 1:
            raise ValueError("insert_jobs takes the jobs of one user")
        active = conn.execute(
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.user_id == new_jobs[0].user_id, jobs.c.status == _ACTIVE)
        ).scalar_one()
        if active + len(new_jobs) > max_active_per_user:
            raise LimitExceeded(
                "job_type",
                f"this user has {active} active jobs and may have at most "
                f"{max_active_per_user}; cancel some or wait for them to finish",
            )
        conn.execute(sa.insert(jobs), [job_values(job) for job in new_jobs])
        wake_other_workers(conn)

    @transaction(readonly=True)
    def get_job(self, conn: Connection, user_id: str | None, job_id: uuid.UUID) -> Job | None:
        """The job ``job_id`` if it belongs to ``user_id`` (any user's for ``None``)."""
        row = conn.execute(
            sa.select(jobs).where(jobs.c.id == job_id, *_of_user(user_id))
        ).mappings().first()
        return job_from_row(row) if row else None

    @transaction(readonly=True)
    def find_job_ids(
        self, conn: Connection, prefix: str, user_id: str | None = None, *, limit: int = 2
    ) -> list[uuid.UUID]:
        """Ids of jobs starting with the hex digits ``prefix`` (of ``user_id``'s, for a user).

        A range of ids rather than a text match, so it reads the primary key on
        both databases whatever their spelling of a UUID.
        """
        low = uuid.UUID(prefix.ljust(32, "0"))
        high = uuid.UUID(prefix.ljust(32, "f"))
        query = (
            sa.select(jobs.c.id)
            .where(jobs.c.id >= low, jobs.c.id <= high, *_of_user(user_id))
            .order_by(jobs.c.id)
            .limit(limit)
        )
        return list(conn.execute(query).scalars())

    @transaction(readonly=True)
    def list_jobs(
        self,
        conn: Connection,
        user_id: str | None,
        *,
        status: JobStatus | None = None,
        workflow_id: uuid.UUID | None = None,
        job_type: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """The user's jobs (every user's for ``None``), newest first."""
        query = sa.select(jobs).where(*_of_user(user_id))
        if job_type is not None:
            query = query.where(jobs.c.job_type == job_type)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if workflow_id is not None:
            query = query.where(jobs.c.workflow_id == workflow_id)
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        return [job_from_row(row) for row in conn.execute(query).mappings()]

    @transaction()
    def cancel_jobs(
        self,
        conn: Connection,
        user_id: str | None,
        now: datetime,
        *,
        job_id: uuid.UUID | None = None,
        workflow_id: uuid.UUID | None = None,
    ) -> tuple[list[Job], list[Job]]:
        """Cancel the user's active job ``job_id``, or every active job of ``workflow_id``.

        ``user_id=None`` acts on any user's jobs (the operator's CLI).

        This is the state machine's ``Cancel`` transition as one conditional
        write: only rows still ``active`` change. Returns (cancelled jobs, the
        matching jobs that had already finished and were left as they were).
        """
        if (job_id is None) == (workflow_id is None):
            raise ValueError("give exactly one of job_id and workflow_id")
        match = jobs.c.id == job_id if job_id is not None else jobs.c.workflow_id == workflow_id
        lock_rows(conn, jobs, match, *_of_user(user_id), jobs.c.status == _ACTIVE)
        cancelled = [
            job_from_row(row)
            for row in conn.execute(
                sa.update(jobs)
                .where(match, *_of_user(user_id), jobs.c.status == _ACTIVE)
                .values(
                    status=JobStatus.CANCELLED.value,
                    completed_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(*jobs.c)
            ).mappings()
        ]
        if cancelled:
            wake_other_workers(conn)
        done = {job.id for job in cancelled}
        untouched = [
            job_from_row(row)
            for row in conn.execute(
                sa.select(jobs).where(match, *_of_user(user_id))
            ).mappings()
            if row["id"] not in done
        ]
        return cancelled, untouched

    # -- the engine's verbs ---------------------------------------------------------------

    def claim_statement(
        self,
        worker_id: str,
        now: datetime,
        limit: int,
        lease_seconds: float,
        due_by: datetime | None = None,
    ) -> sa.Update:
        """The claim as a SQL statement (exposed so tests can read its query plan)."""
        locks_rows = self.dialect_name == "postgresql"
        free = sa.or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at <= now)
        due = (
            sa.select(jobs.c.id)
            .where(jobs.c.status == _ACTIVE, jobs.c.next_run_at <= (due_by or now), free)
            .order_by(jobs.c.next_run_at)
            .limit(limit)
        )
        # SQLite runs this one statement under its write lock, so the chosen ids are still
        # due; repeating the conditions there would make its planner walk every active job
        # by status instead of looking the ids up (see tests/test_query_plan.py).
        recheck = (jobs.c.status == _ACTIVE, free) if locks_rows else ()
        return (
            sa.update(jobs)
            .where(among(jobs, due, locks_rows=locks_rows), *recheck)
            .values(
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                lease_token=jobs.c.lease_token + 1,
            )
            .returning(*jobs.c)
        )

    @transaction()
    def claim_due_jobs(
        self,
        conn: Connection,
        worker_id: str,
        now: datetime,
        *,
        limit: int,
        lease_seconds: float,
        due_by: datetime | None = None,
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``worker_id``; returns them with their new token.

        Due means active, ``next_run_at <= due_by`` (``now`` unless given: a
        worker may claim what falls due shortly, to start it on time) and no
        live lease. The earliest due come first. One statement: ``FOR UPDATE
        SKIP LOCKED`` on PostgreSQL; on SQLite a compare-and-set update under
        the database's write lock.
        """
        if limit <= 0:
            return []
        expired = expired_leases(conn, jobs, now)
        rows = conn.execute(self.claim_statement(worker_id, now, limit, lease_seconds, due_by))
        claimed = jobs_from_rows(rows)
        claimed.sort(key=lambda job: job.next_run_at)
        if expired:
            log_takeovers(worker_id, "job", expired, (job.id for job in claimed))
        return claimed

    @transaction()
    def record_outcomes(
        self,
        conn: Connection,
        worker_id: str,
        transitions: Sequence[tuple[Job, Transition]],
        now: datetime,
        *,
        lease_limit: int = 0,
        lease_seconds: float = 0.0,
    ) -> tuple[set[uuid.UUID], list[OutboxEntry]]:
        """Apply check transitions of jobs that ``worker_id`` claimed, in one transaction.

        Each pair is (the job as claimed, with its fencing token; its transition).
        A transition is written only if the job is still active and still holds
        that token; a finishing transition writes its outbox row in the same
        transaction, and up to ``lease_limit`` of the new messages are leased to
        the worker, which can deliver them at once without claiming them back.
        Returns the ids whose transitions were applied and the leased entries.
        """
        ids = [claimed.id for claimed, _ in transitions]
        tokens = fence(conn, jobs, ids, worker_id, _ACTIVE)
        applied = [
            (claimed, transition)
            for claimed, transition in transitions
            if transition.changed and tokens.get(claimed.id) == claimed.lease_token
        ]
        if not applied:
            return set(), []
        update_grouped(
            conn,
            jobs,
            [
                (claimed.id, changes(claimed, transition.job, _UPDATED_JOB_FIELDS))
                for claimed, transition in applied
            ],
            {"lease_owner": None, "lease_expires_at": None},
        )
        expires = now + timedelta(seconds=lease_seconds)
        messages: list[dict[str, Any]] = []
        leased: list[OutboxEntry] = []
        for _, transition in applied:
            if transition.message is None:
                continue
            lease = (worker_id, expires) if len(leased) < lease_limit else None
            values, entry = outbox_row(transition, now, lease)
            if entry is not None:
                leased.append(entry)
            messages.append(values)
        if messages:
            names = tuple(messages[0])
            executemany(
                conn,
                ("insert", outbox.name),
                lambda: sa.insert(outbox).values({name: sa.bindparam(name) for name in names}),
                messages,
            )
        return {claimed.id for claimed, _ in applied}, leased

    @transaction()
    def release_jobs(self, conn: Connection, worker_id: str, claimed: Sequence[Job]) -> int:
        """Give back leases without recording a check (a stopping worker's jobs in flight)."""
        pairs = [(job.id, job.lease_token) for job in claimed]
        return release_leases(conn, jobs, worker_id, pairs, _ACTIVE)

    @transaction(readonly=True)
    def next_due_time(self, conn: Connection) -> datetime | None:
        """When the earliest active job is due, counting a leased job as due when its lease ends."""
        due = conn.execute(
            sa.select(jobs.c.next_run_at)
            .where(jobs.c.status == _ACTIVE, jobs.c.lease_expires_at.is_(None))
            .order_by(jobs.c.next_run_at)
            .limit(1)
        ).scalar()
        expiry = conn.execute(
            sa.select(sa.func.min(jobs.c.lease_expires_at)).where(
                jobs.c.lease_expires_at.is_not(None)
            )
        ).scalar()
        if expiry is not None:
            expiry = UTCDateTime().process_result_value(expiry, conn.dialect)
        candidates = [moment for moment in (due, expiry) if moment is not None]
        return min(candidates) if candidates else None

