"""APScheduler's SQLite store for the benchmark: imported only by runs on SQLite.

A run in memory then loads neither SQLAlchemy nor APScheduler's SQLAlchemy
store, as an application using ``MemoryDataStore`` would not.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from apscheduler import Schedule
from apscheduler.abc import DataStore
from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["count_schedules", "sqlite_store", "store_idle_rows"]


def sqlite_store(path: Path) -> tuple[DataStore, AsyncEngine]:
    """``SQLAlchemyDataStore`` on ``sqlite+aiosqlite`` with WAL and ``synchronous=NORMAL``."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return SQLAlchemyDataStore(engine), engine


async def store_idle_rows(
    store: DataStore, task_id: str, job_executor: str, count: int, due: datetime, chunk: int
) -> None:
    """Insert ``count`` copies of one marshalled date schedule, ``chunk`` per transaction."""
    assert isinstance(store, SQLAlchemyDataStore)
    trigger = DateTrigger(due)
    template = Schedule(
        id="template",
        task_id=task_id,
        trigger=trigger,
        args=(due.timestamp(),),
        job_executor=job_executor,
    )
    template.next_fire_time = trigger.next()
    base = store._convert_outgoing_fire_times(template.marshal(store.serializer))
    engine = store._engine
    assert isinstance(engine, AsyncEngine)
    table = store._t_schedules
    for first in range(0, count, chunk):
        size = min(count, first + chunk) - first
        rows = [dict(base, id=str(uuid.uuid4())) for _ in range(size)]
        async with engine.begin() as conn:
            await conn.execute(table.insert(), rows)


async def count_schedules(store: DataStore) -> int:
    """How many schedules the SQLite store holds, counted by the database."""
    assert isinstance(store, SQLAlchemyDataStore)
    engine = store._engine
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(store._t_schedules)
        return int((await conn.execute(query)).scalar_one())
