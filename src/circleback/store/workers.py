"""Workers and their leases: heartbeats, lease renewal, expired leases, idleness.

:func:`renew_leases` and :func:`record_heartbeat` are plain functions of a
connection: the heartbeat thread calls them on a connection of its own, so a
busy event loop cannot starve lease renewal.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.models import DeliveryStatus, JobStatus, WorkerInfo
from .database import Runner, transaction
from .schema import jobs, outbox, workers
from .sql import id_in, lock_rows

__all__ = ["WorkerVerbs", "record_heartbeat", "renew_leases"]

_ACTIVE = JobStatus.ACTIVE.value
_PENDING = DeliveryStatus.PENDING.value


def renew_leases(
    conn: Connection,
    worker_id: str,
    held_jobs: Sequence[uuid.UUID],
    held_deliveries: Sequence[uuid.UUID],
    now: datetime,
    lease_seconds: float,
) -> set[uuid.UUID]:
    """Extend the leases ``worker_id`` still holds among the given ids.

    Returns the ids among them that another worker holds now (taken over
    after this worker stalled).
    """
    expires = now + timedelta(seconds=lease_seconds)
    taken: set[uuid.UUID] = set()
    for table, held in ((jobs, held_jobs), (outbox, held_deliveries)):
        if not held:
            continue
        # Never wait: a row locked right now is being recorded or cancelled,
        # which ends the lease anyway.
        mine = lock_rows(
            conn, table, id_in(conn, table, held), table.c.lease_owner == worker_id,
            skip_locked=True,
        )
        if mine:
            conn.execute(
                sa.update(table)
                .where(id_in(conn, table, mine), table.c.lease_owner == worker_id)
                .values(lease_expires_at=expires)
            )
        taken.update(
            conn.execute(
                sa.select(table.c.id).where(
                    id_in(conn, table, held),
                    table.c.lease_owner.is_not(None),
                    table.c.lease_owner != worker_id,
                )
            ).scalars()
        )
    return taken


def record_heartbeat(
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


class WorkerVerbs:
    """The workers table, and the leases of workers that died or stalled."""

    if TYPE_CHECKING:

        @property
        def runner(self) -> Runner: ...

    @transaction(readonly=True)
    def list_workers(self, conn: Connection) -> list[WorkerInfo]:
        """Every worker that has reported, latest heartbeat first."""
        rows = conn.execute(sa.select(workers).order_by(workers.c.heartbeat_at.desc()))
        return [WorkerInfo(**row) for row in rows.mappings()]

    @transaction()
    def forget_workers(self, conn: Connection, before: datetime) -> int:
        """Delete workers whose last heartbeat is older than ``before``."""
        return int(conn.execute(sa.delete(workers).where(workers.c.heartbeat_at < before)).rowcount)

    @transaction()
    def prune_workers(self, conn: Connection, silent_before: datetime) -> int:
        """Delete workers that stopped, or whose last heartbeat is older than ``silent_before``.

        A pruned worker that is in fact alive writes its row again at its next beat.
        """
        gone = sa.or_(workers.c.stopped_at.is_not(None), workers.c.heartbeat_at < silent_before)
        return int(conn.execute(sa.delete(workers).where(gone)).rowcount)

    @transaction()
    def reap_expired_leases(self, conn: Connection, now: datetime) -> int:
        """Clear leases that expired (their holder died or stalled); returns how many."""
        count = 0
        for table in (jobs, outbox):
            expired = lock_rows(
                conn,
                table,
                table.c.lease_expires_at.is_not(None),
                table.c.lease_expires_at <= now,
                skip_locked=True,
            )
            if expired:
                result = conn.execute(
                    sa.update(table)
                    .where(id_in(conn, table, expired), table.c.lease_expires_at <= now)
                    .values(lease_owner=None, lease_expires_at=None)
                )
                count += int(result.rowcount)
        return count

    @transaction(readonly=True)
    def count_unfinished(self, conn: Connection) -> tuple[int, int]:
        """(active jobs, outbox entries not yet sent or dead): zero and zero means idle."""
        active = conn.execute(
            sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == _ACTIVE)
        ).scalar_one()
        pending = conn.execute(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status == _PENDING)
        ).scalar_one()
        return int(active), int(pending)
