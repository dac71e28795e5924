"""What operators ask of a database: its schema, its workers, its outbox, whether it answers.

The CLI and the tool service reach the store only through here (or the
:class:`~circleback.Scheduler` facade), so the store's verbs and its runner stay
behind the engine layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa

from ..core.models import DeliveryStatus, OutboxEntry, WorkerInfo
from ..store.store import Store

__all__ = ["Operations", "open_operations", "upgrade_database"]


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
