"""A store that fails while a worker runs is asked again after growing pauses, one line each."""

from __future__ import annotations

import logging

import anyio
import pytest
import sqlalchemy as sa

import circleback
from circleback import Settings
from circleback.store.database import create_sync_engine

from ..pacing import QUICK


@pytest.mark.anyio
async def test_claiming_from_a_broken_store_backs_off(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="circleback")
    settings = Settings.from_env(database_url=sqlite_url)
    async with circleback.Engine(settings, load_entry_points=False, pacing=QUICK):
        engine = create_sync_engine(sqlite_url)
        try:
            with engine.begin() as conn:  # the store breaks under the running worker
                conn.execute(sa.text("ALTER TABLE circleback_jobs RENAME TO broken_jobs"))
        finally:
            engine.dispose()
        await anyio.sleep(3.2)
    failed = [r for r in caplog.records if "checks: claiming failed" in r.getMessage()]
    # Pauses of 0.5, 1 and 2 s: three or four tries in 3.2 s, not one per loop turn.
    assert 2 <= len(failed) <= 4, [r.getMessage() for r in failed]
    assert "trying again in 1.0 s" in failed[1].getMessage()
    assert not any(r.exc_info for r in failed)
