"""The store: jobs and outbox rows, spoken to in domain verbs.

The engine and the facade never write SQL; they call these verbs. Each verb is
one transaction. Writes by a worker are conditional on the job still being
active and still carrying the worker's fencing token, so a cancel, or another
worker that took over an expired lease, always wins over a late write.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .database import DriverMode, TransactionRunner
from .errors import LimitExceeded, StoreError
from .migrate import current_revision, ensure_schema, head_revision
from .migrate import upgrade as upgrade_schema
from .models import DeliveryStatus, Job, JobStatus, Notification, OutboxEntry
from .schema import UTCDateTime, jobs, outbox, workers
from .state import Transition

__all__ = ["WAKEUP_CHANNEL", "DeliveryUpdate", "Store", "WorkerInfo"]

logger = logging.getLogger("circleback.store")

_ACTIVE = JobStatus.ACTIVE.value
_PENDING = DeliveryStatus.PENDING.value


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


def _job_from_row(row: sa.RowMapping) -> Job:
    values = dict(row)
    values["status"] = JobStatus(values["status"])
    return Job(**values)


_JOB_STATUSES = {status.value: status for status in JobStatus}
_JOB_FIELDS = tuple(field.name for field in attrs.fields(Job))


def _jobs_from_rows(result: sa.CursorResult[Any]) -> list[Job]:
    """Jobs from a result of whole job rows, by position when the columns are in model order.

    The claim builds hundreds of jobs per batch; pairing names with row values
    skips building a row mapping per row (the table's columns are the fields of
    :class:`Job`, in order).
    """
    if tuple(result.keys()) != _JOB_FIELDS:
        return [_job_from_row(row) for row in result.mappings()]
    claimed = []
    for row in result:
        values = dict(zip(_JOB_FIELDS, row, strict=True))
        values["status"] = _JOB_STATUSES[values["status"]]
        claimed.append(Job(**values))
    return claimed


def _entry_from_row(row: sa.RowMapping) -> OutboxEntry:
    values = dict(row)
    for private in ("lease_owner", "lease_expires_at"):
        values.pop(private)
    values["status"] = DeliveryStatus(values["status"])
    values["notification"] = Notification.from_dict(values.pop("payload"))
    return OutboxEntry(**values)


def _job_values(job: Job) -> dict[str, Any]:
    values = attrs.asdict(job, recurse=False)
    values["status"] = job.status.value
    return values


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


class Store:
    """Durable jobs and outbox on SQLite or PostgreSQL (see :mod:`circleback.core.database`)."""

    def __init__(
        self,
        url: str | sa.URL,
        *,
        driver: DriverMode = "auto",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self._runner = TransactionRunner(url, mode=driver, engine_options=engine_options)
        self._opened = False

    @property
    def runner(self) -> TransactionRunner:
        """Where transactions run; for tests and tools that need the raw engine."""
        return self._runner

    @property
    def dialect_name(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._runner.dialect_name

    @property
    def _locks_rows(self) -> bool:
        return self.dialect_name == "postgresql"

    async def open(self) -> None:
        """Connect, and create the tables when the database has none yet."""
        if self._opened:
            return
        self._runner.open()
        await self._runner.run(ensure_schema)
        self._opened = True

    async def upgrade(self) -> tuple[str | None, str]:
        """Migrate the schema to this version's; returns (revision before, revision after).

        Raises :class:`StoreError` for a schema this version cannot migrate
        (one made by a newer circleback), and changes nothing then.
        """
        self._runner.open()
        before = await self._runner.run(current_revision, readonly=True)
        from alembic.util import CommandError

        try:
            await self._runner.run(upgrade_schema)
        except CommandError as exc:
            raise StoreError(f"cannot upgrade the database schema: {exc}") from exc
        return before, head_revision()

    async def aclose(self) -> None:
        """Close every connection."""
        await self._runner.aclose()
        self._opened = False

    # -- jobs: the facade's verbs ---------------------------------------------------------

    async def insert_job(self, job: Job, *, max_active_per_user: int) -> None:
        """Store a new job, unless its user already has ``max_active_per_user`` active jobs."""
        await self._runner.run(self._insert_jobs, [job], max_active_per_user)

    async def insert_jobs(self, new_jobs: Sequence[Job], *, max_active_per_user: int) -> None:
        """Store new jobs of one user in one transaction: all of them or, over the limit, none."""
        if new_jobs:
            await self._runner.run(self._insert_jobs, list(new_jobs), max_active_per_user)

    @staticmethod
    def _insert_jobs(conn: Connection, new_jobs: list[Job], max_active: int) -> None:
        users = {job.user_id for job in new_jobs}
        if len(users) != 1:
            raise ValueError("insert_jobs takes the jobs of one user")
        active = conn.execute(
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.user_id == new_jobs[0].user_id, jobs.c.status == _ACTIVE)
        ).scalar_one()
        if active + len(new_jobs) > max_active:
            raise LimitExceeded(
                "job_type",
                f"this user has {active} active jobs and may have at most {max_active}; "
                "cancel some or wait for them to finish",
            )
        conn.execute(sa.insert(jobs), [_job_values(job) for job in new_jobs])
        _wake_other_workers(conn)

    async def get_job(self, user_id: str, job_id: uuid.UUID) -> Job | None:
        """The job ``job_id`` if it belongs to ``user_id``."""
        return await self._runner.run(self._get_job, user_id, job_id, readonly=True)

    @staticmethod
    def _get_job(conn: Connection, user_id: str, job_id: uuid.UUID) -> Job | None:
        row = conn.execute(
            sa.select(jobs).where(jobs.c.id == job_id, jobs.c.user_id == user_id)
        ).mappings().first()
        return _job_from_row(row) if row else None

    async def list_jobs(
        self,
        user_id: str,
        *,
        status: JobStatus | None = None,
        workflow_id: uuid.UUID | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """The user's jobs, newest first."""
        return await self._runner.run(
            self._list_jobs, user_id, status, workflow_id, limit, readonly=True
        )

    @staticmethod
    def _list_jobs(
        conn: Connection,
        user_id: str,
        status: JobStatus | None,
        workflow_id: uuid.UUID | None,
        limit: int,
    ) -> list[Job]:
        query = sa.select(jobs).where(jobs.c.user_id == user_id)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if workflow_id is not None:
            query = query.where(jobs.c.workflow_id == workflow_id)
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        return [_job_from_row(row) for row in conn.execute(query).mappings()]

    async def cancel_jobs(
        self,
        user_id: str,
        now: datetime,
        *,
        job_id: uuid.UUID | None = None,
        workflow_id: uuid.UUID | None = None,
    ) -> tuple[list[Job], list[Job]]:
        """Cancel the user's active job ``job_id``, or every active job of ``workflow_id``.

        This is the state machine's ``Cancel`` transition as one conditional
        write: only rows still ``active`` change. Returns (cancelled jobs, the
        matching jobs that had already finished and were left as they were).
        """
        return await self._runner.run(self._cancel_jobs, user_id, now, job_id, workflow_id)

    @staticmethod
    def _cancel_jobs(
        conn: Connection,
        user_id: str,
        now: datetime,
        job_id: uuid.UUID | None,
        workflow_id: uuid.UUID | None,
    ) -> tuple[list[Job], list[Job]]:
        if (job_id is None) == (workflow_id is None):
            raise ValueError("give exactly one of job_id and workflow_id")
        match = jobs.c.id == job_id if job_id is not None else jobs.c.workflow_id == workflow_id
        _lock_rows(conn, jobs, match, jobs.c.user_id == user_id, jobs.c.status == _ACTIVE)
        cancelled = [
            _job_from_row(row)
            for row in conn.execute(
                sa.update(jobs)
                .where(match, jobs.c.user_id == user_id, jobs.c.status == _ACTIVE)
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
            _wake_other_workers(conn)
        done = {job.id for job in cancelled}
        untouched = [
            _job_from_row(row)
            for row in conn.execute(
                sa.select(jobs).where(match, jobs.c.user_id == user_id)
            ).mappings()
            if row["id"] not in done
        ]
        return cancelled, untouched

    # -- jobs: the engine's verbs ---------------------------------------------------------

    async def claim_due_jobs(
        self,
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
        return await self._runner.run(
            self._claim_due_jobs, worker_id, now, limit, lease_seconds, due_by or now
        )

    def claim_statement(
        self,
        worker_id: str,
        now: datetime,
        limit: int,
        lease_seconds: float,
        due_by: datetime | None = None,
    ) -> sa.Update:
        """The claim as a SQL statement (exposed so tests can read its query plan)."""
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
        recheck = (jobs.c.status == _ACTIVE, free) if self._locks_rows else ()
        return (
            sa.update(jobs)
            .where(self._among(jobs, due), *recheck)
            .values(
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                lease_token=jobs.c.lease_token + 1,
            )
            .returning(*jobs.c)
        )

    def _among(self, table: sa.Table, due: sa.Select[Any]) -> sa.ColumnElement[bool]:
        """``table.id`` is one of the ids ``due`` selects, evaluated exactly once.

        On PostgreSQL the ids are locked with ``FOR UPDATE SKIP LOCKED`` and
        gathered into an array first: a plain ``IN (subquery ... LIMIT)`` may be
        planned as a subplan run once per outer row, which claims more rows
        than the limit and rows that other workers hold.
        """
        if self._locks_rows:
            locked = due.with_for_update(skip_locked=True).scalar_subquery()
            return table.c.id == sa.any_(sa.func.array(locked))
        return table.c.id.in_(due.scalar_subquery())

    def _claim_due_jobs(
        self,
        conn: Connection,
        worker_id: str,
        now: datetime,
        limit: int,
        lease_seconds: float,
        due_by: datetime,
    ) -> list[Job]:
        expired = _expired_leases(conn, jobs, now)
        rows = conn.execute(self.claim_statement(worker_id, now, limit, lease_seconds, due_by))
        claimed = _jobs_from_rows(rows)
        claimed.sort(key=lambda job: job.next_run_at)
        if expired:
            _log_takeovers(worker_id, "job", expired, (job.id for job in claimed))
        return claimed

    async def record_outcomes(
        self, worker_id: str, transitions: Sequence[tuple[Job, Transition]], now: datetime
    ) -> set[uuid.UUID]:
        """Apply check transitions of jobs that ``worker_id`` claimed, in one transaction.

        Each pair is (the job as claimed, with its fencing token; its transition).
        A transition is written only if the job is still active and still holds
        that token; a finishing transition writes its outbox row in the same
        transaction. Returns the ids whose transitions were applied.
        """
        if not transitions:
            return set()
        applied, _ = await self._runner.run(
            self._record_outcomes, worker_id, list(transitions), now, 0, 0.0
        )
        return applied

    async def record_outcomes_leasing_messages(
        self,
        worker_id: str,
        transitions: Sequence[tuple[Job, Transition]],
        now: datetime,
        *,
        limit: int,
        lease_seconds: float,
    ) -> tuple[set[uuid.UUID], list[OutboxEntry]]:
        """:meth:`record_outcomes`, with up to ``limit`` of the new messages leased to the worker.

        Returns the applied ids and the leased outbox entries: the worker can
        deliver those at once, without claiming them back from the store. The
        lease is the one a claim would take, so if the worker dies they are
        taken over like any other; messages past ``limit`` wait for a claim.
        """
        if not transitions:
            return set(), []
        return await self._runner.run(
            self._record_outcomes, worker_id, list(transitions), now, limit, lease_seconds
        )

    def _record_outcomes(
        self,
        conn: Connection,
        worker_id: str,
        transitions: list[tuple[Job, Transition]],
        now: datetime,
        lease_limit: int,
        lease_seconds: float,
    ) -> tuple[set[uuid.UUID], list[OutboxEntry]]:
        ids = [claimed.id for claimed, _ in transitions]
        tokens = _fence(conn, jobs, ids, worker_id, _ACTIVE)
        applied = [
            (claimed, transition)
            for claimed, transition in transitions
            if transition.changed and tokens.get(claimed.id) == claimed.lease_token
        ]
        if not applied:
            return set(), []
        _update_grouped(
            conn,
            jobs,
            [
                (claimed.id, _changes(claimed, transition.job, _UPDATED_JOB_FIELDS))
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
            values, entry = _outbox_row(transition, now, lease)
            if entry is not None:
                leased.append(entry)
            messages.append(values)
        if messages:
            names = tuple(messages[0])
            _executemany(
                conn,
                ("insert", outbox.name),
                lambda: sa.insert(outbox).values({name: sa.bindparam(name) for name in names}),
                messages,
            )
        return {claimed.id for claimed, _ in applied}, leased

    async def release_jobs(self, worker_id: str, claimed: Iterable[Job]) -> int:
        """Give back leases without recording a check (a stopping worker's jobs in flight)."""
        pairs = [(job.id, job.lease_token) for job in claimed]
        if not pairs:
            return 0
        return await self._runner.run(self._release, jobs, worker_id, pairs)

    @staticmethod
    def _release(
        conn: Connection, table: sa.Table, worker_id: str, pairs: list[tuple[uuid.UUID, int]]
    ) -> int:
        # Counted from the fence: drivers need not report an ``executemany``'s row count
        # (asyncpg does not).
        status = _ACTIVE if table is jobs else _PENDING
        tokens = _fence(conn, table, [item_id for item_id, _ in pairs], worker_id, status)
        held = [
            {"b_id": item_id, "b_token": token}
            for item_id, token in pairs
            if tokens.get(item_id) == token
        ]
        if held:
            conn.execute(
                sa.update(table)
                .where(
                    table.c.id == sa.bindparam("b_id"),
                    table.c.lease_token == sa.bindparam("b_token"),
                    table.c.lease_owner == worker_id,
                )
                .values(lease_owner=None, lease_expires_at=None),
                held,
            )
        return len(held)

    @staticmethod
    def renew_leases_sync(
        conn: Connection,
        worker_id: str,
        held_jobs: Sequence[uuid.UUID],
        held_deliveries: Sequence[uuid.UUID],
        now: datetime,
        lease_seconds: float,
    ) -> set[uuid.UUID]:
        """Extend the leases ``worker_id`` still holds among the given ids.

        Returns the ids among them that another worker holds now (taken over
        after this worker stalled). Synchronous on purpose: the heartbeat thread
        calls it with its own connection, so a busy event loop cannot starve it.
        """
        expires = now + timedelta(seconds=lease_seconds)
        taken: set[uuid.UUID] = set()
        for table, held in ((jobs, held_jobs), (outbox, held_deliveries)):
            if not held:
                continue
            # Never wait: a row locked right now is being recorded or cancelled,
            # which ends the lease anyway.
            mine = _lock_rows(
                conn,
                table,
                _id_in(conn, table, held),
                table.c.lease_owner == worker_id,
                skip_locked=True,
            )
            if mine:
                conn.execute(
                    sa.update(table)
                    .where(_id_in(conn, table, mine), table.c.lease_owner == worker_id)
                    .values(lease_expires_at=expires)
                )
            taken.update(
                conn.execute(
                    sa.select(table.c.id).where(
                        _id_in(conn, table, held),
                        table.c.lease_owner.is_not(None),
                        table.c.lease_owner != worker_id,
                    )
                ).scalars()
            )
        return taken

    @staticmethod
    def heartbeat_sync(
        conn: Connection,
        worker_id: str,
        hostname: str,
        pid: int,
        now: datetime,
        jobs_held: int,
        deliveries_held: int,
        stopped: bool = False,
    ) -> None:
        """Record that ``worker_id`` is alive (or, with ``stopped``, that it stopped cleanly)."""
        values = {
            "heartbeat_at": now,
            "jobs_held": jobs_held,
            "deliveries_held": deliveries_held,
            "stopped_at": now if stopped else None,
        }
        updated = conn.execute(
            sa.update(workers).where(workers.c.worker_id == worker_id).values(values)
        ).rowcount
        if not updated:
            conn.execute(
                sa.insert(workers).values(
                    worker_id=worker_id, hostname=hostname, pid=pid, started_at=now, **values
                )
            )

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker that has reported, latest heartbeat first."""
        return await self._runner.run(self._list_workers, readonly=True)

    @staticmethod
    def _list_workers(conn: Connection) -> list[WorkerInfo]:
        rows = conn.execute(sa.select(workers).order_by(workers.c.heartbeat_at.desc()))
        return [WorkerInfo(**row) for row in rows.mappings()]

    async def forget_workers(self, before: datetime) -> int:
        """Delete workers whose last heartbeat is older than ``before``."""
        return await self._runner.run(self._forget_workers, before)

    @staticmethod
    def _forget_workers(conn: Connection, before: datetime) -> int:
        return int(conn.execute(sa.delete(workers).where(workers.c.heartbeat_at < before)).rowcount)

    async def reap_expired_leases(self, now: datetime) -> int:
        """Clear leases that expired (their holder died or stalled); returns how many."""
        return await self._runner.run(self._reap_expired_leases, now)

    @staticmethod
    def _reap_expired_leases(conn: Connection, now: datetime) -> int:
        count = 0
        for table in (jobs, outbox):
            expired = _lock_rows(
                conn,
                table,
                table.c.lease_expires_at.is_not(None),
                table.c.lease_expires_at <= now,
                skip_locked=True,
            )
            if expired:
                result = conn.execute(
                    sa.update(table)
                    .where(_id_in(conn, table, expired), table.c.lease_expires_at <= now)
                    .values(lease_owner=None, lease_expires_at=None)
                )
                count += int(result.rowcount)
        return count

    async def next_due_time(self) -> datetime | None:
        """When the earliest active job is due, counting a leased job as due when its lease ends."""
        return await self._runner.run(self._next_due_time, readonly=True)

    @staticmethod
    def _next_due_time(conn: Connection) -> datetime | None:
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

    async def count_unfinished(self) -> tuple[int, int]:
        """(active jobs, outbox entries not yet sent or dead): zero and zero means idle."""
        return await self._runner.run(self._count_unfinished, readonly=True)

    @staticmethod
    def _count_unfinished(conn: Connection) -> tuple[int, int]:
        active = conn.execute(
            sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == _ACTIVE)
        ).scalar_one()
        pending = conn.execute(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status == _PENDING)
        ).scalar_one()
        return int(active), int(pending)

    # -- the outbox ------------------------------------------------------------------------

    async def claim_deliveries(
        self, worker_id: str, now: datetime, *, limit: int, lease_seconds: float
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` pending outbox entries that are due for a (re)try."""
        if limit <= 0:
            return []
        return await self._runner.run(
            self._claim_deliveries, worker_id, now, limit, lease_seconds
        )

    def _claim_deliveries(
        self, conn: Connection, worker_id: str, now: datetime, limit: int, lease_seconds: float
    ) -> list[OutboxEntry]:
        expired = _expired_leases(conn, outbox, now, outbox.c.status == _PENDING)
        free = sa.or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at <= now)
        due = (
            sa.select(outbox.c.id)
            .where(outbox.c.status == _PENDING, outbox.c.next_attempt_at <= now, free)
            .order_by(outbox.c.next_attempt_at)
            .limit(limit)
        )
        rows = conn.execute(
            sa.update(outbox)
            .where(self._among(outbox, due), outbox.c.status == _PENDING, free)
            .values(
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                lease_token=outbox.c.lease_token + 1,
            )
            .returning(*outbox.c)
        )
        claimed = [_entry_from_row(row) for row in rows.mappings()]
        if expired:
            _log_takeovers(worker_id, "delivery", expired, (entry.id for entry in claimed))
        return claimed

    async def record_deliveries(
        self, worker_id: str, updates: Sequence[tuple[OutboxEntry, DeliveryUpdate]]
    ) -> int:
        """Write what became of claimed deliveries (fenced like job outcomes); returns how many."""
        if not updates:
            return 0
        return await self._runner.run(self._record_deliveries, worker_id, list(updates))

    @staticmethod
    def _record_deliveries(
        conn: Connection, worker_id: str, updates: list[tuple[OutboxEntry, DeliveryUpdate]]
    ) -> int:
        fields = ("status", "attempts", "next_attempt_at", "sent_at", "last_error",
                  "delivered_via", "delivery_note")
        tokens = _fence(conn, outbox, [entry.id for entry, _ in updates], worker_id, _PENDING)
        applied = [
            (entry.id, _changes(entry, update, fields))
            for entry, update in updates
            if tokens.get(entry.id) == entry.lease_token
        ]
        _update_grouped(conn, outbox, applied, {"lease_owner": None, "lease_expires_at": None})
        return len(applied)

    async def release_deliveries(self, worker_id: str, entries: Iterable[OutboxEntry]) -> int:
        """Give back leases of deliveries that a stopping worker did not finish."""
        pairs = [(entry.id, entry.lease_token) for entry in entries]
        if not pairs:
            return 0
        return await self._runner.run(self._release, outbox, worker_id, pairs)

    async def next_delivery_time(self) -> datetime | None:
        """When the earliest pending outbox entry is due for a (re)try."""
        return await self._runner.run(self._next_delivery_time, readonly=True)

    @staticmethod
    def _next_delivery_time(conn: Connection) -> datetime | None:
        # Like jobs: a leased entry (being delivered here or elsewhere) is due when
        # its lease runs out, not at its attempt time.
        due = conn.execute(
            sa.select(outbox.c.next_attempt_at)
            .where(outbox.c.status == _PENDING, outbox.c.lease_expires_at.is_(None))
            .order_by(outbox.c.next_attempt_at)
            .limit(1)
        ).scalar()
        expiry = conn.execute(
            sa.select(sa.func.min(outbox.c.lease_expires_at)).where(
                outbox.c.status == _PENDING, outbox.c.lease_expires_at.is_not(None)
            )
        ).scalar()
        if expiry is not None:
            expiry = UTCDateTime().process_result_value(expiry, conn.dialect)
        candidates = [moment for moment in (due, expiry) if moment is not None]
        return min(candidates) if candidates else None

    async def list_outbox(
        self, *, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        """Outbox entries, newest first (``status=DEAD`` is the dead-letter list)."""
        return await self._runner.run(self._list_outbox, status, limit, readonly=True)

    @staticmethod
    def _list_outbox(
        conn: Connection, status: DeliveryStatus | None, limit: int
    ) -> list[OutboxEntry]:
        query = sa.select(outbox)
        if status is not None:
            query = query.where(outbox.c.status == status.value)
        query = query.order_by(outbox.c.created_at.desc()).limit(limit)
        return [_entry_from_row(row) for row in conn.execute(query).mappings()]


def _lock_rows(
    conn: Connection, table: sa.Table, *conditions: Any, skip_locked: bool = False
) -> list[uuid.UUID]:
    """Lock the matching rows in id order before writing them; returns their ids.

    On PostgreSQL every transaction that writes several rows takes their locks
    in the same (id) order first, so two writers can never deadlock; with
    ``skip_locked`` rows that another transaction holds are left out instead of
    waited for. SQLite locks the whole database per write transaction, so
    there it only selects.
    """
    query = sa.select(table.c.id).where(*conditions).order_by(table.c.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=skip_locked)
    return list(conn.execute(query).scalars())


def _fence(
    conn: Connection, table: sa.Table, ids: list[uuid.UUID], worker_id: str, status: str
) -> dict[uuid.UUID, int]:
    """The lease tokens of the rows among ``ids`` that ``worker_id`` holds in ``status``.

    The rows are locked (PostgreSQL, in id order like every locking write here)
    or the database is (SQLite), so what is read holds until the commit and the
    writes that follow need not check it again. The rows are looked up by id
    alone: given the status too, SQLite's planner walks the status index (every
    active job) once the list of ids is long.
    """
    if conn.dialect.name == "sqlite":
        return _sqlite_fence(conn, table, ids, worker_id, status)
    query = (
        sa.select(table.c.id, table.c.lease_token, table.c.lease_owner, table.c.status)
        .where(_id_in(conn, table, ids))
        .order_by(table.c.id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {
        row_id: token
        for row_id, token, owner, row_status in conn.execute(query)
        if owner == worker_id and row_status == status
    }


def _sqlite_fence(
    conn: Connection, table: sa.Table, ids: list[uuid.UUID], worker_id: str, status: str
) -> dict[uuid.UUID, int]:
    """:func:`_fence` on SQLite: one fixed statement, the ids passed as one JSON array.

    The same SQL whatever the number of ids, so nothing is built or compiled
    per batch, and the ids come back as the stored text, matched without
    parsing. SQLite keeps ids as 32 hex digits (SQLAlchemy's ``Uuid`` there).
    """
    by_text = {row_id.hex: row_id for row_id in ids}
    rows = conn.exec_driver_sql(
        f"SELECT id, lease_token, lease_owner, status FROM {table.name} "
        "WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(by_text)),),
    )
    return {
        by_text[row_id]: token
        for row_id, token, owner, row_status in rows
        if owner == worker_id and row_status == status
    }


def _update_grouped(
    conn: Connection,
    table: sa.Table,
    rows: list[tuple[uuid.UUID, dict[str, Any]]],
    constant: dict[str, Any],
) -> None:
    """Write each row's new values (plus ``constant``) to the row with that id.

    Rows with the same new values share one ``UPDATE ... WHERE id IN (...)``
    (the ids as one parameter, :func:`_id_in`): a batch of timers that fired
    together, or of messages sent together, is one row of parameters instead
    of one per job. Such groups, and rows whose values are their own, go in
    one ``executemany`` per set of columns, its SQL compiled once.
    """
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], list[uuid.UUID]]] = {}
    for row_id, values in rows:
        key = _group_key(values)
        group = groups.get(key)
        if group is None:
            groups[key] = (values, [row_id])
        else:
            group[1].append(row_id)
    singles: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    shared: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values, ids in groups.values():
        params = {f"b_{name}": value for name, value in values.items()}
        if len(ids) == 1:
            singles.setdefault(tuple(values), []).append(params | {"b_id": ids[0]})
        else:
            shared.setdefault(tuple(values), []).append(params | {"b_ids": _ids_value(conn, ids)})
    for names, many in shared.items():
        _executemany(
            conn,
            ("update shared", table.name, names, tuple(constant.items())),
            lambda names=names: (  # type: ignore[misc]
                sa.update(table)
                .where(_id_in(conn, table, (), key="b_ids"))
                .values({name: sa.bindparam(f"b_{name}") for name in names} | constant)
            ),
            many,
        )
    for names, many in singles.items():
        _executemany(
            conn,
            ("update", table.name, names, tuple(constant.items())),
            lambda names=names: (  # type: ignore[misc]
                sa.update(table)
                .where(table.c.id == sa.bindparam("b_id"))
                .values({name: sa.bindparam(f"b_{name}") for name in names} | constant)
            ),
            many,
        )


def _group_key(values: dict[str, Any]) -> tuple[Any, ...]:
    """What rows share when they may be written by one ``UPDATE`` (see :func:`_update_grouped`).

    Equal keys mean the same columns with values stored alike.
    """
    row = tuple(values.values())
    types = tuple(map(type, row))
    if _SCALARS.issuperset(types):
        # Equal values of different types (1, 1.0, True) are stored differently: the
        # types are part of the key.
        return (tuple(values), row, types)
    # A container (a check's result) groups only with the very same object: results
    # that merely look alike are rare, and encoding each one to compare cost more.
    return tuple(
        (name, id(value)) if isinstance(value, _CONTAINERS)
        # -0.0 equals 0.0 but is stored as written: floats compare by their exact form.
        else (name, float, value.hex()) if type(value) is float
        else (name, type(value), value)
        for name, value in values.items()
    )


@attrs.frozen
class _ManyPlan:
    """A statement's SQL for the driver, and how each row's values become its parameters."""

    sql: str
    positional: bool
    #: Per parameter: its name, the row key it comes from (None: a constant), the type's
    #: processor, and the constant's value as the driver takes it.
    params: tuple[tuple[str, str | None, Any, Any], ...]


_MANY_PLANS: dict[tuple[Any, ...], _ManyPlan] = {}
#: Rows per ``executemany`` call (see :func:`_executemany`).
_MANY_SLICE = 100


def _executemany(
    conn: Connection,
    key: tuple[Any, ...],
    build: Callable[[], sa.Insert | sa.Update],
    rows: list[dict[str, Any]],
) -> None:
    """``conn.execute(build(), rows)``, with the SQL and the parameter handling worked out once.

    SQLAlchemy sets up every execution anew: it builds each row's parameter
    dictionary and runs each value through its type's processor by name, which
    for a batch of outbox rows costs more than SQLite's work on them. Here the
    statement is compiled once per dialect and ``key``, the same processors are
    applied in one pass, and the rows go to the driver's ``executemany``.
    """
    dialect = conn.dialect
    plan_key = (dialect.name, dialect.driver, dialect.paramstyle, key, tuple(rows[0]))
    plan = _MANY_PLANS.get(plan_key)
    if plan is None:
        compiled = build().compile(dialect=dialect)
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        params = []
        for name in names or ():
            bind = compiled.binds[name]
            source = bind.key if bind.key in rows[0] else None
            # The type's own conversion for this dialect (None: the value goes as it is).
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            constant = None
            if source is None:
                constant = processor(bind.value) if processor else bind.value
            params.append((name, source, processor, constant))
        plan = _MANY_PLANS[plan_key] = _ManyPlan(
            sql=str(compiled), positional=bool(compiled.positional), params=tuple(params)
        )
    spec = plan.params
    # In slices: under asyncio each slice's preparation runs on the event loop, and between
    # slices (while the driver works) other tasks get their turn, so a large batch does not
    # hold up checks falling due meanwhile.
    for start in range(0, len(rows), _MANY_SLICE):
        part = rows[start:start + _MANY_SLICE] if len(rows) > _MANY_SLICE else rows
        data: list[Any]
        if plan.positional:
            data = [
                tuple(
                    constant if source is None
                    else processor(row[source]) if processor else row[source]
                    for _, source, processor, constant in spec
                )
                for row in part
            ]
        else:
            data = [
                {
                    name: constant if source is None
                    else processor(row[source]) if processor else row[source]
                    for name, source, processor, constant in spec
                }
                for row in part
            ]
        conn.exec_driver_sql(plan.sql, data)


def _changes(before: object, after: object, fields: Sequence[str]) -> dict[str, Any]:
    """The fields whose value ``after`` differs from ``before`` (in value or in stored type).

    The row still holds ``before``'s values (the fence was just checked), so
    only these need writing; the rest would only split batches into groups.
    """
    changed = {}
    for name in fields:
        old, new = getattr(before, name), getattr(after, name)
        if old is new:
            continue
        if type(old) is type(new) and not isinstance(old, _CONTAINERS):
            if old != new:
                changed[name] = new
        # Unequal values are written (at worst a value stored the same is written again);
        # equal ones may still be stored differently (``True`` and ``1`` inside JSON).
        elif old != new or _hashable(old) != _hashable(new):
            changed[name] = new
    return changed


#: A list of ids as one parameter on PostgreSQL.
_UUID_ARRAY = sa.ARRAY(sa.Uuid())


def _id_in(
    conn: Connection, table: sa.Table, ids: Iterable[uuid.UUID], key: str | None = None
) -> sa.ColumnElement[bool]:
    """``table.id`` is one of ``ids``, in SQL that is the same however many there are.

    Drivers keep prepared statements by their text (the sqlite3 module the
    last 128 per connection, asyncpg the last 100): ``IN (?, ?, …)`` would be
    new text for each length of the list, parsed and planned again and kept,
    thousands of placeholders long. The ids go as one value instead: on SQLite
    a JSON array of the stored text (32 hex digits, SQLAlchemy's ``Uuid``
    there), on PostgreSQL an array of UUIDs. With ``key``, the parameter has
    that name, for statements whose rows give it (:func:`_ids_value`).
    """
    sqlite = conn.dialect.name == "sqlite"
    ids_type = sa.String() if sqlite else _UUID_ARRAY
    param = sa.bindparam(key, _ids_value(conn, ids), type_=ids_type)
    if sqlite:
        listed = sa.func.json_each(param).table_valued("value")
        return table.c.id.in_(sa.select(listed.c.value))
    return table.c.id == sa.any_(param)


def _ids_value(conn: Connection, ids: Iterable[uuid.UUID]) -> Any:
    """A list of ids as the one parameter :func:`_id_in` compares with."""
    if conn.dialect.name == "sqlite":
        return json.dumps([item.hex for item in ids])
    return list(ids)


def _hashable(value: Any) -> Any:
    """A key under which only values stored alike meet (``True``, ``1`` and ``1.0`` do not)."""
    if isinstance(value, _CONTAINERS):
        return ("json", json.dumps(value, sort_keys=True, default=repr))
    return (type(value), value)


_CONTAINERS = (dict, list, tuple)
#: Types whose values group by equality (with the type): what a row's columns mostly hold.
_SCALARS = frozenset({type(None), bool, int, str, datetime, uuid.UUID})


def _expired_leases(
    conn: Connection, table: sa.Table, now: datetime, *conditions: Any
) -> dict[uuid.UUID, str]:
    """Rows whose lease has run out, with the worker that held it.

    Found through an index (jobs: the lease expiry; outbox: pending entries),
    so a claim pays for the expired leases only, not for every row.
    """
    rows = conn.execute(
        sa.select(table.c.id, table.c.lease_owner).where(
            *conditions, table.c.lease_expires_at.is_not(None), table.c.lease_expires_at <= now
        )
    )
    return {row.id: row.lease_owner for row in rows}


def _log_takeovers(
    worker_id: str, kind: str, expired: dict[uuid.UUID, str], claimed: Iterable[uuid.UUID]
) -> None:
    """Say which expired leases a claim took over, and from whom: operators look for stalls."""
    owners = Counter(expired[item] for item in claimed if item in expired)
    for owner, count in sorted(owners.items()):
        logger.warning(
            "%s took over %d expired %s leases from %s", worker_id, count, kind, owner
        )


#: PostgreSQL channel on which a new or cancelled job wakes every worker.
WAKEUP_CHANNEL = "circleback_wakeup"


def _wake_other_workers(conn: Connection) -> None:
    """Tell other worker processes to look at the store now (sent when the transaction commits)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": WAKEUP_CHANNEL})


def _outbox_row(
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
