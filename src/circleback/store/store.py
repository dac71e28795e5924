"""The store: jobs, outbox rows and workers, spoken to in domain verbs.

The engine and the facade never write SQL; they call these verbs. Each verb is
one transaction, written once as a function of a connection (see
:func:`~circleback.store.database.transaction`). Writes by a worker are
conditional on the job still being active and still carrying the worker's
fencing token, so a cancel, or another worker that took over an expired lease,
always wins over a late write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..core.errors import StoreError
from .database import Runner, make_runner, target_url
from .jobs import JobVerbs
from .migrate import current_revision, ensure_schema, head_revision
from .migrate import upgrade as upgrade_schema
from .outbox import OutboxVerbs
from .sql import WAKEUP_CHANNEL
from .workers import WorkerVerbs

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["WAKEUP_CHANNEL", "Store"]

T = TypeVar("T")


class Store(JobVerbs, OutboxVerbs, WorkerVerbs):
    """Durable jobs and outbox on SQLite or PostgreSQL.

    :param target: a database URL (the store makes and disposes of its engine), or
        an embedder's ``Engine`` or ``AsyncEngine`` (used as given and left open;
        an ``AsyncEngine`` runs under asyncio only).
    """

    def __init__(self, target: str | sa.URL | Engine | AsyncEngine) -> None:
        self._target = target
        url = target_url(target)
        self._url = url
        self.dialect_name = url.get_backend_name()
        self._runner: Runner | None = None
        self._opened = False

    @property
    def runner(self) -> Runner:
        """Where transactions run."""
        if self._runner is None:
            self._runner = make_runner(self._target)
        return self._runner

    @property
    def url(self) -> sa.URL:
        """The database URL (with its password; render it with ``hide_password``)."""
        return self._url

    async def run(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        """Run ``fn(connection, *args)`` in one transaction of this store."""
        return await self.runner.run(fn, *args, readonly=readonly)

    async def open(self) -> None:
        """Connect, and create the tables when the database has none yet."""
        if self._opened:
            return
        await self.runner.run(ensure_schema)
        self._opened = True

    async def upgrade(self) -> tuple[str | None, str]:
        """Migrate the schema to this version's; returns (revision before, revision after).

        Raises :class:`StoreError` for a schema this version cannot migrate
        (one made by a newer circleback), and changes nothing then.
        """
        before = await self.runner.run(current_revision, readonly=True)
        from alembic.util import CommandError

        try:
            await self.runner.run(upgrade_schema)
        except CommandError as exc:
            raise StoreError(f"cannot upgrade the database schema: {exc}") from exc
        return before, head_revision()

    async def aclose(self) -> None:
        """Close the connections the store opened (an embedder's engine stays open)."""
        runner, self._runner = self._runner, None
        self._opened = False
        if runner is not None:
            await runner.aclose()
