"""Reading a store from outside the engine, the same way on SQLite and on PostgreSQL.

The tests look at the rows themselves, through a connection of their own, so
that what they see does not depend on the engine reporting it correctly.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from circleback.store.database import create_sync_engine
from circleback.store.schema import jobs, outbox


def _engine(url: str) -> sa.Engine:
    # One connection per read: nothing of the test's stays open on the store afterwards.
    return create_sync_engine(url, poolclass=NullPool)


def _read(url: str, statement: sa.Executable) -> list[sa.Row[Any]]:
    engine = _engine(url)
    try:
        with engine.connect().execution_options(circleback_readonly=True) as conn:
            return list(conn.execute(statement))
    finally:
        engine.dispose()


def job_states(url: str) -> dict[str, tuple[str, int, str | None]]:
    """Every job in the store: its id (as text) → (status, attempts, lease owner)."""
    rows = _read(url, sa.select(jobs.c.id, jobs.c.status, jobs.c.attempts, jobs.c.lease_owner))
    return {str(row.id): (row.status, row.attempts, row.lease_owner) for row in rows}


def outbox_statuses(url: str, job_id: uuid.UUID) -> list[str]:
    """The statuses of the outbox rows of one job."""
    rows = _read(url, sa.select(outbox.c.status).where(outbox.c.job_id == job_id))
    return [row.status for row in rows]


_COUNTS = """
    (SELECT count(*) FROM circleback_jobs), (SELECT count(*) FROM circleback_outbox)
"""
#: SQLite: ``data_version`` changes whenever another connection commits a change to the file.
_SNAPSHOT_SQLITE = sa.text(f"SELECT {_COUNTS}, (SELECT data_version FROM pragma_data_version())")
#: PostgreSQL: each row's identity and the transaction that last wrote it (``xmin``), over
#: every table of the store. Any insert, update or delete changes it.
_SNAPSHOT_POSTGRES = sa.text(f"""
    SELECT {_COUNTS}, (
        SELECT md5(coalesce(string_agg(version, ',' ORDER BY version), '')) FROM (
            SELECT 'job ' || id::text || ' ' || xmin::text AS version FROM circleback_jobs
            UNION ALL
            SELECT 'outbox ' || id::text || ' ' || xmin::text FROM circleback_outbox
            UNION ALL
            SELECT 'worker ' || worker_id || ' ' || xmin::text FROM circleback_workers
        ) AS versions
    )
""")


class RowWatch:
    """Row counts of a store, and whether anything at all was written to it meanwhile.

    The watch keeps one connection open. On SQLite, ``data_version`` on that
    connection changes whenever another connection commits a change to the file;
    on PostgreSQL, the ``xmin`` of a row names the transaction that last wrote
    it. Either way an unchanged snapshot proves that nothing was written.
    """

    def __init__(self, url: str) -> None:
        self._engine = create_sync_engine(url, poolclass=NullPool)
        self._sqlite = self._engine.dialect.name == "sqlite"
        connection = self._engine.connect()
        if self._sqlite:  # a plain BEGIN, not the store's BEGIN IMMEDIATE
            self._conn = connection.execution_options(circleback_readonly=True)
        else:
            self._conn = connection.execution_options(isolation_level="AUTOCOMMIT")

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()

    def snapshot(self) -> tuple[int, int, int | str]:
        """(jobs, outbox rows, write marker): equal snapshots mean nothing was written."""
        statement = _SNAPSHOT_SQLITE if self._sqlite else _SNAPSHOT_POSTGRES
        try:
            jobs_count, outbox_count, marker = self._conn.execute(statement).one()
        finally:
            self._conn.rollback()  # no transaction (nor snapshot) kept open between reads
        return int(jobs_count), int(outbox_count), marker

    def counts(self) -> tuple[int, int]:
        """(jobs, outbox rows)."""
        jobs_count, outbox_count, _ = self.snapshot()
        return jobs_count, outbox_count

    def version(self) -> int | str:
        """The write marker alone."""
        return self.snapshot()[2]
