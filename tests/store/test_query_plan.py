"""The claim of due jobs goes through the (status, next_run_at) index on SQLite.

DESIGN.md: "the claim uses an index on (status, next_run_at), and the engine
never loads idle jobs into memory"; one pass costs in proportion to the due
jobs, not to the stored ones. The first test reads SQLite's ``EXPLAIN QUERY
PLAN`` of ``Store.claim_statement``; the second counts the SQLite virtual
machine's instructions for one claim (a count, not a time) among few and among
many jobs that are not due.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from circleback import CheckOutcome, Job, JobStatus
from circleback.core.state import CheckResult, apply_event
from circleback.store.database import create_sync_engine
from circleback.store.schema import jobs as jobs_table
from circleback.store.store import Store

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DUE_INDEX = "ix_circleback_jobs_due"


def _claim_sql(conn: Connection, store: Store) -> str:
    statement = store.claim_statement("worker-1", NOW, 100, 30.0)
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    return str(compiled)


def _plan(conn: Connection, store: Store) -> list[str]:
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + _claim_sql(conn, store)).all()
    return [str(row[3]) for row in rows]


def _job(status: JobStatus, next_run_at: datetime) -> dict[str, Any]:
    job = Job(
        id=uuid.uuid4(), user_id="u1", platform="p", platform_channel_id=None,
        platform_thread_id=None, conversation_id=None, job_type="delay",
        check_config={"delay_seconds": 1}, on_complete="notify", workflow_id=None,
        interval_seconds=30.0, max_attempts=3, backoff=1.0, max_interval_seconds=None,
        on_success_message="ok", on_failure_message=None, status=status, attempts=0,
        next_run_at=next_run_at, created_at=NOW, updated_at=NOW,
        completed_at=None if status is JobStatus.ACTIVE else NOW,
    )
    values = attrs.asdict(job, recurse=False)
    values["status"] = status.value
    return values


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(sa.insert(jobs_table), rows)


def _assert_indexed(plan: list[str]) -> None:
    # The due jobs are found by a range search of the (status, next_run_at) index ...
    assert any(
        DUE_INDEX in step and "status=? AND next_run_at<?" in step for step in plan
    ), plan
    for step in plan:
        if "circleback_jobs" not in step:
            continue
        # ... never by a scan of the table ...
        assert not step.startswith("SCAN"), plan
        # ... and the rows to update are then looked up by id, not by walking every active job.
        assert "(id=?)" in step or "next_run_at<?" in step, plan


async def test_claim_searches_the_due_index(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    await store.open()
    try:
        plan = await store.runner.run(_plan, store)
        _assert_indexed(plan)
        # The same with a realistic mix stored: many finished jobs, many waiting, a few due.
        rows = [_job(JobStatus.COMPLETED, NOW - timedelta(hours=1)) for _ in range(300)]
        rows += [_job(JobStatus.ACTIVE, NOW + timedelta(minutes=5)) for _ in range(300)]
        rows += [_job(JobStatus.ACTIVE, NOW - timedelta(seconds=1)) for _ in range(3)]
        await store.runner.run(_insert, rows)
        _assert_indexed(await store.runner.run(_plan, store))
    finally:
        await store.aclose()


def _claim_instructions(path: str, sql: str) -> tuple[int, int]:
    """(rows claimed, SQLite VM instructions spent) for one claim, rolled back afterwards."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        counted = [0]

        def count() -> int:
            counted[0] += 1
            return 0

        conn.execute("BEGIN IMMEDIATE")
        conn.set_progress_handler(count, 1)
        claimed = len(conn.execute(sql).fetchall())
        conn.set_progress_handler(None, 1)
        conn.execute("ROLLBACK")
        return claimed, counted[0]
    finally:
        conn.close()


async def test_claim_cost_does_not_grow_with_jobs_that_are_not_due(
    sqlite_url: str,
) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    store = Store(sqlite_url)
    await store.open()
    try:
        sql = await store.runner.run(_claim_sql, store)
        due = [_job(JobStatus.ACTIVE, NOW - timedelta(seconds=index + 1)) for index in range(5)]
        await store.runner.run(_insert, due)
        waiting = [_job(JobStatus.ACTIVE, NOW + timedelta(minutes=5)) for _ in range(50)]
        await store.runner.run(_insert, waiting)
        claimed_few, cost_few = _claim_instructions(path, sql)
        more = [_job(JobStatus.ACTIVE, NOW + timedelta(minutes=5)) for _ in range(3_000)]
        more += [_job(JobStatus.COMPLETED, NOW - timedelta(hours=1)) for _ in range(1_000)]
        await store.runner.run(_insert, more)
        claimed_many, cost_many = _claim_instructions(path, sql)
    finally:
        await store.aclose()
    assert claimed_few == claimed_many == 5
    # 80 times more stored jobs; walking them would cost tens of thousands of instructions more.
    assert cost_many < 2 * cost_few, (cost_few, cost_many)



def _record_instructions(sqlite_url: str, store: Store) -> tuple[int, int]:
    """(outcomes applied, SQLite VM instructions spent) recording the due jobs, rolled back."""
    engine = create_sync_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            claimed = Store.claim_due_jobs.__wrapped__(  # type: ignore[attr-defined]
                store, conn, "worker-1", NOW, limit=500, lease_seconds=30.0, due_by=NOW
            )
            transitions = [
                (job, apply_event(job, CheckResult(CheckOutcome.met()), NOW)) for job in claimed
            ]
            counted = [0]

            def count() -> int:
                counted[0] += 1
                return 0

            raw = conn.connection.driver_connection
            assert raw is not None
            raw.set_progress_handler(count, 1)
            record = Store.record_outcomes.__wrapped__  # type: ignore[attr-defined]
            applied, _ = record(store, conn, "worker-1", transitions, NOW)
            raw.set_progress_handler(None, 1)
            transaction.rollback()
            return len(applied), counted[0]
    finally:
        engine.dispose()


async def test_recording_outcomes_costs_nothing_per_idle_job(sqlite_url: str) -> None:
    """The fence is read by id: an index on status would walk every active job (W5 found it)."""
    store = Store(sqlite_url)
    await store.open()
    try:
        # A batch as large as the engine's: with a long list of ids, SQLite's planner
        # preferred walking the status index to looking each id up.
        due = [_job(JobStatus.ACTIVE, NOW - timedelta(seconds=index + 1)) for index in range(400)]
        await store.runner.run(_insert, due)
        await store.runner.run(
            _insert, [_job(JobStatus.ACTIVE, NOW + timedelta(days=1)) for _ in range(50)]
        )
        applied_few, cost_few = _record_instructions(sqlite_url, store)
        await store.runner.run(
            _insert, [_job(JobStatus.ACTIVE, NOW + timedelta(days=1)) for _ in range(10_000)]
        )
        applied_many, cost_many = _record_instructions(sqlite_url, store)
    finally:
        await store.aclose()
    assert applied_few == applied_many == 400
    # 200 times more idle jobs; walking them would cost about ten instructions each.
    assert cost_many < 1.25 * cost_few, (cost_few, cost_many)
