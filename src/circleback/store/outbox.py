"""The store's outbox verbs: the messages of finished jobs, claimed, delivered, released."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.models import DeliveryStatus, DeliveryUpdate, OutboxEntry
from .database import Runner, transaction
from .rows import entry_from_row
from .schema import UTCDateTime, outbox
from .sql import (
    among,
    changes,
    expired_leases,
    fence,
    lock_rows,
    log_takeovers,
    release_leases,
    update_grouped,
    wake_other_workers,
)

__all__ = ["OutboxVerbs"]

_PENDING = DeliveryStatus.PENDING.value
_DELIVERY_FIELDS = (
    "status", "attempts", "next_attempt_at", "sent_at", "last_error", "delivered_via",
    "delivery_note",
)


class OutboxVerbs:
    """Outbox entries: claim the due ones, record how delivery went, give leases back."""

    if TYPE_CHECKING:

        @property
        def runner(self) -> Runner: ...
    dialect_name: str

    @transaction()
    def claim_deliveries(
        self, conn: Connection, worker_id: str, now: datetime, *, limit: int, lease_seconds: float
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` pending outbox entries that are due for a (re)try."""
        if limit <= 0:
            return []
        expired = expired_leases(conn, outbox, now, outbox.c.status == _PENDING)
        free = sa.or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at <= now)
        due = (
            sa.select(outbox.c.id)
            .where(outbox.c.status == _PENDING, outbox.c.next_attempt_at <= now, free)
            .order_by(outbox.c.next_attempt_at)
            .limit(limit)
        )
        locks_rows = self.dialect_name == "postgresql"
        rows = conn.execute(
            sa.update(outbox)
            .where(among(outbox, due, locks_rows=locks_rows), outbox.c.status == _PENDING, free)
            .values(
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                lease_token=outbox.c.lease_token + 1,
            )
            .returning(*outbox.c)
        )
        claimed = [entry_from_row(row) for row in rows.mappings()]
        if expired:
            log_takeovers(worker_id, "delivery", expired, (entry.id for entry in claimed))
        return claimed

    @transaction()
    def record_deliveries(
        self,
        conn: Connection,
        worker_id: str,
        updates: Sequence[tuple[OutboxEntry, DeliveryUpdate]],
    ) -> int:
        """Write what became of claimed deliveries (fenced like job outcomes); returns how many."""
        tokens = fence(conn, outbox, [entry.id for entry, _ in updates], worker_id, _PENDING)
        applied = [
            (entry.id, changes(entry, update, _DELIVERY_FIELDS))
            for entry, update in updates
            if tokens.get(entry.id) == entry.lease_token
        ]
        update_grouped(conn, outbox, applied, {"lease_owner": None, "lease_expires_at": None})
        return len(applied)

    @transaction()
    def release_deliveries(
        self, conn: Connection, worker_id: str, entries: Sequence[OutboxEntry]
    ) -> int:
        """Give back leases of deliveries that a stopping worker did not finish."""
        pairs = [(entry.id, entry.lease_token) for entry in entries]
        return release_leases(conn, outbox, worker_id, pairs, _PENDING)

    @transaction(readonly=True)
    def next_delivery_time(self, conn: Connection) -> datetime | None:
        """When the earliest pending outbox entry is due for a (re)try."""
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

    @transaction(readonly=True)
    def list_outbox(
        self, conn: Connection, *, status: DeliveryStatus | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        """Outbox entries, newest first (``status=DEAD`` is the dead-letter list)."""
        query = sa.select(outbox)
        if status is not None:
            query = query.where(outbox.c.status == status.value)
        query = query.order_by(outbox.c.created_at.desc()).limit(limit)
        return [entry_from_row(row) for row in conn.execute(query).mappings()]

    @transaction()
    def requeue_deliveries(
        self, conn: Connection, now: datetime, *, ids: Sequence[uuid.UUID] = (),
        all_dead: bool = False,
    ) -> list[uuid.UUID]:
        """Make dead messages (those of ``ids``, or every one) due again with fresh attempts.

        Only dead entries change: a pending or sent one is left as it is. Returns
        the ids requeued.
        """
        match = outbox.c.status == DeliveryStatus.DEAD.value
        if not all_dead:
            match = sa.and_(match, outbox.c.id.in_(list(ids)))
        lock_rows(conn, outbox, match)
        done = conn.execute(
            sa.update(outbox).where(match).values(
                status=_PENDING, attempts=0, next_attempt_at=now, lease_owner=None,
                lease_expires_at=None,
            ).returning(outbox.c.id)
        ).scalars().all()
        if done:
            wake_other_workers(conn)
        return list(done)

    @transaction()
    def purge_sent(self, conn: Connection, before: datetime) -> int:
        """Delete messages sent before ``before``; returns how many."""
        return int(conn.execute(
            sa.delete(outbox).where(
                outbox.c.status == DeliveryStatus.SENT.value, outbox.c.sent_at < before
            )
        ).rowcount)
