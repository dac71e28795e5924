"""The heartbeat's own database connection: what it keeps between beats.

The worker's heartbeat beats from a thread with a connection of its own. On
SQLite that connection's page cache is emptied whenever another connection
wrote since its last transaction, which a worker holding leases does between
two beats; so it keeps only a token cache, not SQLite's default of 2 MiB
filled afresh by every beat that renews a burst's leases.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from circleback.core.clock import SystemClock
from circleback.engine.heartbeat import HEARTBEAT_PAGE_CACHE_KIB, Heartbeat
from circleback.store.database import create_sync_engine
from circleback.store.schema import metadata

pytestmark = pytest.mark.anyio


def _cache_size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())


def test_a_sync_engine_on_sqlite_keeps_the_page_cache_it_is_given(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    given = create_sync_engine(url, sqlite_cache_kib=48)
    default = create_sync_engine(url)
    try:
        assert _cache_size(given) == -48  # negative: KiB, not pages
        assert _cache_size(default) == -2000  # SQLite's own default
    finally:
        given.dispose()
        default.dispose()


async def test_the_heartbeats_connection_keeps_only_a_token_page_cache(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'beat.db'}"
    setup = create_sync_engine(url)
    metadata.create_all(setup)
    setup.dispose()
    heartbeat = Heartbeat(
        url=url, worker_id=f"w-{uuid.uuid4().hex[:8]}", clock=SystemClock(), period=60.0,
        lease_seconds=90.0, held_jobs=list, held_deliveries=list,
        logger=logging.getLogger("test"),
    )
    await heartbeat.start()
    try:
        assert heartbeat._engine is not None  # the connection it beats with
        size = await anyio.to_thread.run_sync(_cache_size, heartbeat._engine)
        assert size == -HEARTBEAT_PAGE_CACHE_KIB
        assert HEARTBEAT_PAGE_CACHE_KIB < 2000
    finally:
        await heartbeat.stop()
